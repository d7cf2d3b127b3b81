"""Evaluation of generators: sample quality in a classifier's feature space, and cost.

Scope: DESIGN.md "Evaluation". No downloaded Inception weights: each labelled image
data set gets its own evaluation classifier (:func:`evaluation_classifier`, a
small CNN of :func:`distgan.models.classifier` trained with the core, cached on
disk by the data set's checksum, its test accuracy stored with it), and
:func:`evaluate` measures FID, KID, precision/recall, density/coverage and the
class-histogram KL in its penultimate feature space with :mod:`distgan.metrics`.
For the 2-D toy sets it counts modes instead. :func:`profile` measures the cost
of a generator: parameters, MACs, sampling latency, memory.

Letters: ``n`` samples, ``F`` feature dimension, ``K`` classes, ``M`` modes.
"""
from __future__ import annotations

import collections
import hashlib
import numbers
import os
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np

from . import checkpoint as _ckpt
from . import datasets as _datasets
from . import metrics as _metrics
from . import models as _models
from . import ops as _ops
from .classifier import Classifier

__all__ = ["evaluation_classifier", "classifier_path", "cache_root", "evaluate", "profile",
           "EVAL_RECIPE"]

#: How the evaluation classifier is trained (see ``Classifier.fit``): width 0.5
#: (16/32 channels, 64 features, 126k parameters), 3 epochs of batch 64, warm-up +
#: cosine learning rate peaking at 2e-3. On Fashion-MNIST this reached 92.6 % and
#: 92.5 % test accuracy (seeds 0 and 1) in 4-5 minutes on one busy core. Shorter
#: runs fell short (2 epochs: 91.7 % at batch 64, 92.0 % at batch 32; width 1.0,
#: 2 epochs of batch 128: 92.3 % in twice the time), and flips did not help at this
#: length (92.1 %). A cached classifier keeps the recipe it was trained with (in its
#: ``info``); changing this does not retrain it.
EVAL_RECIPE = {"width": 0.5, "feature_dim": 128, "seed": 0, "epochs": 3, "batch_size": 64,
               "lr": 2e-3, "weight_decay": 5e-4, "augment": False}

#: Fraction of a data set held out to measure accuracy when it has no test split.
HOLDOUT_FRACTION = 0.1

# (classifier fingerprint, data checksum, n) -> real-feature statistics; a few entries.
_REAL_CACHE = collections.OrderedDict()
_REAL_CACHE_SIZE = 8
# KID: subsets of this many samples per side, this many subsets (Binkowski et al.'s
# 100 x 1000). With n <= 1000 every subset would be the whole set, so one is drawn.
_KID_SUBSET = 1000
_KID_SUBSETS = 100
# The subset of real images a given n uses is drawn with this fixed seed, so the
# reference statistics do not depend on the sampling seed and can be cached.
_REAL_SUBSET_SEED = 0


# ---------------------------------------------------------------------------
# the evaluation classifier
# ---------------------------------------------------------------------------

def cache_root(cache_dir=None):
    """The folder of distgan's caches.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Used as it is when given; otherwise ``$DISTGAN_CACHE`` when set, else
        ``~/.cache/distgan``.

    Returns
    -------
    pathlib.Path
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DISTGAN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/distgan").expanduser()


def classifier_path(dataset, cache_dir=None):
    """Where the evaluation classifier of ``dataset`` is cached:
    ``<cache_root>/classifiers/<dataset checksum>.safetensors``.

    Parameters
    ----------
    dataset : distgan.datasets.Dataset
    cache_dir : str or os.PathLike, optional
        See :func:`cache_root`.

    Returns
    -------
    pathlib.Path
    """
    return cache_root(cache_dir) / "classifiers" / f"{dataset.checksum}.safetensors"


def _as_dataset(data, name="data"):
    if isinstance(data, (str, os.PathLike)):
        return _datasets.load(data)
    if not (hasattr(data, "images") and hasattr(data, "checksum")):
        raise TypeError(f"{name} must be a distgan Dataset (distgan.datasets.load) or a data "
                        f"set name, got {type(data).__name__}")
    return data


def _test_split(dataset):
    """(train part, test part, description) for measuring a classifier's accuracy.

    A named set's train split (or a subset of it) is measured on the named set's
    test split; anything else on a seeded held-out 10 % that is left out of training.
    """
    if (dataset.split == "train" and dataset.name in _datasets.NAMES
            and dataset.centers is None):
        try:
            test = _datasets.load(dataset.name, split="test")
        except _datasets.DatasetError:
            test = None
        if test is not None and test.image_shape == dataset.image_shape \
                and test.labels is not None:
            return dataset, test, f"{dataset.name} test split ({len(test)} images)"
    n = len(dataset)
    k = max(1, int(round(HOLDOUT_FRACTION * n)))
    if n - k < 2:
        raise ValueError(f"{dataset.name}: {n} images are too few to train and test a classifier")
    perm = np.random.default_rng(0).permutation(n)
    test_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])
    images, labels = dataset.images, dataset.labels
    return ((images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx]),
            f"held-out {k} of {n} images (seed 0)")


def evaluation_classifier(dataset, cache_dir=None, progress=True, retrain=False, recipe=None):
    """The evaluation classifier of a labelled image data set, trained once and cached.

    Loads ``<cache_root>/classifiers/<dataset.checksum>.safetensors`` when it
    exists; otherwise trains :func:`distgan.models.classifier` with
    :data:`EVAL_RECIPE`, measures its accuracy (on the data set's test split when
    it is a named set such as ``"fashion-mnist"`` loaded with ``split="train"``,
    else on a held-out 10 % not used for training) and saves it there, the
    accuracy in ``info["test_accuracy"]``.

    Parameters
    ----------
    dataset : Dataset or str
        Labelled images ``(N, C, H, W)``, or a name for :func:`distgan.datasets.load`.
    cache_dir : str or os.PathLike, optional
        Cache root (default ``$DISTGAN_CACHE`` or ``~/.cache/distgan``).
    progress : bool
        Progress bar while training.
    retrain : bool
        Train (and overwrite the cache) even when a cached classifier exists.
    recipe : dict, optional
        Entries overriding :data:`EVAL_RECIPE` (tests use tiny settings). A
        cached classifier is returned whatever recipe it was trained with; its
        ``info["recipe"]`` says which.

    Returns
    -------
    Classifier
        ``info`` holds ``test_accuracy``, ``test_set``, ``train_seconds``,
        ``dataset``, ``dataset_checksum``, ``recipe``.

    Raises
    ------
    ValueError
        Unlabelled or non-image data, or an unknown recipe entry.
    distgan.checkpoint.CheckpointError
        The cached file is corrupt or belongs to other data (delete it, or pass
        ``retrain=True``).
    """
    ds = _as_dataset(dataset, "dataset")
    if len(ds.image_shape) != 3:
        raise ValueError(f"{ds.name}: an evaluation classifier needs images (N, C, H, W), got "
                         f"samples of shape {ds.image_shape} (toy sets are evaluated by modes)")
    if ds.labels is None or not ds.num_classes or ds.num_classes < 2:
        raise ValueError(f"{ds.name}: an evaluation classifier needs labelled data with at "
                         "least 2 classes; pass classifier= to evaluate unlabelled data")
    rec = dict(EVAL_RECIPE)
    if recipe:
        unknown = set(recipe) - set(EVAL_RECIPE)
        if unknown:
            raise ValueError(f"unknown recipe entries {sorted(unknown)}; known: "
                             f"{sorted(EVAL_RECIPE)}")
        rec.update(recipe)
    path = classifier_path(ds, cache_dir)
    if path.exists() and not retrain:
        clf = Classifier.load(path)
        if clf.info.get("dataset_checksum") != ds.checksum:
            raise _ckpt.CheckpointError(f"{path}: trained on data with checksum "
                                        f"{clf.info.get('dataset_checksum')!r}, not {ds.checksum}"
                                        " (delete the file or pass retrain=True)")
        if clf.image_shape != ds.image_shape or clf.num_classes != ds.num_classes:
            raise _ckpt.CheckpointError(f"{path}: a classifier of {clf.image_shape} images and "
                                        f"{clf.num_classes} classes, the data has "
                                        f"{ds.image_shape} and {ds.num_classes}")
        return clf

    train, test, test_desc = _test_split(ds)
    spec = _models.classifier(width=rec["width"], image_shape=ds.image_shape,
                              num_classes=ds.num_classes, feature_dim=rec["feature_dim"])
    clf = Classifier(spec, seed=rec["seed"])
    t0 = time.perf_counter()
    clf.fit(train, epochs=rec["epochs"], batch_size=rec["batch_size"], lr=rec["lr"],
            weight_decay=rec["weight_decay"], augment=rec["augment"], progress=progress)
    seconds = time.perf_counter() - t0
    acc = clf.accuracy(test)
    clf.info = {"test_accuracy": acc, "test_set": test_desc, "train_seconds": round(seconds, 1),
                "dataset": ds.name, "dataset_checksum": ds.checksum, "dataset_size": len(ds),
                "recipe": rec}
    clf.save(path)
    return clf


# ---------------------------------------------------------------------------
# sample quality
# ---------------------------------------------------------------------------

def _reference_set(ds):
    """The data set whose evaluation classifier measures ``ds``: for a named set
    (Fashion-MNIST, MNIST) its full train split, whatever split or subset ``ds``
    is, so that numbers measured against either split or any subset share one
    feature space; for other data ``ds`` itself."""
    if ds.name in _datasets.NAMES and ds.centers is None and ds.labels is not None:
        try:
            ref = _datasets.load(ds.name, split="train", download=False)
        except _datasets.DatasetError:
            return ds
        if ref.image_shape == ds.image_shape and ref.num_classes == ds.num_classes:
            return ref
    return ds


def _fingerprint(clf):
    h = hashlib.sha256()
    h.update(clf.network.params.tobytes())
    h.update(clf.network.buffers.tobytes())
    return h.hexdigest()


def _is_generator(obj):
    return callable(getattr(obj, "sample", None)) and not isinstance(obj, np.ndarray)


def _check_n(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 10:
        raise ValueError(f"n must be an int >= 10, got {n!r}")
    return int(n)


def _samples(gan_or_samples, n, seed, shape, what):
    """At most ``n`` samples, float32, from a generator (``sample(n, seed=seed)``) or an
    array, validated against the per-sample ``shape``."""
    if _is_generator(gan_or_samples):
        x = gan_or_samples.sample(n, seed=seed)
    elif isinstance(gan_or_samples, np.ndarray):
        x = gan_or_samples
        if len(x) < 10:
            raise ValueError(f"samples: {len(x)} given, at least 10 are needed")
        x = x[:n]
    else:
        raise TypeError("gan_or_samples must be a GAN (anything with .sample(n, seed=)) or a "
                        f"numpy array of samples, got {type(gan_or_samples).__name__}")
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise TypeError(f"samples must be floats, got {x.dtype}")
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != tuple(shape):
        raise ValueError(f"samples must be (n, {', '.join(map(str, shape))}) like the {what}, "
                         f"got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("samples contain NaN or infinity")
    return np.ascontiguousarray(x, dtype=np.float32)


def _real_stats(clf, ds, n):
    """Features, Gaussian fit and labels of ``n`` real images (cached)."""
    key = (_fingerprint(clf), ds.checksum, n)
    hit = _REAL_CACHE.get(key)
    if hit is not None:
        _REAL_CACHE.move_to_end(key)
        return hit
    if n < len(ds):
        idx = np.sort(np.random.default_rng(_REAL_SUBSET_SEED).choice(len(ds), n, replace=False))
        images = ds.images[idx]
        labels = None if ds.labels is None else ds.labels[idx]
    else:
        images, labels = ds.images, ds.labels
    feats = clf.features(images)
    mu, sigma = _metrics.feature_stats(feats)
    entry = {"features": feats, "mu": mu, "sigma": sigma, "labels": labels}
    _REAL_CACHE[key] = entry
    while len(_REAL_CACHE) > _REAL_CACHE_SIZE:
        _REAL_CACHE.popitem(last=False)
    return entry


def evaluate(gan_or_samples, data, n=10000, classifier=None, seed=0, cache_dir=None,
             progress=False):
    """Sample quality of a generator (or of given samples) against a data set.

    Image data: features of ``n`` real images (a fixed random subset of
    ``data``, all of it when it has at most ``n``) and of ``n`` generated
    samples in the evaluation classifier's penultimate space, compared with
    :mod:`distgan.metrics`. The real side's features and statistics are cached
    in memory per (classifier, data checksum, n). Toy 2-D data (``data.centers``
    set): the mode statistics of ``n`` samples.

    Parameters
    ----------
    gan_or_samples : GAN or ndarray
        A generator (its ``sample(n, seed=seed)`` is called) or samples
        ``(m, *data.image_shape)``, float, in the data's range; of these the
        first ``n`` are used, and when ``m < n`` both sides use ``m``.
    data : Dataset or str
        The real data (for images: labelled, unless ``classifier`` is given).
    n : int
        Samples per side (>= 10); reduced to ``len(data)`` for images when
        smaller. FID is biased upwards at small ``n``: compare equal ``n``.
    classifier : Classifier or path, optional
        The feature network; default :func:`evaluation_classifier` of ``data``
        or, for a named set (``"fashion-mnist"``, ``"mnist"``), of its full train
        split, whichever split or subset ``data`` is.
    seed : int
        Seed of ``gan.sample`` and of the KID subsets.
    cache_dir : str or os.PathLike, optional
        Cache root of the evaluation classifier (see :func:`cache_root`).
    progress : bool
        Progress bar if the evaluation classifier has to be trained.

    Returns
    -------
    dict
        Images: ``fid``, ``kid`` (mean, std over 100 subsets of 1000 samples per
        side; one subset of all ``n``, std 0, when ``n <= 1000``), ``precision``, ``recall``,
        ``density``, ``coverage``, ``class_hist_kl`` (None for unlabelled data),
        ``classifier_accuracy`` (the classifier's recorded test accuracy, None if
        unknown), ``n``. Toy sets: ``modes``, ``num_modes``, ``high_quality``,
        ``reverse_kl``, ``n``.
    """
    ds = _as_dataset(data)
    n = _check_n(n)
    if ds.centers is not None:
        x = _samples(gan_or_samples, n, seed, ds.image_shape, "data points")
        st = _metrics.mode_stats(x.astype(np.float64), ds.centers, ds.sigma)
        return {"modes": int(st["modes"]), "num_modes": int(len(ds.centers)),
                "high_quality": float(st["high_quality"]), "reverse_kl": float(st["reverse_kl"]),
                "n": int(len(x))}
    if len(ds.image_shape) != 3:
        raise ValueError(f"{ds.name}: evaluate needs images (N, C, H, W) or a toy set with "
                         f"centers, got samples of shape {ds.image_shape}")

    if classifier is None:
        clf = evaluation_classifier(_reference_set(ds), cache_dir=cache_dir, progress=progress)
    elif isinstance(classifier, Classifier):
        clf = classifier
    elif isinstance(classifier, (str, os.PathLike)):
        clf = Classifier.load(classifier)
    else:
        raise TypeError(f"classifier must be a Classifier or a checkpoint path, got "
                        f"{type(classifier).__name__}")
    if clf.image_shape != ds.image_shape:
        raise ValueError(f"the classifier takes {clf.image_shape} images, {ds.name} has "
                         f"{ds.image_shape}")
    labelled = ds.labels is not None
    if labelled and ds.num_classes is not None and ds.num_classes > clf.num_classes:
        raise ValueError(f"{ds.name} has {ds.num_classes} classes, the classifier "
                         f"{clf.num_classes}")

    n = min(n, len(ds))
    fake = _samples(gan_or_samples, n, seed, ds.image_shape, "data images")
    n = len(fake)
    real = _real_stats(clf, ds, n)
    f_fake, logits = clf.features_and_logits(fake)
    mu, sigma = _metrics.feature_stats(f_fake)
    out = {"fid": _metrics.fid_from_stats(real["mu"], real["sigma"], mu, sigma),
           "kid": _metrics.kid(real["features"], f_fake, seed=seed, subset_size=_KID_SUBSET,
                               num_subsets=_KID_SUBSETS if n > _KID_SUBSET else 1)}
    out.update(_metrics.precision_recall(real["features"], f_fake, k=3))
    out.update(_metrics.density_coverage(real["features"], f_fake, k=5))
    out["class_hist_kl"] = (_metrics.class_histogram_kl(np.argmax(logits, axis=1), real["labels"],
                                                        clf.num_classes)
                            if labelled else None)
    acc = clf.info.get("test_accuracy")
    out["classifier_accuracy"] = None if acc is None else float(acc)
    out["n"] = int(n)
    return out


# ---------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------

def _sampling_network(gan):
    """The network ``gan.sample`` runs: the EMA generator when there is one."""
    ema = getattr(gan, "g_ema", None)
    return gan.generator if ema is None else ema


def _sampling_peak_bytes(gan, batch):
    """Peak NumPy memory of one cold sampling forward pass of ``batch`` samples.

    A fresh copy of the sampling generator (so no cached buffer is reused) runs
    one eval-mode forward under tracemalloc; NumPy reports its array allocations
    to tracemalloc, so the peak covers activations, the im2col workspace and the
    output. The weights and the noise exist before and are not counted.
    """
    from .nn import Network

    src = _sampling_network(gan)
    net = Network(src.spec, src.input_shape, spectral_norm=src.spectral_norm)
    net.copy_from(src)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((batch,) + tuple(src.input_shape)).astype(np.float32)
    labels = None
    if net.needs_labels:
        labels = rng.integers(0, int(gan.num_classes), batch)
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        net.forward(z, labels, train=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return max(0, int(peak - base))


def profile(gan, repeats=7, batch_sizes=(1, 256)):
    """Cost of a generator: size, compute, sampling latency and memory.

    Parameters
    ----------
    gan : GAN
        Anything with ``generator`` and ``discriminator`` networks and
        ``sample(n, seed=, batch_size=)`` (sampling uses the EMA generator when
        there is one).
    repeats : int
        Timed calls per batch size; the median is reported (after one untimed
        warm-up call, which allocates the cached buffers and refreshes the EMA
        generator's batch-norm statistics).
    batch_sizes : sequence of int
        Batch sizes timed (``latency_ms_b<size>`` keys).

    Returns
    -------
    dict
        ``generator_params``, ``discriminator_params`` (trainable parameters);
        ``generator_macs``, ``discriminator_macs`` (multiply-accumulates per
        sample of one forward); ``latency_ms_b<size>`` (median wall time of
        ``gan.sample(size, seed=0, batch_size=size)``, noise drawing included,
        in milliseconds, with the thread count in effect);
        ``samples_per_s`` (at the largest batch size);
        ``generator_bytes`` (G's float32 parameters and buffers);
        ``peak_memory_bytes`` (peak NumPy allocation of one cold sampling
        forward at the largest batch size, measured with tracemalloc:
        activations, workspace and output, weights and noise excluded; memory
        OpenBLAS or the C core allocate internally is not seen);
        ``repeats``; ``threads`` (BLAS threads in effect, see
        :func:`distgan.ops.set_num_threads`).
    """
    for attr in ("generator", "discriminator", "sample"):
        if not hasattr(gan, attr):
            raise TypeError(f"profile needs a GAN (with .{attr}), got {type(gan).__name__}")
    if isinstance(repeats, bool) or not isinstance(repeats, numbers.Integral) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 1
                        for b in sizes):
        raise ValueError(f"batch_sizes must be positive ints, got {batch_sizes!r}")
    G, D = gan.generator, gan.discriminator
    out = {"generator_params": int(G.num_params), "discriminator_params": int(D.num_params),
           "generator_macs": int(G.macs), "discriminator_macs": int(D.macs)}
    for b in sizes:
        gan.sample(b, seed=0, batch_size=b)       # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            gan.sample(b, seed=0, batch_size=b)
            times.append(time.perf_counter() - t0)
        out[f"latency_ms_b{b}"] = 1e3 * statistics.median(times)
    bmax = max(sizes)
    out["samples_per_s"] = bmax / (out[f"latency_ms_b{bmax}"] / 1e3)
    src = _sampling_network(gan)
    out["generator_bytes"] = int(src.params.nbytes + src.buffers.nbytes)
    out["peak_memory_bytes"] = _sampling_peak_bytes(gan, bmax)
    out["repeats"] = int(repeats)
    out["threads"] = int(_ops.get_num_threads())
    return out
