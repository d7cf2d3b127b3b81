"""Mode coverage on the 2-D toy mixtures (ring8, grid25) over several seeds.

    python examples/toy_modes.py --seeds 10

Default recipe ("F" in docs/RESULTS.md), two phases. Phase 1 ("A"): G and D
3 x 128 MLPs (batch norm in G, spectral norm in D), PyTorch's default
initialisation (the DCGAN N(0, 0.02) one leaves samples spread over the whole
grid), latent dim 2, non-saturating loss, Adam lr 1e-3 betas (0.5, 0.999),
2 D updates per G update, batch 256, 6000 steps with the learning rate decayed
linearly to 5 % from 30 % of training on, sampling from the EMA generator
(decay 0.999). Spectral norm is what keeps every mode on grid25 (without it
seeds drop 1-4 modes), but it leaves samples strung between the modes. Phase 2
(--sharpen-steps, 16000) sharpens the modes without losing any: G's batch norm
folded into its linear layers (GAN.fold_batch_norm: the eval-mode function
kept; without batch norm G's weights are no longer scale-invariant and a sample
no longer depends on the rest of its batch); G's first layer, which places the
kinks of G's piecewise-linear map in latent space, at 10 times G's rate
(GAN.set_lr_multiplier), which makes the transitions between modes steep: fewer
samples on the "bridges" between modes; G and D at lr 1e-3, D keeping its
spectral norm. Both rates constant for 30 % of the phase, then decayed linearly
to 1 %. The transitions keep getting steeper for as long as the phase runs,
so its length is what sets the share of samples off the modes.
--sharpen-steps 8000 gives recipe E; --sharpen-steps 8000 --sharpen-remove-sn
--sharpen-lr-d 3e-4 recipe D (sharper than E, but it loses a mode on some
grid25 seeds); --sharpen-steps 8000 --sharpen-remove-sn --sharpen-lr 3e-4
--sharpen-lr-d 3e-4 --no-sharpen-fold-bn --sharpen-first-lr-mult 1 recipe C;
--sharpen-steps 0 recipe A. Runs at one thread unless --threads says otherwise
(about 200 s of CPU per seed and set).

Prints, per data set, modes captured and the share of high-quality samples
(within 3 sigma of a mode) per seed and on average, as in PacGAN's Table 1.
"""
import argparse
import json
import time

import numpy as np

import distgan
from distgan.metrics import mode_stats


def _decay(frac, start, final):
    """Learning-rate factor at `frac` of a phase: 1 until `start`, then linear down to
    `final` at the end."""
    t = max(0.0, (frac - start) / (1.0 - start))
    return 1.0 + (final - 1.0) * min(1.0, t)


def run(name, seed, a):
    """Trains one GAN on data set ``name`` with seed ``seed`` and the recipe of the parsed
    command line ``a`` (its defaults are recipe F); returns (mode statistics, samples, data)."""
    data = distgan.datasets.load(name, n=100_000, seed=seed)
    spec = distgan.models.mlp(latent_dim=a.latent_dim, hidden=a.hidden, depth=a.depth,
                              batch_norm=not a.no_batch_norm)
    gan = distgan.GAN(spec, seed=seed, lr=a.lr if a.lr_d is None else (a.lr, a.lr_d),
                      betas=tuple(a.betas), loss=a.loss, ema=a.ema, n_critic=a.n_critic, init=a.init,
                      spectral_norm=a.spectral_norm)
    callback = None
    if a.lr_decay != 1.0:
        lr0_g, lr0_d = gan.opt_g.lr, gan.opt_d.lr

        def callback(g, step, losses):
            f = _decay(step / a.steps, a.lr_decay_start, a.lr_decay)
            g.opt_g.lr, g.opt_d.lr = lr0_g * f, lr0_d * f
    gan.fit(data, steps=a.steps, batch_size=a.batch_size, progress=False, callback=callback)
    if a.sharpen_steps:
        # phase 2: G's batch norm folded into its linear layers (its eval-mode function
        # kept), G's first layer trained faster; learning rates sharpen_lr (G) and
        # sharpen_lr_d (D), constant then linear decay; with sharpen_remove_sn, D's
        # spectral norm off (its function kept, its Adam moments reset)
        if a.spectral_norm and a.sharpen_remove_sn:
            gan.remove_spectral_norm()
        if a.sharpen_fold_bn and not a.no_batch_norm:
            gan.fold_batch_norm()
        if a.sharpen_first_lr_mult != 1.0:
            gan.set_lr_multiplier(0, a.sharpen_first_lr_mult)
        start = gan.step_count

        def callback2(g, step, losses):
            f = _decay((step - start) / a.sharpen_steps, a.sharpen_decay_start, a.sharpen_decay)
            g.opt_g.lr, g.opt_d.lr = a.sharpen_lr * f, a.sharpen_lr_d * f
        gan.fit(data, steps=a.sharpen_steps, batch_size=a.batch_size, progress=False,
                callback=callback2)
    s = gan.sample(a.n_eval, seed=seed, ema=a.ema > 0)
    st = mode_stats(s, data.centers, data.sigma)
    return {"modes": int(st["modes"]), "high_quality": float(st["high_quality"]),
            "reverse_kl": float(st["reverse_kl"])}, s, data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="grid25,ring8")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--latent-dim", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-d", type=float, default=None, help="D learning rate (default: --lr)")
    ap.add_argument("--betas", type=float, nargs=2, default=(0.5, 0.999))
    ap.add_argument("--lr-decay", type=float, default=0.05,
                    help="final learning rate as a fraction of --lr (1 = constant)")
    ap.add_argument("--lr-decay-start", type=float, default=0.3,
                    help="share of training after which the linear decay starts")
    ap.add_argument("--loss", default="ns")
    ap.add_argument("--n-critic", type=int, default=2, help="D updates per G update")
    ap.add_argument("--ema", type=float, default=0.999,
                    help="EMA decay of G, sampled from (0: sample the raw generator)")
    ap.add_argument("--no-spectral-norm", dest="spectral_norm", action="store_false",
                    help="no spectral normalisation in D (on by default)")
    ap.add_argument("--sharpen-steps", type=int, default=16000,
                    help="phase 2 (sharpening the modes): this many more steps (0: none)")
    ap.add_argument("--sharpen-lr", type=float, default=1e-3, help="phase-2 learning rate of G")
    ap.add_argument("--sharpen-lr-d", type=float, default=1e-3, help="phase-2 learning rate of D")
    ap.add_argument("--no-sharpen-fold-bn", dest="sharpen_fold_bn", action="store_false",
                    help="phase 2: keep G's batch norm (it is folded into G's linear layers "
                         "by default: GAN.fold_batch_norm)")
    ap.add_argument("--sharpen-remove-sn", action="store_true",
                    help="phase 2: remove D's spectral norm (GAN.remove_spectral_norm; kept "
                         "by default)")
    ap.add_argument("--sharpen-first-lr-mult", type=float, default=10.0,
                    help="phase 2: learning rate of G's first layer as a multiple of G's")
    ap.add_argument("--sharpen-decay", type=float, default=0.01,
                    help="final phase-2 learning rate as a fraction of --sharpen-lr")
    ap.add_argument("--sharpen-decay-start", type=float, default=0.3,
                    help="share of phase 2 after which its linear decay starts")
    ap.add_argument("--init", default="default", choices=("default", "dcgan"))
    ap.add_argument("--no-batch-norm", action="store_true", help="no batch norm in G")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-eval", type=int, default=2500)
    ap.add_argument("--json", default=None, help="write the results there")
    ap.add_argument("--plot", default=None,
                    help="scatter plot of one seed per set (PNG; _<set> is appended to the name)")
    ap.add_argument("--plot-seed", type=int, default=3, help="seed shown by --plot")
    args = ap.parse_args(argv)
    distgan.set_num_threads(args.threads)
    out = {}
    for name in args.sets.split(","):
        rows = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            r, s, data = run(name, seed, args)
            rows.append(r)
            print(f"{name} seed {seed}: {r['modes']}/{len(data.centers)} modes, "
                  f"{100 * r['high_quality']:.1f}% high quality, reverse KL {r['reverse_kl']:.3f}", flush=True)
            if args.plot and seed == args.plot_seed:
                distgan.plot.scatter(s, data.centers, path=args.plot.replace(".png", f"_{name}.png"),
                                     title=f"{name}, seed {seed}: {r['modes']}/{len(data.centers)} modes, "
                                           f"{100 * r['high_quality']:.0f}% HQ")
        m = np.mean([r["modes"] for r in rows])
        hq = np.mean([r["high_quality"] for r in rows])
        allm = sum(r["modes"] == len(data.centers) for r in rows)
        wall = time.perf_counter() - t0
        print(f"== {name}: {m:.1f} modes on average, {100 * hq:.1f}% high quality, all modes on "
              f"{allm}/{args.seeds} seeds, {wall:.0f} s", flush=True)
        out[name] = {"seeds": rows, "mean_modes": m, "mean_high_quality": hq, "all_modes_seeds": int(allm),
                     "wall_time_s": wall}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": out}, f, indent=1)


if __name__ == "__main__":
    main()
