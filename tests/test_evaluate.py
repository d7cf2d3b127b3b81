"""Tests of distgan.classifier and distgan.evaluate: the evaluation classifier,
evaluate() on images and toy sets, profile(), and their errors.

Fast by default (tiny networks, a few hundred steps); the full Fashion-MNIST
accuracy requirement (>= 92 %) is the ``slow`` test at the end.
"""
import math

import numpy as np
import pytest

from distgan import checkpoint, datasets, models, ops
import importlib

# the package exports the function distgan.evaluate, which shadows the module's name
ev = importlib.import_module("distgan.evaluate")
from distgan.classifier import Classifier, augment_batch, cosine_lr
from distgan.gan import GAN


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One BLAS thread: these networks are tiny, and on a busy 2-core machine two
    threads made their GEMMs ten times slower (waiting for each other)."""
    before = ops.get_num_threads()
    ops.set_num_threads(1)
    yield
    ops.set_num_threads(before)


def _stripes(rng, n):
    """A separable toy problem on 1x8x8 images: class 0 is bright in the top half,
    class 1 in the bottom half, plus noise (not left/right, so flips would not matter)."""
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.3, (n, 1, 8, 8)).astype(np.float32) - 0.5
    x[y == 0, :, :4, :] += 1.0
    x[y == 1, :, 4:, :] += 1.0
    return np.clip(x, -1, 1).astype(np.float32), y.astype(np.int64)


def _tiny_spec(num_classes=2, shape=(1, 8, 8)):
    return models.classifier(width=0.25, image_shape=shape, num_classes=num_classes,
                             feature_dim=32)


@pytest.fixture(scope="module")
def stripes_clf():
    rng = np.random.default_rng(0)
    x, y = _stripes(rng, 512)
    clf = Classifier(_tiny_spec(), seed=0)
    clf.fit((x, y), steps=40, batch_size=32, lr=3e-3, progress=False, log_every=10)
    return clf


@pytest.fixture(scope="module")
def fmnist():
    try:
        train = datasets.load("fashion-mnist", download=False)
        test = datasets.load("fashion-mnist", split="test", download=False)
    except datasets.DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST not available: {e}")
    return train, test


@pytest.fixture(scope="module")
def fmnist_eval(fmnist, tmp_path_factory):
    """A small evaluation classifier (width 0.25, ~190 steps on 6000 images)
    trained through evaluation_classifier into a temporary cache."""
    train, _ = fmnist
    sub = train.subset(6000)
    cache = tmp_path_factory.mktemp("cache")
    recipe = {"width": 0.25, "feature_dim": 128, "epochs": 2, "batch_size": 64, "lr": 3e-3}
    clf = ev.evaluation_classifier(sub, cache_dir=cache, progress=False, recipe=recipe)
    return sub, clf, cache, recipe


# ---------------------------------------------------------------------------
# Classifier
# ---------------------------------------------------------------------------

def test_classifier_learns_separable_problem(stripes_clf):
    x, y = _stripes(np.random.default_rng(1), 400)
    assert stripes_clf.accuracy((x, y)) > 0.95
    h = stripes_clf.history
    assert h["step"][-1] == 40 and len(h["loss"]) == 4
    assert h["loss"][-1] < h["loss"][0]


def test_classifier_outputs(stripes_clf):
    x, y = _stripes(np.random.default_rng(2), 37)
    f = stripes_clf.features(x, batch_size=16)
    z = stripes_clf.logits(x, batch_size=16)
    assert f.shape == (37, stripes_clf.feature_dim) == (37, 8) and f.dtype == np.float32
    assert z.shape == (37, 2) and z.dtype == np.float32
    assert (f >= 0).all()                       # ReLU output
    f2, z2 = stripes_clf.features_and_logits(x)  # one batch: same numbers (eval mode)
    np.testing.assert_allclose(f2, f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z2, z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stripes_clf.predict(x), np.argmax(z, axis=1))
    # the features are what the last linear layer sees: logits = f W^T + b
    W = stripes_clf.network.layers[-1].p["weight"]
    b = stripes_clf.network.layers[-1].p["bias"]
    np.testing.assert_allclose(f @ W.T + b, z, rtol=1e-4, atol=1e-5)


def test_classifier_save_load_round_trip(stripes_clf, tmp_path):
    x, _ = _stripes(np.random.default_rng(3), 50)
    stripes_clf.info = {"test_accuracy": 0.99, "note": "x"}
    path = tmp_path / "c.safetensors"
    stripes_clf.save(path)
    other = Classifier.load(path)
    np.testing.assert_array_equal(other.logits(x), stripes_clf.logits(x))
    np.testing.assert_array_equal(other.features(x), stripes_clf.features(x))
    assert other.info == stripes_clf.info
    assert other.history == stripes_clf.history
    assert other.step_count == stripes_clf.step_count and other.opt.t == stripes_clf.opt.t
    assert other.spec == stripes_clf.spec


def test_classifier_load_rejects_other_checkpoints(tmp_path):
    gan = GAN(models.mlp(hidden=8, depth=1), seed=0)
    gan.save(tmp_path / "g.safetensors")
    with pytest.raises(checkpoint.CheckpointError, match="expected 'classifier'"):
        Classifier.load(tmp_path / "g.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError):
        Classifier.load(bad)


def test_fit_is_seeded():
    x, y = _stripes(np.random.default_rng(4), 128)
    a, b = Classifier(_tiny_spec(), seed=3), Classifier(_tiny_spec(), seed=3)
    for c in (a, b):
        c.fit((x, y), steps=5, batch_size=32, progress=False, augment=True)
    np.testing.assert_array_equal(a.network.params, b.network.params)


def test_augment_batch():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (64, 2, 6, 5)).astype(np.float32)
    flipped = augment_batch(x, np.random.default_rng(1), flip=True, shift=0)
    same = (flipped == x).all(axis=(1, 2, 3))
    mirror = (flipped == x[..., ::-1]).all(axis=(1, 2, 3))
    assert (same | mirror).all() and same.any() and mirror.any()
    shifted = augment_batch(x, np.random.default_rng(1), flip=False, shift=2)
    assert shifted.shape == x.shape and shifted.dtype == np.float32
    # every pixel is either an input pixel of the same image or the -1 border
    for i in range(8):
        vals = set(np.unique(shifted[i]).tolist())
        assert vals <= set(np.unique(x[i]).tolist()) | {-1.0}
    np.testing.assert_array_equal(augment_batch(x, rng, flip=False, shift=0), x)


def test_augment_options():
    x, y = _stripes(np.random.default_rng(6), 64)
    for aug in (True, {"flip": True, "shift": 0}, {"shift": 1}):
        Classifier(_tiny_spec(), seed=0).fit((x, y), steps=2, batch_size=32, augment=aug,
                                             progress=False)
    with pytest.raises(ValueError, match="unknown options"):
        Classifier(_tiny_spec()).fit((x, y), steps=1, batch_size=32, augment={"rotate": 1},
                                     progress=False)
    with pytest.raises(ValueError, match="augment must be"):
        Classifier(_tiny_spec()).fit((x, y), steps=1, batch_size=32, augment="yes",
                                     progress=False)


def test_distill_classifier(stripes_clf):
    from distgan.classifier import distill_classifier
    from distgan.distill import distill

    x, y = _stripes(np.random.default_rng(7), 512)
    student = Classifier(models.classifier(width=0.125, image_shape=(1, 8, 8), num_classes=2,
                                           feature_dim=32), seed=1)
    res = distill_classifier(stripes_clf, student, T=2.0, data=x, steps=40, batch_size=32,
                             lr=3e-3, progress=False)
    assert res.student is student and res.history["step"][-1] == 40
    assert res.history["kd"][-1] < res.history["kd"][0]
    xt, yt = _stripes(np.random.default_rng(8), 300)
    assert student.accuracy((xt, yt)) > 0.9
    assert np.mean(student.predict(xt) == stripes_clf.predict(xt)) > 0.9
    # distgan.distill dispatches two classifiers here, with labels as a second term
    other = Classifier(student.spec, seed=2)
    res = distill(stripes_clf, other, T=4.0, data=(x, y), steps=5, batch_size=32,
                  weights={"kd": 1.0, "ce": 0.5}, progress=False)
    assert res.student is other and res.history["ce"][-1] > 0
    with pytest.raises(ValueError, match="unknown loss weights"):
        distill_classifier(stripes_clf, other, data=x, steps=1, weights={"out": 1.0},
                           progress=False)
    with pytest.raises(ValueError, match="T must be"):
        distill_classifier(stripes_clf, other, T=0.0, data=x, steps=1, progress=False)
    with pytest.raises(ValueError, match="needs data"):
        distill_classifier(stripes_clf, other, steps=1, progress=False)
    with pytest.raises(ValueError, match="share image shape"):
        distill_classifier(stripes_clf, Classifier(_tiny_spec(num_classes=3)), data=x,
                           steps=1, progress=False)


def test_cosine_lr():
    assert cosine_lr(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert cosine_lr(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert cosine_lr(55, 100, 1.0, warmup=10) == pytest.approx(0.5)
    assert cosine_lr(100, 100, 1.0, warmup=10) == pytest.approx(0.0, abs=1e-12)


def test_classifier_bad_inputs(stripes_clf):
    with pytest.raises(ValueError, match="spec"):
        Classifier({"generator": []})
    spec = _tiny_spec()
    spec["network"] = spec["network"][:-1]
    with pytest.raises(ValueError, match="last layer"):
        Classifier(spec)
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        stripes_clf.logits(np.zeros((3, 1, 9, 9), np.float32))
    with pytest.raises(TypeError, match="float"):
        stripes_clf.logits(np.zeros((3, 1, 8, 8), np.int32))
    with pytest.raises(TypeError, match="numpy array"):
        stripes_clf.features([[0.0]])
    bad = np.zeros((3, 1, 8, 8), np.float32)
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stripes_clf.features(bad)
    x, y = _stripes(np.random.default_rng(5), 16)
    with pytest.raises(ValueError, match="labels must be in"):
        stripes_clf.accuracy((x, y + 5))
    with pytest.raises(ValueError, match="no labels"):
        stripes_clf.fit(datasets.Dataset(x), steps=1, progress=False)
    with pytest.raises(ValueError, match="epochs= or steps="):
        stripes_clf.fit((x, y), batch_size=8, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        stripes_clf.fit((x, y), steps=1, batch_size=64, progress=False)
    with pytest.raises(ValueError, match="lr"):
        stripes_clf.fit((x, y), steps=1, lr=-1.0, batch_size=8, progress=False)


# ---------------------------------------------------------------------------
# evaluation classifier and evaluate() on images
# ---------------------------------------------------------------------------

def test_evaluation_classifier_is_cached(fmnist_eval):
    sub, clf, cache, recipe = fmnist_eval
    path = ev.classifier_path(sub, cache)
    assert path.is_file() and path.name == f"{sub.checksum}.safetensors"
    assert path.parent == cache / "classifiers"
    info = clf.info
    assert info["dataset_checksum"] == sub.checksum
    assert "test split" in info["test_set"]
    assert info["recipe"]["width"] == 0.25
    assert 0.75 < info["test_accuracy"] <= 1.0      # a real, if small, classifier
    again = ev.evaluation_classifier(sub, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again.network.params, clf.network.params)
    assert again.info == clf.info


def test_evaluation_classifier_env_cache(fmnist_eval, monkeypatch):
    sub, clf, cache, _ = fmnist_eval
    monkeypatch.setenv("DISTGAN_CACHE", str(cache))
    assert ev.cache_root() == cache
    assert ev.classifier_path(sub) == cache / "classifiers" / f"{sub.checksum}.safetensors"
    loaded = ev.evaluation_classifier(sub, progress=False)   # found through the variable
    np.testing.assert_array_equal(loaded.network.params, clf.network.params)


def test_fid_test_vs_train_small_noise_large(fmnist, fmnist_eval):
    _, test = fmnist
    sub, clf, cache, _ = fmnist_eval
    n = 1000
    same = ev.evaluate(test.images[:n], sub, n=n, classifier=clf)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, (n,) + test.image_shape).astype(np.float32)
    far = ev.evaluate(noise, sub, n=n, classifier=clf)
    keys = {"fid", "kid", "precision", "recall", "density", "coverage", "class_hist_kl",
            "classifier_accuracy", "n"}
    assert set(same) == keys and set(far) == keys
    assert same["n"] == far["n"] == n
    assert same["classifier_accuracy"] == clf.info["test_accuracy"]
    assert far["fid"] > 20 * max(same["fid"], 1e-3)
    assert far["kid"][0] > 20 * max(same["kid"][0], 1e-4)
    assert min(same["precision"], same["recall"], same["coverage"]) > 0.8
    assert 0.8 < same["density"] < 1.25
    # noise lands in one or two classes: it may sit inside the real manifold
    # (precision need not be low) but covers little of it
    assert far["recall"] < 0.3 and far["coverage"] < 0.3
    assert same["class_hist_kl"] < 0.05 < far["class_hist_kl"]
    for v in same.values():
        assert np.all(np.isfinite(v))


def test_named_sets_share_the_train_split_classifier(fmnist):
    train, test = fmnist
    for ds in (test, train.subset(100), test.subset(50, seed=1)):
        assert ev._reference_set(ds).checksum == train.checksum
    other = datasets.Dataset(train.raw[:100], train.labels[:100], name="mine")
    assert ev._reference_set(other) is other


def test_evaluate_caches_real_statistics(fmnist_eval):
    sub, clf, cache, _ = fmnist_eval
    ev._REAL_CACHE.clear()
    x = sub.images[-200:]
    a = ev.evaluate(x, sub, n=200, classifier=clf)
    assert len(ev._REAL_CACHE) == 1
    entry = next(iter(ev._REAL_CACHE.values()))
    b = ev.evaluate(x, sub, n=200, classifier=clf)
    assert next(iter(ev._REAL_CACHE.values())) is entry and len(ev._REAL_CACHE) == 1
    assert a == b
    ev.evaluate(x[:100], sub, n=200, classifier=clf)   # fewer samples: n follows them
    assert len(ev._REAL_CACHE) == 2


def test_evaluate_gan_on_images(fmnist_eval):
    sub, clf, cache, _ = fmnist_eval
    gan = GAN(models.dcgan(width=0.125), seed=0)
    res = ev.evaluate(gan, sub, n=64, classifier=clf, seed=1)
    assert res["n"] == 64 and res["fid"] > 0
    # the same seed draws the same samples
    assert ev.evaluate(gan, sub, n=64, classifier=clf, seed=1)["fid"] == res["fid"]


def test_evaluate_bad_inputs(fmnist_eval):
    sub, clf, cache, _ = fmnist_eval
    x = sub.images[:50]
    with pytest.raises(ValueError, match=r"\(n, 1, 28, 28\)"):
        ev.evaluate(x[:, :, :20, :20], sub, n=50, classifier=clf)
    bad = x.copy()
    bad[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        ev.evaluate(bad, sub, n=50, classifier=clf)
    with pytest.raises(ValueError, match="n must be"):
        ev.evaluate(x, sub, n=3, classifier=clf)
    with pytest.raises(TypeError, match="gan_or_samples"):
        ev.evaluate([1, 2, 3], sub, n=50, classifier=clf)
    with pytest.raises(TypeError, match="Dataset"):
        ev.evaluate(x, 42, classifier=clf)
    with pytest.raises(TypeError, match="classifier"):
        ev.evaluate(x, sub, n=50, classifier=3)
    unlabelled = datasets.Dataset(sub.images[:100])
    with pytest.raises(ValueError, match="labelled"):
        ev.evaluate(x, unlabelled, n=50, cache_dir=cache)
    # with a classifier, unlabelled data works (no class histogram)
    res = ev.evaluate(x, unlabelled, n=50, classifier=clf)
    assert res["class_hist_kl"] is None
    with pytest.raises(ValueError, match="unknown recipe"):
        ev.evaluation_classifier(sub, cache_dir=cache, recipe={"widht": 1})


def test_evaluation_classifier_rejects_foreign_cache(fmnist_eval, tmp_path):
    sub, clf, cache, _ = fmnist_eval
    other = datasets.Dataset(sub.raw[:100], sub.labels[:100], name="other")
    path = ev.classifier_path(other, tmp_path)
    path.parent.mkdir(parents=True)
    clf.save(path)               # a classifier of other data under this checksum
    with pytest.raises(checkpoint.CheckpointError, match="delete the file"):
        ev.evaluation_classifier(other, cache_dir=tmp_path, progress=False)
    path.write_bytes(b"\x00" * 20)
    with pytest.raises(checkpoint.CheckpointError):
        ev.evaluation_classifier(other, cache_dir=tmp_path, progress=False)


def test_held_out_split_for_unnamed_data(tmp_path):
    rng = np.random.default_rng(0)
    x, y = _stripes(rng, 300)
    ds = datasets.Dataset(x, y, name="stripes")
    recipe = {"width": 0.25, "feature_dim": 32, "epochs": 5, "batch_size": 30}
    clf = ev.evaluation_classifier(ds, cache_dir=tmp_path, progress=False, recipe=recipe)
    assert clf.info["test_set"].startswith("held-out 30 of 300")
    assert clf.info["test_accuracy"] > 0.9


# ---------------------------------------------------------------------------
# toy sets
# ---------------------------------------------------------------------------

def test_evaluate_toy_samples():
    data = datasets.load("ring8", n=2000, seed=0)
    test = datasets.load("ring8", split="test", n=2000, seed=0)
    res = ev.evaluate(test.images, data, n=2000)
    # a 2-D Gaussian sample is within 3 sigma of its mean with probability 1 - exp(-9/2)
    assert res == {"modes": 8, "num_modes": 8,
                   "high_quality": pytest.approx(1 - math.exp(-4.5), abs=0.006),
                   "reverse_kl": pytest.approx(0.0, abs=0.01), "n": 2000}
    one_mode = np.repeat(data.centers[:1], 100, axis=0).astype(np.float32)
    res = ev.evaluate(one_mode, data, n=1000)
    assert res["modes"] == 1 and res["high_quality"] == 1.0 and res["n"] == 100
    assert res["reverse_kl"] == pytest.approx(math.log(8))


def test_evaluate_toy_gan():
    data = datasets.load("grid25", n=500, seed=0)
    gan = GAN(models.mlp(hidden=16, depth=2), seed=0)
    res = ev.evaluate(gan, data, n=300, seed=2)
    assert set(res) == {"modes", "num_modes", "high_quality", "reverse_kl", "n"}
    assert res["n"] == 300 and res["num_modes"] == 25 and 0 <= res["modes"] <= 25
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        ev.evaluate(np.zeros((50, 3), np.float32), data)


# ---------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------

def test_profile():
    gan = GAN(models.dcgan(width=0.125, num_classes=10), seed=0)
    p = ev.profile(gan, repeats=2, batch_sizes=(1, 32))
    assert p["generator_params"] == gan.generator.num_params
    assert p["discriminator_params"] == gan.discriminator.num_params
    assert p["generator_macs"] == gan.generator.macs > 0
    assert p["latency_ms_b1"] > 0 and p["latency_ms_b32"] > 0 and p["samples_per_s"] > 0
    assert p["generator_bytes"] == 4 * (gan.generator.params.size + gan.generator.buffers.size)
    # at least the output batch and the first activation are allocated
    out_bytes = 32 * 4 * int(np.prod(gan.image_shape))
    assert p["peak_memory_bytes"] > out_bytes
    assert p["repeats"] == 2 and p["threads"] == 1
    with pytest.raises(TypeError, match="GAN"):
        ev.profile(object())
    with pytest.raises(ValueError, match="repeats"):
        ev.profile(gan, repeats=0)
    with pytest.raises(ValueError, match="batch_sizes"):
        ev.profile(gan, batch_sizes=(0,))


# ---------------------------------------------------------------------------
# the requirement: Fashion-MNIST test accuracy >= 92 % (minutes on 2 cores)
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluation_classifier_fashion_mnist_accuracy(fmnist, tmp_path):
    train, test = fmnist
    clf = ev.evaluation_classifier(train, cache_dir=tmp_path, progress=False)
    assert clf.info["test_accuracy"] >= 0.92
    assert clf.accuracy(test) == clf.info["test_accuracy"]
