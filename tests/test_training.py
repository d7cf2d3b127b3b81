"""Training, sampling, checkpoints and distillation at the level of the public API.

* determinism: the same seed, data and thread count give bit-identical weights; other
  seeds differ;
* checkpoints: a save/load round trip keeps every tensor, the spec, config, step, RNG
  positions and history, and sampling continues identically; fit(6) equals
  fit(3) + save + distgan.load + fit(3) bit for bit;
* a short grid25 run with the MLP spec covers more modes than the untrained generator;
* sampling: shapes, dtype, range [-1, 1], seeds, given labels;
* bad input raises a clear exception; a non-finite loss raises DivergenceError naming the
  step and the term, and keeps the last good checkpoint;
* prune_init keeps the teacher's strongest channels (L1 norm), and the pruned student
  computes exactly what the teacher computes with the other channels disconnected;
* distill() with and without data, online, conditional, returns (student, history).

Everything runs on one BLAS thread (fixed summation order; no oversubscription of the
shared 2-core test machine) with tiny models and batches.
"""
import math

import numpy as np
import pytest

import distgan
from distgan import datasets, metrics, models, ops
from distgan.checkpoint import CheckpointError
from distgan.nn import Network
from conftest import rel_err


@pytest.fixture(autouse=True)
def _one_thread():
    n = distgan.get_num_threads()
    distgan.set_num_threads(1)
    yield
    distgan.set_num_threads(n)


TINY = dict(width=0.125)            # G 32*7*7 -> 16 -> 1, D 8 -> 16


def _images(rng, n, shape=(1, 28, 28)):
    return np.tanh(rng.normal(size=(n,) + tuple(shape))).astype(np.float32)


def _data(rng, n=20, labelled=False):
    """A tiny labelled image set (Dataset, like datasets.load returns)."""
    labels = rng.integers(0, 10, n) if labelled else None
    return datasets.Dataset(_images(rng, n), labels, name="tiny",
                            num_classes=10 if labelled else None)


def _state(gan):
    """Every tensor a GAN owns (parameters, buffers, EMA copy, Adam moments)."""
    return {k: v.copy() for k, v in gan._tensors().items()}


def _assert_same_state(a, b, what):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert np.array_equal(sa[k], sb[k]), f"{what}: {k} differs"


def _reload(gan, path):
    """gan saved to path and loaded back."""
    gan.save(path)
    return distgan.load(path)


def _assert_resumes(gan, back, data, what, steps=2):
    """``steps`` more steps of a GAN and of its reloaded copy end bit-identical."""
    for g in (gan, back):
        g.fit(data, steps=steps, batch_size=8, progress=False)
    _assert_same_state(gan, back, what)


# --------------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cond", [False, True], ids=["uncond", "cond"])
def test_same_seed_bit_identical(rng, cond):
    K = 10 if cond else None
    batches = [(_images(rng, 6), rng.integers(0, 10, 6) if cond else None) for _ in range(3)]
    runs = []
    for _ in range(2):
        gan = distgan.GAN(models.dcgan(**TINY, num_classes=K), seed=3)
        losses = [gan.step(x, y) for x, y in batches]
        runs.append((gan, losses))
    (a, la), (b, lb) = runs
    assert la == lb
    _assert_same_state(a, b, "same seed")
    assert np.array_equal(a.sample(5, seed=1), b.sample(5, seed=1))


def test_same_seed_bit_identical_two_threads(rng):
    """The same holds at another thread count (2: this machine's cores)."""
    distgan.set_num_threads(2)
    x = _images(rng, 8)
    params = []
    for _ in range(2):
        gan = distgan.GAN(models.dcgan(**TINY), seed=0)
        gan.step(x)
        gan.step(x)
        params.append((gan.generator.params.copy(), gan.discriminator.params.copy()))
    assert np.array_equal(params[0][0], params[1][0])
    assert np.array_equal(params[0][1], params[1][1])


def test_different_seeds_differ(rng):
    x = _images(rng, 6)
    a = distgan.GAN(models.dcgan(**TINY), seed=3)
    b = distgan.GAN(models.dcgan(**TINY), seed=4)
    for net in ("generator", "discriminator"):
        assert not np.array_equal(getattr(a, net).params, getattr(b, net).params)
    la, lb = a.step(x), b.step(x)
    assert la != lb
    assert not np.array_equal(a.generator.params, b.generator.params)
    assert not np.array_equal(a.sample(4, seed=0), b.sample(4, seed=0))


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------

def test_checkpoint_round_trip(rng, tmp_path):
    gan = distgan.GAN(models.dcgan(**TINY, num_classes=10), seed=5, loss="hinge",
                      lr=(1e-4, 3e-4), ema=0.99, n_critic=2)
    for _ in range(2):
        gan.step(_images(rng, 6), rng.integers(0, 10, 6))
    gan.sample(3)                                     # advances the unseeded sample stream
    gan.history["step"].append(2)                     # something to carry
    path = tmp_path / "ckpt" / "gan.safetensors"      # the folder does not exist yet
    gan.save(path)
    back = distgan.load(path)
    assert isinstance(back, distgan.GAN)
    _assert_same_state(gan, back, "after load")
    assert back.spec == gan.spec and back.config == gan.config
    assert back.step_count == gan.step_count == 2
    assert (back.opt_g.t, back.opt_d.t) == (gan.opt_g.t, gan.opt_d.t) == (2, 4)
    assert back.noise.offset == gan.noise.offset and back.noise.seed == gan.noise.seed
    assert back.history == gan.history
    assert np.array_equal(back.sample(7, labels=3, seed=11), gan.sample(7, labels=3, seed=11))
    assert np.array_equal(back.sample(4), gan.sample(4))      # the unseeded stream continues
    x, y = _images(rng, 6), rng.integers(0, 10, 6)
    assert back.step(x, y) == gan.step(x, y)
    _assert_same_state(gan, back, "one step after load")
    assert not list(path.parent.glob(".tmp-*"))      # the atomic write left no temp file


def test_checkpoint_errors(tmp_path, rng):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        distgan.load(tmp_path / "missing.safetensors")
    gan = distgan.GAN(models.dcgan(**TINY), seed=0)
    path = tmp_path / "g.safetensors"
    gan.save(path)
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF                                   # flip bits in the tensor data
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        distgan.load(bad)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(CheckpointError):
        distgan.load(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("cond", [False, True], ids=["uncond", "cond"])
def test_resume_is_bit_identical(rng, tmp_path, cond):
    """fit(steps=6) uninterrupted == fit(steps=3) + save + distgan.load + fit(steps=3).
    20 samples in batches of 8 make 2 batches an epoch: the break falls mid-epoch."""
    data = _data(rng, 20, labelled=cond)
    K = 10 if cond else None
    spec = models.dcgan(**TINY, num_classes=K)
    whole = distgan.GAN(spec, seed=2)
    whole.fit(data, steps=6, batch_size=8, progress=False, log_every=1)
    first = distgan.GAN(spec, seed=2)
    first.fit(data, steps=3, batch_size=8, progress=False, log_every=1)
    path = tmp_path / "half.safetensors"
    first.save(path)
    second = distgan.load(path)
    second.fit(data, steps=3, batch_size=8, progress=False, log_every=1)
    assert second.step_count == whole.step_count == 6
    _assert_same_state(whole, second, "resumed run")
    for k in ("step", "d_loss", "g_loss"):
        assert second.history[k] == whole.history[k], k
    assert np.array_equal(whole.sample(4, seed=0), second.sample(4, seed=0))


def test_remove_spectral_norm_keeps_d_and_resumes(rng, tmp_path):
    """GAN.remove_spectral_norm folds W / sigma into every W of D (conv and linear): D's
    eval output is the same bits at the switch; training goes on without the normalisation,
    and a checkpoint taken after the switch resumes bit-identically."""
    data = _data(rng, 16)
    spec = models.dcgan(**TINY)
    gan = distgan.GAN(spec, seed=4, spectral_norm=True)
    gan.fit(data, steps=3, batch_size=8, progress=False)
    x = data.images[:8]
    before = gan.discriminator.forward(x, train=False).copy()
    gan.remove_spectral_norm()
    after = gan.discriminator.forward(x, train=False).copy()
    assert np.array_equal(after, before)      # the folded W is the W / sigma D used
    assert not gan.discriminator.spectral_norm and gan.config["spectral_norm_removed"]
    assert not any(getattr(l, "sn", False) for l in gan.discriminator.layers)
    assert gan.opt_d.t == 0 and not gan.opt_d.m.any() and not gan.opt_d.v.any()
    with pytest.raises(ValueError, match="no spectral norm"):
        gan.remove_spectral_norm()
    gan.fit(data, steps=2, batch_size=8, progress=False)
    back = _reload(gan, tmp_path / "nosn.safetensors")
    assert not back.discriminator.spectral_norm and back.config["spectral_norm_removed"]
    assert np.array_equal(back.discriminator.forward(x, train=False),
                          gan.discriminator.forward(x, train=False))
    _assert_resumes(gan, back, data, "resumed after removing spectral norm")


@pytest.mark.parametrize("cond", [False, True], ids=["uncond", "cond"])
def test_fold_batch_norm_keeps_g_and_resumes(rng, tmp_path, cond):
    """GAN.fold_batch_norm: G and its EMA compute what they computed in eval mode (batch norm
    after linear and transposed-conv layers folded into them), the spec loses its batch-norm
    layers, G's Adam restarts, the EMA warm-up carries on; a checkpoint taken after the fold
    resumes bit-identically."""
    K = 10 if cond else None
    data = _data(rng, 16, labelled=cond)
    gan = distgan.GAN(models.dcgan(**TINY, num_classes=K), seed=3)
    gan.fit(data, steps=3, batch_size=8, progress=False)
    y = np.arange(6) % 10 if cond else None
    before = [gan.sample(6, labels=y, seed=1, ema=e) for e in (True, False)]
    n_bn = sum(d["type"] == "batch_norm" for d in gan.spec["generator"])
    assert n_bn == 2
    gan.fold_batch_norm()
    assert not any(d["type"] == "batch_norm" for d in gan.spec["generator"])
    assert len(gan.generator.layers) == len(gan.g_ema.layers) == len(models.dcgan(
        **TINY, num_classes=K)["generator"]) - n_bn
    for e, b in zip((True, False), before):
        a = gan.sample(6, labels=y, seed=1, ema=e)
        assert rel_err(a, b) <= 1e-5, (e, rel_err(a, b))
    assert gan.opt_g.t == 0 and not gan.opt_g.m.any() and gan._ema_t0 == 3
    with pytest.raises(ValueError, match="no batch norm"):
        gan.fold_batch_norm()
    gan.fit(data, steps=2, batch_size=8, progress=False)
    back = _reload(gan, tmp_path / "folded.safetensors")
    assert back.spec == gan.spec and back._ema_t0 == 3
    _assert_resumes(gan, back, data, "resumed after folding batch norm")
    # multipliers name layer indices, which folding changes
    other = distgan.GAN(models.dcgan(**TINY), seed=3)
    other.set_lr_multiplier(0, 2.0)
    with pytest.raises(ValueError, match="after folding"):
        other.fold_batch_norm()


def test_lr_multiplier_scales_one_layers_step(rng, tmp_path):
    """set_lr_multiplier(layer, m): that layer's Adam update is the one at m times the
    learning rate (the same bits), every other parameter's is unchanged; kept by checkpoints;
    1 removes it; bad arguments raise."""
    data = _data(rng, 16)
    spec = models.dcgan(**TINY)
    a, b, c = (distgan.GAN(spec, seed=6) for _ in range(3))
    for g in (a, b, c):
        g.fit(data, steps=1, batch_size=8, progress=False)
    a.set_lr_multiplier(4, 8.0)                     # G's first transposed convolution
    c.opt_g.lr = b.opt_g.lr * 8.0
    idx = [(o, o + int(np.prod(sh))) for i, _, o, sh in a.generator.param_index if i == 4]
    lo, hi = min(x for x, _ in idx), max(y for _, y in idx)
    p0 = a.generator.params.copy()
    for g in (a, b, c):
        g.step(data.images[:8])
    assert np.array_equal(a.discriminator.params, b.discriminator.params)
    assert np.array_equal(a.generator.params[lo:hi], c.generator.params[lo:hi])
    assert np.array_equal(a.generator.params[:lo], b.generator.params[:lo])
    assert np.array_equal(a.generator.params[hi:], b.generator.params[hi:])
    assert not np.array_equal(a.generator.params[lo:hi], p0[lo:hi])
    assert a.config["lr_mult"] == {"generator": {"4": 8.0}}
    back = _reload(a, tmp_path / "mult.safetensors")
    assert back.opt_g.lr_scales == a.opt_g.lr_scales == [(lo, hi, 8.0)]
    _assert_resumes(a, back, data, "resumed with a learning-rate multiplier")
    a.set_lr_multiplier(4, 1.0)
    assert a.opt_g.lr_scales == [] and a.config["lr_mult"] == {"generator": {}}
    for kw, msg in ((dict(layer=2), "no parameters"), (dict(layer=99), "index"),
                    (dict(layer=True), "index"), (dict(layer=0, mult=-1.0), "mult"),
                    (dict(layer=0, mult=float("inf")), "mult"), (dict(layer=0, mult=True), "mult"),
                    (dict(layer=0, mult="2"), "mult"),
                    (dict(layer=0, network="critic"), "network")):
        kw = {"mult": 2.0, **kw}
        with pytest.raises(ValueError, match=msg):
            a.set_lr_multiplier(**kw)
    a.opt_g.set_lr_scale(lo, hi, 2.0)
    with pytest.raises(ValueError, match="overlaps"):
        a.opt_g.set_lr_scale(lo + 1, hi + 1, 2.0)
    with pytest.raises(ValueError, match="within"):
        a.opt_g.set_lr_scale(hi, hi, 2.0)


def test_r1_options_and_frozen_activations(rng, tmp_path):
    """The R1 weight: validated, settable, kept by checkpoints (resume bit-identical). Its
    gradient is checked against a double backward in test_torch_equivalence; here the
    property it rests on: with frozen activations a critic without batch norm is affine
    in its input (D(x + t d) is linear in t), which it is not without them."""
    spec = models.dcgan(**TINY)
    for v in (-1.0, float("inf"), float("nan"), "1", True, None):
        with pytest.raises(ValueError, match="r1"):
            distgan.GAN(spec, r1=v)
    data = _data(rng, 16)
    gan = distgan.GAN(spec, seed=8, spectral_norm=True, r1=0.5)
    gan.fit(data, steps=2, batch_size=8, progress=False)
    gan.r1 = 2.0
    back = _reload(gan, tmp_path / "r1.safetensors")
    assert back.r1 == 2.0
    _assert_resumes(gan, back, data, "resumed with R1")
    D = gan.discriminator          # spectral norm: no batch norm; LeakyReLU
    x = data.images[:8]
    d = rng.normal(size=x.shape).astype(np.float32)
    ts = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])

    def curve():
        return np.array([D.forward(x + np.float32(t) * d, train=False).ravel().astype(np.float64)
                         for t in ts])
    D.forward(x, train=False)
    with D.frozen_activations():
        f = curve()
    # second differences of an affine function vanish (up to float32 rounding)
    assert np.abs(f[2:] - 2 * f[1:-1] + f[:-2]).max() <= 1e-4 * np.abs(f).max()
    free = curve()
    assert np.abs(free[2:] - 2 * free[1:-1] + free[:-2]).max() > 1e-2 * np.abs(free).max()
    assert np.allclose(free[2], f[2], rtol=1e-5, atol=1e-6)   # same piece at t = 0


def test_fit_checkpoint_argument_and_progress_bar(rng, tmp_path, capsys):
    data = _data(rng, 16)
    gan = distgan.GAN(models.dcgan(**TINY), seed=1)
    path = tmp_path / "run.safetensors"
    hist = gan.fit(data, steps=3, batch_size=8, checkpoint=path, checkpoint_every=2,
                   log_every=1)                                    # progress bar on
    assert hist["step"] == [1, 2, 3] and len(hist["d_loss"]) == 3 and len(hist["time"]) == 3
    assert all(math.isfinite(v) for v in hist["d_loss"] + hist["g_loss"])
    assert distgan.load(path).step_count == 3                      # written at the end
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err                         # tqdm writes to stderr
    # epochs= counts passes over the data: 16 // 8 = 2 steps an epoch
    gan.fit(data, epochs=1, batch_size=8, progress=False)
    assert gan.step_count == 5


# --------------------------------------------------------------------------------------------
# a toy run: the mode-collapse benchmark's grid of 25 Gaussians
# --------------------------------------------------------------------------------------------

def test_toy_run_covers_more_modes_than_step_0():
    data = datasets.load("grid25", n=4096, seed=0)
    gan = distgan.GAN(models.mlp(hidden=64), seed=0, lr=1e-3)
    before = metrics.mode_stats(gan.sample(2000, seed=1), data.centers, data.sigma)
    gan.fit(data, steps=300, batch_size=64, progress=False)
    after = metrics.mode_stats(gan.sample(2000, seed=1), data.centers, data.sigma)
    # an untrained generator puts everything near the origin (one mode); measured 12 after
    assert after["modes"] > before["modes"], (before, after)
    assert after["modes"] >= 5, after


# --------------------------------------------------------------------------------------------
# sampling
# --------------------------------------------------------------------------------------------

def test_sample_shapes_range_and_seeds(rng):
    gan = distgan.GAN(models.dcgan(**TINY), seed=0)
    gan.step(_images(rng, 6))
    s = gan.sample(10, seed=4)
    assert s.shape == (10, 1, 28, 28) and s.dtype == np.float32
    assert np.all(np.abs(s) <= 1.0) and np.isfinite(s).all()
    assert np.array_equal(s, gan.sample(10, seed=4))
    assert not np.array_equal(s, gan.sample(10, seed=5))
    a, b = gan.sample(10), gan.sample(10)                # the unseeded stream moves on
    assert not np.array_equal(a, b)
    # batch-size independent (eval mode, standing statistics)
    assert rel_err(gan.sample(10, seed=4, batch_size=3), s) <= 1e-5
    assert gan.sample(0).shape == (0, 1, 28, 28)
    raw = gan.sample(10, seed=4, ema=False)
    assert raw.shape == s.shape and np.all(np.abs(raw) <= 1.0) and not np.array_equal(raw, s)
    # the samples ARE the EMA generator in eval mode on the documented stream
    z = ops.normal((10, gan.latent_dim), 4 * 2 + 3, 0)
    assert np.array_equal(gan.g_ema.forward(z, train=False), s)
    assert np.array_equal(gan.generator.forward(z, train=False), raw)
    # the unseeded stream (seed * 2 + 5), one batch (noise drawn into predict's
    # plan) and several alike; each result its own array, not the plan's buffer
    fresh = distgan.GAN(models.dcgan(**TINY), seed=0)
    one, three, more = fresh.sample(1), fresh.sample(3), fresh.sample(4, batch_size=3)
    z = ops.normal((8, fresh.latent_dim), 0 * 2 + 5, 0)
    want = [fresh.g_ema.forward(z[i:j], train=False).copy()
            for i, j in ((0, 1), (1, 4), (4, 7), (7, 8))]
    assert np.array_equal(one, want[0]) and np.array_equal(three, want[1])
    assert np.array_equal(more, np.concatenate(want[2:]))
    assert one.shape == (1, 1, 28, 28) and one.flags.owndata and three.flags.owndata
    # the noise drawn 64 samples ahead: 70 one-image samples cross a block's end,
    # seeded ones among them (their own stream) leaving the unseeded stream as it is
    seeded = fresh.sample(1, seed=9)
    many = np.concatenate([fresh.sample(1) if i % 10 else
                           (fresh.sample(1), fresh.sample(1, seed=9))[0] for i in range(70)])
    assert np.array_equal(fresh.sample(1, seed=9), seeded)
    z = ops.normal((78, fresh.latent_dim), 0 * 2 + 5, 0)[8:]
    assert np.array_equal(many, np.concatenate(
        [fresh.g_ema.forward(z[i:i + 1], train=False).copy() for i in range(70)]))
    # where predict has no plan, the same samples through forward
    plain = distgan.GAN(models.dcgan(**TINY), seed=0)
    plain.g_ema._ready_plan = lambda n: None
    assert np.array_equal(plain.sample(1), one) and np.array_equal(plain.sample(3), three)
    toy = distgan.GAN(models.mlp(hidden=16), seed=0)
    assert toy.sample(6, seed=0).shape == (6, 2)


def test_conditional_sampling_with_given_labels(rng):
    gan = distgan.GAN(models.dcgan(**TINY, num_classes=10), seed=0)
    gan.step(_images(rng, 6), rng.integers(0, 10, 6))
    threes = gan.sample(6, labels=3, seed=2)
    assert threes.shape == (6, 1, 28, 28) and np.all(np.abs(threes) <= 1)
    labels = np.array([0, 1, 2, 3, 3, 9])
    mixed = gan.sample(6, labels=labels, seed=2)
    # same z (seeded stream, no label draws when labels are given), different classes
    assert np.array_equal(mixed[3:5], threes[3:5])
    assert not np.array_equal(mixed[:3], threes[:3])
    z = ops.normal((6, gan.latent_dim), 2 * 2 + 3, 0)
    assert np.array_equal(gan.g_ema.forward(z, labels, train=False), mixed)
    assert np.array_equal(gan.sample(6, labels=list(labels), seed=2), mixed)
    free = gan.sample(6, seed=2)                          # labels drawn from the stream
    assert free.shape == (6, 1, 28, 28)
    with pytest.raises(ValueError, match="labels"):
        gan.sample(3, labels=10, seed=0)
    with pytest.raises(ValueError, match="labels"):
        gan.sample(3, labels=-1, seed=0)
    with pytest.raises(ValueError):
        gan.sample(3, labels=[1, 2], seed=0)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

@pytest.fixture
def small_gans():
    return (distgan.GAN(models.dcgan(**TINY), seed=0),
            distgan.GAN(models.dcgan(**TINY, num_classes=10), seed=0))


def test_step_bad_inputs(small_gans):
    gan, cond = small_gans
    x = np.zeros((4, 1, 28, 28), np.float32)
    y = np.array([0, 1, 2, 3])
    before = _state(gan)
    cases = [
        (gan, (x.tolist(),), TypeError, "numpy array"),
        (gan, (x.astype(np.float64),), TypeError, "float32"),
        (gan, (x[:, :, :27],), ValueError, r"\(N, 1, 28, 28\)"),
        (gan, (x[0],), ValueError, r"\(N, 1, 28, 28\)"),
        (gan, (x[:1],), ValueError, "at least 2"),
        (gan, (x, y), ValueError, "labels"),
        (cond, (x,), ValueError, "labels"),
        (cond, (x, y[:3]), ValueError, "labels"),
        (cond, (x, np.array([0, 1, 2, 10])), ValueError, "labels"),
        (cond, (x, np.array([0, -1, 2, 3])), ValueError, "labels"),
        (cond, (x, np.array([0.0, 1.5, 2.0, 3.0])), TypeError, "labels"),
    ]
    for g, args, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            g.step(*args)
    nan = x.copy()
    nan[1, 0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="(?i)nan|finite"):
        gan.step(nan)
    # nothing was trained on any of it
    _assert_same_state(gan, distgan.GAN(models.dcgan(**TINY), seed=0), "after rejected steps")
    assert gan.step_count == 0
    assert all(np.array_equal(v, before[k]) for k, v in _state(gan).items())


def test_fit_bad_inputs(small_gans, rng):
    gan, cond = small_gans
    data = _data(rng, 12)
    with pytest.raises(ValueError, match="epochs= or steps="):
        gan.fit(data, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        gan.fit(data, steps=1, batch_size=13, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        gan.fit(data, steps=1, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        gan.fit(data, steps=-1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="images"):
        gan.fit(_images(rng, 12, (1, 32, 32)), steps=1, batch_size=4, progress=False)
    with pytest.raises(TypeError, match="float32"):
        gan.fit(_images(rng, 12).astype(np.float64), steps=1, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="labelled"):
        cond.fit(data, steps=1, batch_size=4, progress=False)
    assert gan.step_count == cond.step_count == 0
    # the (images, labels) tuple form works
    cond.fit((_images(rng, 8), rng.integers(0, 10, 8)), steps=1, batch_size=4, progress=False)
    assert cond.step_count == 1


def test_sample_and_constructor_bad_inputs(small_gans):
    gan, cond = small_gans
    for n in (-1, 2.5, "3", None):
        with pytest.raises(ValueError, match="n must"):
            gan.sample(n)
    with pytest.raises(ValueError, match="unconditional"):
        gan.sample(3, labels=1)
    spec = models.dcgan(**TINY)
    for kw, msg in ((dict(loss="wgan"), "loss"), (dict(n_critic=0), "n_critic"),
                    (dict(ema=1.0), "ema"), (dict(ema=-0.1), "ema"), (dict(lr=-1.0), "lr"),
                    (dict(betas=(1.0, 0.999)), "betas"), (dict(init="xavier"), "init")):
        with pytest.raises(ValueError, match=msg):
            distgan.GAN(spec, **kw)


# --------------------------------------------------------------------------------------------
# divergence
# --------------------------------------------------------------------------------------------

def test_nonfinite_loss_raises_divergence_error(rng):
    gan = distgan.GAN(models.dcgan(**TINY), seed=0)
    gan.step(_images(rng, 4))
    gan.generator.layers[0].p["weight"][0, 0] = np.nan
    with pytest.raises(distgan.DivergenceError) as info:
        gan.step(_images(rng, 4))
    e = info.value
    assert isinstance(e, FloatingPointError)
    assert e.step == 2 and e.term == "discriminator loss" and math.isnan(e.value)
    assert "step 2" in str(e) and "discriminator loss" in str(e)


def test_divergence_keeps_last_good_checkpoint(rng, tmp_path):
    data = _data(rng, 16)
    gan = distgan.GAN(models.dcgan(**TINY), seed=0)
    path = tmp_path / "run.safetensors"

    def poison(g, step, losses):
        if step == 3:
            g.discriminator.layers[0].p["weight"][...] = np.inf

    with pytest.raises(distgan.DivergenceError, match="step 4"):
        gan.fit(data, steps=6, batch_size=4, checkpoint=path, checkpoint_every=2,
                progress=False, callback=poison)
    good = distgan.load(path)
    assert good.step_count == 2
    assert all(np.isfinite(v).all() for v in _state(good).values())


# --------------------------------------------------------------------------------------------
# prune_init: the teacher's strongest channels
# --------------------------------------------------------------------------------------------

def _controlled_teacher(rng, cond=False):
    """A dcgan(1/2) teacher G whose channel L1 norms are set by hand: channel c of the
    first linear layer (rows 49c .. 49c+48 of its (6272, z) weight) has all entries of
    magnitude a[c]; output channel o of the first conv-transpose (weight (128, 64, 4, 4))
    has all entries of magnitude b[o] (uniform over input channels, so scoring on all or
    on the kept inputs ranks them the same). Random signs; other layers random."""
    K = 10 if cond else None
    t = distgan.GAN(models.dcgan(0.5, num_classes=K), seed=8).generator
    for l in t.layers:
        for name, p in l.p.items():
            p[...] = rng.normal(0, 0.5, p.shape)
        for name, b in l.b.items():
            b[...] = (rng.uniform(0.5, 1.5, b.shape) if name == "running_var"
                      else rng.normal(0, 0.2, b.shape))
    lin = next(l for l in t.layers if l.type == "linear")
    ct1, ct2 = [l for l in t.layers if l.type == "conv_transpose2d"]
    a = (rng.permutation(128) + 1) * 1e-3
    b = (rng.permutation(64) + 1) * 1e-3
    W = lin.p["weight"]
    W[...] = np.sign(rng.normal(size=W.shape)) * np.repeat(a, 49)[:, None]
    W1 = ct1.p["weight"]
    W1[...] = np.sign(rng.normal(size=W1.shape)) * b[None, :, None, None]
    return t, np.sort(np.argsort(-a)[:64]), np.sort(np.argsort(-b)[:32])


@pytest.mark.parametrize("cond", [False, True], ids=["uncond", "cond"])
def test_prune_init_keeps_strongest_channels(rng, cond):
    t, keep1, keep2 = _controlled_teacher(rng, cond)
    s = distgan.GAN(models.dcgan(0.25, num_classes=10 if cond else None), seed=9).generator
    assert distgan.prune_init(t, s) is True
    off = 1 if cond else 0
    T, S = t.layers, s.layers
    rows = (keep1[:, None] * 49 + np.arange(49)[None, :]).ravel()
    assert np.array_equal(S[off + 0].p["weight"], T[off + 0].p["weight"][rows])
    for name in ("weight", "bias"):
        assert np.array_equal(S[off + 1].p[name], T[off + 1].p[name][rows])
    for name in ("running_mean", "running_var"):
        assert np.array_equal(S[off + 1].b[name], T[off + 1].b[name][rows])
    assert np.array_equal(S[off + 4].p["weight"], T[off + 4].p["weight"][keep1][:, keep2])
    for name in ("weight", "bias"):
        assert np.array_equal(S[off + 5].p[name], T[off + 5].p[name][keep2])
    for name in ("running_mean", "running_var"):
        assert np.array_equal(S[off + 5].b[name], T[off + 5].b[name][keep2])
    assert np.array_equal(S[off + 7].p["weight"], T[off + 7].p["weight"][keep2])
    assert np.array_equal(S[off + 7].p["bias"], T[off + 7].p["bias"])
    if cond:
        assert np.array_equal(S[0].p["embedding"], T[0].p["embedding"])

    # The pruned student computes what the teacher computes once the pruned channels are
    # disconnected (their input weights in the NEXT layer zeroed): per-channel batch norm
    # gives a kept channel the same statistics in both, and a disconnected channel adds
    # exactly 0 downstream whatever its BN shift and ReLU make of it. (Zeroing the pruned
    # filters themselves would NOT do: BN maps an all-zero channel to its shift beta, and
    # ReLU(beta) > 0 would still feed the next layer.) Equal up to float32 summation order.
    t0 = Network(t.spec, t.input_shape)
    t0.copy_from(t)
    mask1 = np.ones(128, bool)
    mask1[keep1] = False
    mask2 = np.ones(64, bool)
    mask2[keep2] = False
    T0 = t0.layers
    T0[off + 4].p["weight"][mask1] = 0
    T0[off + 7].p["weight"][mask2] = 0
    z = rng.normal(size=(6, 100)).astype(np.float32)
    y = rng.integers(0, 10, 6) if cond else None
    for train in (True, False):
        a = s.forward(z, y, train=train).copy()
        b = t0.forward(z, y, train=train).copy()
        assert rel_err(a, b) <= 1e-5, (train, rel_err(a, b))


def test_prune_init_refuses_incompatible_architectures():
    s = distgan.GAN(models.dcgan(0.25), seed=0).generator
    before = (s.params.copy(), s.buffers.copy())
    for teacher in (distgan.GAN(models.mlp(latent_dim=100, data_dim=784), seed=0).generator,
                    distgan.GAN(models.dcgan(0.125), seed=0).generator,          # smaller
                    distgan.GAN(models.dcgan(0.5, num_classes=10), seed=0).generator):
        assert distgan.prune_init(teacher, s) is False
        assert np.array_equal(s.params, before[0]) and np.array_equal(s.buffers, before[1])


# --------------------------------------------------------------------------------------------
# distill()
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def teachers():
    """Small random teachers (dcgan 1/4), trained for one step, shared by the offline
    runs (which must leave them unchanged)."""
    rng = np.random.default_rng(21)
    out = {}
    for cond in (False, True):
        t = distgan.GAN(models.dcgan(0.25, num_classes=10 if cond else None), seed=1)
        t.step(_images(rng, 4), rng.integers(0, 10, 4) if cond else None)
        out[cond] = t
    return out


def _weights_of(gan):
    return {k: v.copy() for k, v in _state(gan).items() if not k.startswith("g_ema.buffers")}


HIST_KEYS = {"step", "time", "out", "kd", "cls", "feat", "adv", "d_loss"}


@pytest.mark.parametrize("cond,with_data", [(False, False), (False, True), (True, False),
                                            (True, True)],
                         ids=["blackbox", "data", "cond-blackbox", "cond-data"])
def test_distill_runs(teachers, rng, cond, with_data):
    K = 10 if cond else None
    teacher = teachers[cond]
    frozen = _weights_of(teacher)
    student = distgan.GAN(models.dcgan(0.125, num_classes=K), seed=2)
    data = _data(rng, 12, labelled=cond) if with_data else None
    result = distgan.distill(teacher, student, T=2.0, data=data, steps=3, batch_size=4,
                             weights={"kd": 0.1, "feat": 1.0}, progress=False, log_every=1)
    s, hist = result
    assert s is student and result.student is student and result.history is hist
    assert student.step_count == 3 and student.opt_g.t == 3
    assert HIST_KEYS <= set(hist) and hist["step"] == [1, 2, 3]
    for k in ("out", "kd", "feat", "adv", "d_loss"):
        assert len(hist[k]) == 3 and all(math.isfinite(v) for v in hist[k]), k
        assert all(v > 0 for v in hist[k]) or k == "d_loss", (k, hist[k])
    assert student.config.get("init_from_teacher") is True        # init="prune" default
    # the teacher is frozen: no weight, buffer or optimizer state of it changed
    after = _weights_of(teacher)
    assert all(np.array_equal(after[k], frozen[k]) for k in frozen)
    assert teacher.step_count == 1
    samples = student.sample(3, seed=0, labels=1 if cond else None)
    assert samples.shape == (3, 1, 28, 28) and np.isfinite(samples).all()


def test_distill_online_trains_the_teacher(rng):
    teacher = distgan.GAN(models.dcgan(0.25), seed=1)
    student = distgan.GAN(models.dcgan(0.125), seed=2)
    before = teacher.generator.params.copy()
    s, hist = distgan.distill(teacher, student, data=_data(rng, 12), steps=2, batch_size=4,
                              online=True, progress=False, log_every=1)
    assert teacher.step_count == 2 and student.step_count == 2
    assert not np.array_equal(teacher.generator.params, before)
    assert hist["step"] == [1, 2]


def test_distill_init_and_critic_options(teachers):
    teacher = teachers[False]
    teacher._refresh_ema_stats()          # what distill() does before pruning
    student = distgan.GAN(models.dcgan(0.125, d_width=0.25), seed=2)
    expect = distgan.GAN(models.dcgan(0.125), seed=2).generator
    assert distgan.prune_init(teacher.g_ema, expect)
    distgan.distill(teacher, student, steps=0, critic="teacher", progress=False)
    assert np.array_equal(student.generator.params, expect.params)      # pruned from G_t
    assert np.array_equal(student.g_ema.params, expect.params)
    assert np.array_equal(student.discriminator.params, teacher.discriminator.params)
    rand = distgan.GAN(models.dcgan(0.125), seed=2)
    init = rand.generator.params.copy()
    distgan.distill(teacher, rand, steps=0, init="random", progress=False)
    assert np.array_equal(rand.generator.params, init)


def test_distill_bad_arguments(teachers, rng):
    teacher = teachers[False]

    def student(**kw):
        return distgan.GAN(models.dcgan(0.125, **kw), seed=2)

    cases = [
        (dict(T=0.0), ValueError, "T must"), (dict(T=float("nan")), ValueError, "T must"),
        (dict(weights={"bogus": 1.0}), ValueError, "unknown loss weights"),
        (dict(weights={"out": -1.0}), ValueError, "weights"),
        (dict(weights={"cls": 1.0}), ValueError, "classifier"),
        (dict(online=True), ValueError, "needs data"),
        (dict(init="magic"), ValueError, "init"), (dict(critic="magic"), ValueError, "critic"),
        (dict(output_loss="l3"), ValueError, "output_loss"),
        (dict(batch_size=1), ValueError, "batch_size"),
        (dict(data=_images(rng, 8, (1, 32, 32))), ValueError, "images"),
    ]
    for kw, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            distgan.distill(teacher, student(), steps=1, progress=False, **kw)
    with pytest.raises(ValueError, match="num_classes"):
        distgan.distill(teacher, student(num_classes=10), steps=1, progress=False)
    with pytest.raises(ValueError, match="image shape"):
        distgan.distill(teacher, distgan.GAN(models.dcgan(0.125, image_shape=(1, 32, 32))),
                        steps=1, progress=False)
    with pytest.raises(TypeError, match="distill expects"):
        distgan.distill(teacher, "student", steps=1, progress=False)


def test_sweep_temperature_on_toy_data(tmp_path):
    """One student per T, distilled with the tempered critic KL on, evaluated on the
    toy set's mode statistics; rows in the order of Ts, and a plot."""
    data = distgan.datasets.load("grid25", n=2000, seed=0)
    teacher = distgan.GAN(models.mlp(hidden=32, depth=2), seed=0)
    teacher.fit(data, steps=20, batch_size=64, progress=False)
    rows = distgan.sweep_temperature(teacher, models.mlp(hidden=16, depth=2), Ts=(1, 4),
                                     data=data, steps=5, batch_size=32, n_eval=200,
                                     plot_path=str(tmp_path / "t.png"))
    assert [r["T"] for r in rows] == [1.0, 4.0]
    assert all(r["steps"] == 5 and 0 <= r["modes"] <= 25 for r in rows)
    assert (tmp_path / "t.png").stat().st_size > 0
    with pytest.raises(ValueError, match="eval_data"):
        distgan.sweep_temperature(teacher, models.mlp(hidden=16, depth=2), Ts=(1,), steps=1)
    with pytest.raises(ValueError, match="Ts"):
        distgan.sweep_temperature(teacher, models.mlp(hidden=16, depth=2), Ts=(0,), data=data)
