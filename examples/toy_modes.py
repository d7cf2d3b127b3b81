"""Mode coverage on the 2-D toy mixtures (ring8, grid25) over several seeds.

    python examples/toy_modes.py --seeds 10 --steps 4000

Prints, per data set, modes captured and the share of high-quality samples
(within 3 sigma of a mode) per seed and on average, as in PacGAN's Table 1.
"""
import argparse
import json
import time

import numpy as np

import distgan
from distgan.metrics import mode_stats


def run(name, seed, steps, batch_size, hidden, depth, lr, n_eval, loss, batch_norm=True):
    data = distgan.datasets.load(name, n=100_000, seed=seed)
    spec = distgan.models.mlp(latent_dim=2, hidden=hidden, depth=depth, batch_norm=batch_norm)
    gan = distgan.GAN(spec, seed=seed, lr=lr, betas=(0.5, 0.999), loss=loss)
    gan.fit(data, steps=steps, batch_size=batch_size, progress=False)
    s = gan.sample(n_eval, seed=seed)
    st = mode_stats(s, data.centers, data.sigma)
    return {"modes": int(st["modes"]), "high_quality": float(st["high_quality"]),
            "reverse_kl": float(st["reverse_kl"])}, s, data


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="grid25,ring8")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--loss", default="ns")
    ap.add_argument("--no-batch-norm", action="store_true", help="no batch norm in G")
    ap.add_argument("--n-eval", type=int, default=2500)
    ap.add_argument("--json", default=None, help="write the results there")
    ap.add_argument("--plot", default=None, help="scatter plot of seed 0 (PNG)")
    args = ap.parse_args(argv)
    out = {}
    for name in args.sets.split(","):
        rows = []
        t0 = time.perf_counter()
        for seed in range(args.seeds):
            r, s, data = run(name, seed, args.steps, args.batch_size, args.hidden, args.depth,
                             args.lr, args.n_eval, args.loss, not args.no_batch_norm)
            rows.append(r)
            print(f"{name} seed {seed}: {r['modes']}/{len(data.centers)} modes, "
                  f"{100 * r['high_quality']:.1f}% high quality, reverse KL {r['reverse_kl']:.3f}")
            if args.plot and seed == 0:
                distgan.plot.scatter(s, data.centers, path=args.plot.replace(".png", f"_{name}.png"),
                                     title=f"{name}, seed 0")
        m = np.mean([r["modes"] for r in rows])
        hq = np.mean([r["high_quality"] for r in rows])
        allm = sum(r["modes"] == len(data.centers) for r in rows)
        print(f"== {name}: {m:.1f} modes on average, {100 * hq:.1f}% high quality, all modes on "
              f"{allm}/{args.seeds} seeds, {time.perf_counter() - t0:.0f} s")
        out[name] = {"seeds": rows, "mean_modes": m, "mean_high_quality": hq, "all_modes_seeds": int(allm)}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": out}, f, indent=1)


if __name__ == "__main__":
    main()
