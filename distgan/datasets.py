"""Data sets for distgan: find, check and load them, then hand out seeded batches.

Everything here ends in a :class:`Dataset` whose ``images`` are float32 in [-1, 1]
(NCHW for pictures, ``(N, D)`` for point data) and whose ``labels`` are int64 or None.
:func:`load` reads

* ``"fashion-mnist"`` (aliases ``"fashion_mnist"``, ``"fmnist"``) and ``"mnist"``: the IDX
  files, gzipped or not, under their official names (``train-images-idx3-ubyte.gz``, ...),
  searched for in this order:

  1. ``$DISTGAN_DATA/<name>/`` and then ``$DISTGAN_DATA/`` itself;
  2. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``;
     Fashion-MNIST only);
  3. ``~/.cache/distgan/<name>/``;
  4. a download from the data set's official address into that cache folder, checked
     against the SHA-256 sums recorded below (``urllib``, :data:`DOWNLOAD_TIMEOUT` seconds
     per socket operation). When this fails too, :class:`DatasetNotFoundError` lists every
     place that was tried and how to get the files. A copy found somewhere but
     malformed raises :class:`DatasetError` at once instead of falling through.

* a folder path holding IDX files under the official names;
* ``.npz`` / ``.npy`` arrays (rules in :func:`from_arrays`);
* a folder of images (Pillow), labelled by sorted subfolder names when there are any;
* a CIFAR-10 "python version" folder (``data_batch_1`` ... ``data_batch_5``, ``test_batch``);
* the 2-D toy sets ``"ring8"`` and ``"grid25"`` of the mode-collapse benchmark, generated
  here (``n=``, ``seed=``), with the mixture's ``centers`` and ``sigma`` on the Dataset.

Malformed files raise :class:`DatasetError` (a ``ValueError``) naming the file and what is
wrong. Sizes a header declares are checked against what the file actually holds before
anything of that size is allocated: uncompressed files against their size on disk, gzip
files by a bounded, chunked decompression, so a 100-byte file claiming 10^9 images is
rejected at once.

Image pixels: uint8 ``v`` maps to ``v / 127.5 - 1`` (0 -> -1, 255 -> +1). Image data sets
keep their uint8 array (``Dataset.raw``) and convert it to float32 once, on first use of
``Dataset.images``.
"""
import codecs
import gzip
import hashlib
import http.client
import io
import math
import os
import pickle
import re
import tempfile
import urllib.request
import zipfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "DatasetError",
    "DatasetNotFoundError",
    "load",
    "from_arrays",
    "DOWNLOAD_TIMEOUT",
    "NAMES",
]


class DatasetError(ValueError):
    """A data file or array is malformed or not what distgan expects.

    The message names the file (or array) and what is wrong with it.
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A named data set is in none of the places distgan looks, and could not be downloaded.

    The message lists every place searched, why each failed, and how to get the files.
    It is both a :class:`DatasetError` and a ``FileNotFoundError``.
    """


# ---------------------------------------------------------------------------------------
# Official files and their checksums.

#: Seconds each socket operation of a download may take before it is given up.
DOWNLOAD_TIMEOUT = 5.0

FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# Fashion-MNIST as served by its official host: file -> (bytes, SHA-256). These are the
# sums published for the official files (the Fashion-MNIST README lists their MD5s
# 8d4fb7e6..., 25c81989..., bef4ecab..., bb300cfd...). Debian's dataset-fashion-mnist
# ships the same deflate streams re-wrapped without the gzip header's file-name field:
# each of its files is shorter by exactly len(name) + 1 bytes and so has other sums
# (see _FASHION_MNIST_DEBIAN_GZ_SHA256); the decompressed IDX bytes are what they share.
_FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte.gz":
        (26421880, "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
    "train-labels-idx1-ubyte.gz":
        (29515, "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
    "t10k-images-idx3-ubyte.gz":
        (4422102, "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
    "t10k-labels-idx1-ubyte.gz":
        (5148, "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
}

# SHA-256 of the decompressed IDX files (header included), computed with sha256sum from
# the files of Debian's dataset-fashion-mnist 2020-06-05. The tests check the loader
# against them, byte for byte.
_FASHION_MNIST_IDX_SHA256 = {
    "train-images-idx3-ubyte":
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte":
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

# SHA-256 of the .gz files as Debian's dataset-fashion-mnist installs them (sha256sum on
# this package's files). Recorded for reference; a download is checked against
# _FASHION_MNIST_FILES.
_FASHION_MNIST_DEBIAN_GZ_SHA256 = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}

# MNIST: file -> (bytes, SHA-256) of the original LeCun files, which the ossci mirror
# serves unchanged (torchvision checks the same files by MD5 f68b3c2d..., d53e105e...,
# 9fb629c4..., ec29112d...). These sums are the widely published ones (TensorFlow
# Datasets and others agree); they could not be recomputed on a machine without the
# files. Files found locally are checked by their IDX headers and sizes only.
_MNIST_FILES = {
    "train-images-idx3-ubyte.gz":
        (9912422, "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "train-labels-idx1-ubyte.gz":
        (28881, "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "t10k-images-idx3-ubyte.gz":
        (1648877, "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "t10k-labels-idx1-ubyte.gz":
        (4542, "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}

# split -> (images file, labels file), official names without ".gz".
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

_NAMED = {
    "fashion-mnist": {
        "title": "Fashion-MNIST",
        "url": FASHION_MNIST_URL,
        "files": _FASHION_MNIST_FILES,
        "apt": "dataset-fashion-mnist",
        "class_names": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    },
    "mnist": {
        "title": "MNIST",
        "url": MNIST_URL,
        "files": _MNIST_FILES,
        "apt": None,
        "class_names": tuple(str(d) for d in range(10)),
    },
}

#: Where Debian packages install a named data set (monkeypatched by the tests).
DEBIAN_DIRS = {"fashion-mnist": Path("/usr/share/datasets/fashion-mnist")}

_ALIASES = {
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
    "fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
    "mnist": "mnist",
    "ring8": "ring8", "grid25": "grid25",
}

#: Every name :func:`load` accepts, aliases included.
NAMES = tuple(_ALIASES)

#: Default number of samples of a toy set.
TOY_DEFAULT_N = 100_000

_SPLITS = ("train", "test")


def _u8_to_float(a):
    """uint8 -> float32 in [-1, 1]: ``v / 127.5 - 1`` in float32, so 0 -> -1, 255 -> +1.

    In place on the float copy: ten times faster than a 256-entry lookup table on
    Fashion-MNIST, with identical values.
    """
    x = a.astype(np.float32)
    x /= np.float32(127.5)
    x -= np.float32(1.0)
    return x


# ---------------------------------------------------------------------------------------
# The Dataset.

def _readonly(a):
    """A read-only view of ``a`` (the caller's array keeps its own flags)."""
    v = a.view()
    v.flags.writeable = False
    return v


def _is_int(x):
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


class Dataset:
    """Images (or 2-D points) with optional integer labels, and seeded batches of them.

    Parameters
    ----------
    images : ndarray
        Either uint8 pictures ``(N, C, H, W)`` with values 0..255, kept as ``raw`` and
        mapped to float32 ``v / 127.5 - 1`` on first use of ``images``; or a float array,
        taken as float32 as it is: ``(N, C, H, W)`` in [-1, 1] or ``(N, D)`` points.
        To bring other layouts or value ranges in, use :func:`from_arrays`.
    labels : ndarray of int, shape (N,), optional
        Class indices, ``0 <= label < num_classes``; stored as int64.
    name : str
        Short name (``"fashion-mnist"``, ``"ring8"``, a file name, ...).
    split : str, optional
        ``"train"`` or ``"test"`` when the source has splits.
    num_classes : int, optional
        Number of classes; ``max(labels) + 1`` when not given and labels exist.
    class_names : sequence of str, optional
        One name per class.
    centers : ndarray, shape (K, D), optional
        Mixture centres of a toy set (mode ``k`` of label ``k``).
    sigma : float, optional
        Standard deviation of each mixture component of a toy set.
    source : str, optional
        Where the data came from (a path), for messages.

    Attributes
    ----------
    images : ndarray, float32, read-only
    labels : ndarray of int64, read-only, or None
    raw : ndarray of uint8, read-only, or None
    num_classes, class_names, image_shape, name, split, centers, sigma, checksum

    Notes
    -----
    The arrays are read-only views; do not modify the array passed in afterwards, or
    ``checksum`` (cached) will no longer describe the data.
    """

    def __init__(self, images, labels=None, *, name="data", split=None, num_classes=None,
                 class_names=None, centers=None, sigma=None, source=None):
        arr = np.asarray(images)
        if arr.ndim not in (2, 4):
            raise DatasetError(f"{name}: images must be (N, C, H, W) pictures or (N, D) "
                               f"points, got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise DatasetError(f"{name}: holds no samples")
        if arr.dtype == np.uint8:
            if arr.ndim != 4:
                raise DatasetError(f"{name}: uint8 images must be (N, C, H, W), got shape "
                                   f"{arr.shape}")
            self._raw = _readonly(np.ascontiguousarray(arr))
            self._images = None
        elif arr.dtype.kind == "f":
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            if not np.isfinite(arr).all():
                raise DatasetError(f"{name}: images contain NaN or infinity")
            self._raw = None
            self._images = _readonly(arr)
        else:
            raise DatasetError(f"{name}: images must be uint8 or float, got {arr.dtype} "
                               "(see distgan.datasets.from_arrays for other inputs)")
        n = arr.shape[0]

        if labels is not None:
            lab = np.asarray(labels)
            if lab.dtype.kind not in "iu":
                raise DatasetError(f"{name}: labels must be integers, got {lab.dtype}")
            if lab.shape != (n,):
                raise DatasetError(f"{name}: {n} images but labels of shape {lab.shape}")
            lab = np.ascontiguousarray(lab, dtype=np.int64)
            lo, hi = int(lab.min()), int(lab.max())
            if lo < 0:
                raise DatasetError(f"{name}: negative label {lo}")
            if num_classes is None:
                num_classes = hi + 1
            elif not _is_int(num_classes) or num_classes < 1:
                raise DatasetError(f"{name}: num_classes must be a positive int, "
                                   f"got {num_classes!r}")
            elif hi >= num_classes:
                raise DatasetError(f"{name}: label {hi} out of range for {num_classes} "
                                   f"classes (0..{num_classes - 1})")
            self._labels = _readonly(lab)
            self.num_classes = int(num_classes)
        else:
            self._labels = None
            self.num_classes = None if num_classes is None else int(num_classes)
        if class_names is not None:
            class_names = tuple(str(c) for c in class_names)
            if self.num_classes is not None and len(class_names) != self.num_classes:
                raise DatasetError(f"{name}: {len(class_names)} class names for "
                                   f"{self.num_classes} classes")
        self.class_names = class_names
        self.name = str(name)
        self.split = split
        self.source = source
        self.centers = None if centers is None else _readonly(np.asarray(centers, np.float64))
        self.sigma = None if sigma is None else float(sigma)
        self._checksum = None

    # -- data ---------------------------------------------------------------------------
    @property
    def images(self):
        """float32 array, read-only: ``(N, C, H, W)`` in [-1, 1], or ``(N, D)`` points."""
        if self._images is None:
            self._images = _readonly(_u8_to_float(self._raw))   # the one conversion
        return self._images

    @property
    def labels(self):
        """int64 array ``(N,)``, read-only, or None."""
        return self._labels

    @property
    def raw(self):
        """The uint8 pixels ``(N, C, H, W)`` of an image data set (read-only), else None."""
        return self._raw

    @property
    def image_shape(self):
        """Shape of one sample: ``(C, H, W)`` for pictures, ``(D,)`` for points."""
        store = self._raw if self._raw is not None else self._images
        return tuple(int(s) for s in store.shape[1:])

    def __len__(self):
        store = self._raw if self._raw is not None else self._images
        return int(store.shape[0])

    def __repr__(self):
        parts = [repr(self.name)]
        if self.split is not None:
            parts.append(f"split={self.split!r}")
        parts += [f"n={len(self)}", f"image_shape={self.image_shape}",
                  f"num_classes={self.num_classes}"]
        if self.sigma is not None:
            parts.append(f"sigma={self.sigma}")
        return f"Dataset({', '.join(parts)})"

    @property
    def checksum(self):
        """SHA-256 (hex) of the data: key for caches of results computed on it.

        Hashes a small header (format tag, dtype, shape), the stored image bytes (the
        uint8 ``raw`` for image data sets, the little-endian float32 ``images``
        otherwise) and the labels as little-endian int64 (or a marker for "no labels").
        Equal data gives equal sums whatever file it was loaded from.
        """
        if self._checksum is None:
            store = self._raw if self._raw is not None else self._images
            store = np.ascontiguousarray(store, dtype=store.dtype.newbyteorder("<"))
            h = hashlib.sha256()
            h.update(f"distgan.datasets v1 {store.dtype.str} {store.shape}\n".encode())
            h.update(store)
            if self._labels is None:
                h.update(b"no labels")
            else:
                h.update(b"labels\n")
                h.update(np.ascontiguousarray(self._labels, dtype="<i8"))
            self._checksum = h.hexdigest()
        return self._checksum

    # -- views and batches ----------------------------------------------------------------
    def _take(self, index, name):
        """A Dataset over ``index`` (slice or sorted int array) sharing this one's metadata."""
        new = object.__new__(Dataset)
        new.__dict__.update(self.__dict__)
        new._raw = None if self._raw is None else _readonly(self._raw[index])
        new._images = None if self._images is None else _readonly(self._images[index])
        new._labels = None if self._labels is None else _readonly(self._labels[index])
        new.name = name
        new._checksum = None
        return new

    def subset(self, n, seed=None):
        """The first ``n`` samples, or ``n`` drawn without replacement when seeded.

        Parameters
        ----------
        n : int
            Number of samples, ``1 <= n <= len(self)``.
        seed : int, optional
            None: the first ``n`` samples in file order. An int: ``n`` samples chosen by
            ``np.random.default_rng(seed)``, kept in file order.

        Returns
        -------
        Dataset
            Shares arrays (views) and ``num_classes``, ``class_names``, ``centers``,
            ``sigma`` with this one.
        """
        if not _is_int(n) or not 1 <= n <= len(self):
            raise ValueError(f"subset: n must be an int in [1, {len(self)}], got {n!r}")
        if seed is None:
            return self._take(slice(0, int(n)), self.name)
        idx = np.sort(np.random.default_rng(seed).choice(len(self), int(n), replace=False))
        return self._take(idx, self.name)

    def batches(self, batch_size, seed, epoch, drop_last=True):
        """Iterate over one epoch of shuffled ``(images, labels)`` batches.

        Parameters
        ----------
        batch_size : int
            Samples per batch.
        seed : int
            Non-negative run seed.
        epoch : int
            Non-negative epoch number. The order is the permutation drawn by
            ``np.random.default_rng([seed, epoch])``, so it depends on nothing else: a run
            resumed at epoch ``e`` sees exactly the batches it would have seen.
        drop_last : bool, default True
            Drop the final batch when it would be smaller than ``batch_size``.

        Returns
        -------
        iterator of (ndarray, ndarray or None)
            ``images[idx]`` (float32, a fresh writeable copy) and ``labels[idx]`` (int64)
            or None for unlabelled data.

        Raises
        ------
        ValueError
            For a bad argument, or ``drop_last`` with ``batch_size > len(self)`` (which
            would give an empty epoch).
        """
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        for arg, val in (("seed", seed), ("epoch", epoch)):
            if not _is_int(val) or val < 0:
                raise ValueError(f"{arg} must be a non-negative int, got {val!r}")
        n = len(self)
        if drop_last and batch_size > n:
            raise ValueError(f"batch_size {batch_size} is larger than the data set ({n} "
                             "samples): with drop_last=True an epoch would have no batch")
        perm = np.random.default_rng([int(seed), int(epoch)]).permutation(n)
        stop = n - n % batch_size if drop_last else n
        return _iter_batches(self.images, self._labels, perm, int(batch_size), stop)


def _iter_batches(images, labels, perm, batch_size, stop):
    for start in range(0, stop, batch_size):
        idx = perm[start:start + batch_size]
        yield images[idx], (None if labels is None else labels[idx])


# ---------------------------------------------------------------------------------------
# Arrays (.npz / .npy and in-memory).

_VALUE_RANGES = {(0, 1): (0.0, 1.0), (-1, 1): (-1.0, 1.0), (0, 255): (0.0, 255.0)}
_RANGE_TOL = 1e-5


def from_arrays(images, labels=None, *, name="arrays", layout=None, value_range=None,
                num_classes=None, class_names=None, split=None, source=None):
    """A :class:`Dataset` from arrays, with the layout and value range worked out.

    Parameters
    ----------
    images : array_like
        By number of dimensions:

        * 2-D ``(N, D)``: points or vectors, kept as they are (cast to float32; no
          rescaling of floats unless ``value_range`` is given).
        * 3-D ``(N, H, W)``: grayscale pictures, become ``(N, 1, H, W)``.
        * 4-D: NCHW or NHWC. The channel axis is the one of axes 1 and 3 whose length is
          1, 3 or 4 while the other's is not (``(N, 28, 28, 1)`` is NHWC,
          ``(N, 3, 32, 32)`` NCHW). When both or neither qualify, pass ``layout``.

        By dtype:

        * integers (uint8 or any integer type with values in 0..255): 0..255 pixels,
          mapped to [-1, 1] by ``v / 127.5 - 1``;
        * floats (3-D/4-D), by the rule: all values in [0, 1] -> taken as [0, 1] and mapped
          by ``2 v - 1``; else all values in [-1, 1] -> taken as [-1, 1]; else an error.
          So a [-1, 1] array that happens to have no negative value is read as [0, 1]:
          pass ``value_range=(-1, 1)`` to say so. Values 1e-5 outside the range are
          clipped.
    labels : array_like of int, shape (N,), optional
    name : str
    layout : {None, "NCHW", "NHWC"}
        Layout of a 4-D array; None detects it as above.
    value_range : {None, (0, 1), (-1, 1), (0, 255)}
        Range of float values; None applies the rule above (and leaves 2-D floats as they
        are).
    num_classes, class_names, split, source
        Passed to :class:`Dataset`.

    Returns
    -------
    Dataset

    Raises
    ------
    DatasetError
        For shapes, dtypes or values that fit none of the rules.
    """
    x = np.asarray(images)
    where = source or name
    if layout is not None:
        layout = str(layout).upper()
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be None, 'NCHW' or 'NHWC', got {layout!r}")
    if value_range is not None:
        key = tuple(value_range) if np.ndim(value_range) == 1 else None
        if key not in _VALUE_RANGES:
            raise ValueError("value_range must be None, (0, 1), (-1, 1) or (0, 255), got "
                             f"{value_range!r}")
        value_range = _VALUE_RANGES[key]

    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4:
        if layout is None:
            c1, c3 = x.shape[1] in (1, 3, 4), x.shape[3] in (1, 3, 4)
            if c1 == c3:
                raise DatasetError(f"{where}: cannot tell the channel axis of images of shape "
                                   f"{x.shape} (channels are 1, 3 or 4 on axis 1 for NCHW "
                                   "or axis 3 for NHWC); pass layout='NCHW' or 'NHWC'")
            layout = "NCHW" if c1 else "NHWC"
        if layout == "NHWC":
            x = x.transpose(0, 3, 1, 2)
    elif x.ndim != 2:
        raise DatasetError(f"{where}: images must have 2, 3 or 4 dimensions "
                           f"((N, D), (N, H, W), NCHW or NHWC), got shape {x.shape}")
    if x.shape[0] == 0:
        raise DatasetError(f"{where}: holds no samples")

    if x.dtype.kind in "iu":
        if value_range not in (None, (0.0, 255.0)):
            raise DatasetError(f"{where}: integer images are 0..255 pixels; value_range "
                               f"{value_range} applies to float arrays only")
        if x.dtype != np.uint8:
            lo, hi = int(x.min()), int(x.max())
            if lo < 0 or hi > 255:
                raise DatasetError(f"{where}: integer images must lie in 0..255, got "
                                   f"{lo}..{hi}")
            x = x.astype(np.uint8)
        if x.ndim == 2:   # uint8 points: map like pixels, keep (N, D)
            x = _u8_to_float(x)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
        if not np.isfinite(x).all():
            raise DatasetError(f"{where}: images contain NaN or infinity")
        if x.ndim == 4 or value_range is not None:
            x = _float_to_unit_range(x, value_range, where)
    else:
        raise DatasetError(f"{where}: images must be integer (0..255) or float, got {x.dtype}")

    if labels is not None:
        lab = np.asarray(labels)
        if lab.dtype.kind not in "iu":
            raise DatasetError(f"{where}: labels must be integers, got {lab.dtype}"
                               + (" (one-hot labels? pass their argmax)" if lab.ndim == 2
                                  else ""))
        if lab.ndim != 1 or lab.shape[0] != x.shape[0]:
            raise DatasetError(f"{where}: {x.shape[0]} images but labels of shape "
                               f"{lab.shape}")
        labels = lab
    return Dataset(np.ascontiguousarray(x), labels, name=name, split=split,
                   num_classes=num_classes, class_names=class_names, source=source)


def _float_to_unit_range(x, value_range, where):
    """float32 ``x`` mapped into [-1, 1] by the rule of :func:`from_arrays`."""
    lo, hi = float(x.min()), float(x.max())
    if value_range is None:
        if lo >= -_RANGE_TOL and hi <= 1 + _RANGE_TOL:
            value_range = (0.0, 1.0)
        elif lo >= -1 - _RANGE_TOL and hi <= 1 + _RANGE_TOL:
            value_range = (-1.0, 1.0)
        else:
            raise DatasetError(f"{where}: float images must lie in [0, 1] or [-1, 1], got "
                               f"[{lo:g}, {hi:g}] (0..255 pixels: store them as uint8 or "
                               "pass value_range=(0, 255))")
    a, b = value_range
    tol = _RANGE_TOL * (b - a)
    if lo < a - tol or hi > b + tol:
        raise DatasetError(f"{where}: values [{lo:g}, {hi:g}] lie outside the declared "
                           f"value_range ({a:g}, {b:g})")
    if (a, b) != (-1.0, 1.0):
        x = x * np.float32(2.0 / (b - a)) - np.float32(1.0 + 2.0 * a / (b - a))
        return np.clip(x, -1.0, 1.0, out=x)         # x is our own array here
    return np.clip(x, -1.0, 1.0) if lo < -1.0 or hi > 1.0 else x


# npz keys, most specific first ({s} is the split).
_IMAGE_KEYS = ("x_{s}", "images_{s}", "X_{s}", "x", "images", "X", "data", "arr_0")
_LABEL_KEYS = ("y_{s}", "labels_{s}", "Y_{s}", "y", "labels", "Y", "targets", "arr_1")


def _check_npy_header(fp, total, where):
    """Read a .npy header from ``fp`` (``total`` bytes long); refuse data it can't hold."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fp)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(fp)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{where}: not a valid .npy array ({e})") from e
    if dtype.hasobject:
        raise DatasetError(f"{where}: holds Python objects (dtype {dtype}); only plain "
                           "numeric arrays are read (allow_pickle=False)")
    need = math.prod(shape) * dtype.itemsize
    available = total - fp.tell()
    if need > available:
        raise DatasetError(f"{where}: header declares shape {shape} of {dtype} "
                           f"({need} bytes) but only {available} bytes follow")


def _load_arrays(path, split, layout, value_range):
    """Dataset from a .npy (images only) or .npz (images and labels) file."""
    name = path.stem
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as f:
                _check_npy_header(f, path.stat().st_size, str(path))
            if split != "train":
                raise DatasetError(f"{path}: a .npy file has no {split!r} split")
            images = np.load(path, allow_pickle=False)
            return from_arrays(images, None, name=name, layout=layout,
                               value_range=value_range, source=str(path))
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                with z.open(info) as member:
                    _check_npy_header(member, info.file_size, f"{path}:{info.filename}")
        with np.load(path, allow_pickle=False) as npz:
            keys = list(npz.files)
            ikey = _pick_key(keys, _IMAGE_KEYS, split, path, "images")
            lkey = _pick_key(keys, _LABEL_KEYS, split, path, "labels", optional=True)
            if ikey == lkey:
                lkey = None
            images = npz[ikey]
            labels = None if lkey is None else npz[lkey]
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read ({e})") from e
    return from_arrays(images, labels, name=name, layout=layout, value_range=value_range,
                       split=split, source=str(path))


def _pick_key(keys, patterns, split, path, what, optional=False):
    """The npz key holding ``what`` for ``split`` (see _IMAGE_KEYS / _LABEL_KEYS)."""
    has_splits = any(k.endswith(("_train", "_test")) for k in keys)
    for pat in patterns:
        if "{s}" not in pat and has_splits:
            continue       # a split file: only the split's own keys count
        key = pat.format(s=split)
        if key in keys:
            return key
    if what == "images" and not has_splits and len(keys) == 1:
        return keys[0]
    if optional:
        return None
    if has_splits:
        raise DatasetError(f"{path}: no {what} for split {split!r} (keys: {keys})")
    raise DatasetError(f"{path}: no {what} array; name it one of "
                       f"{[p for p in patterns if '{s}' not in p]} (keys: {keys})")


# ---------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST).

_GZIP_MAGIC = b"\x1f\x8b"
_IDX_UBYTE = 0x08
_CHUNK = 1 << 22
# Deflate expands at most 1032:1 (zlib FAQ); a header claiming more than that cannot be
# honest and is refused before decompressing anything.
_MAX_DEFLATE_RATIO = 1032


def _read_idx(path, ndim, count=None, count_source=None):
    """Read an unsigned-byte IDX file (gzipped or not) as a uint8 array.

    Parameters
    ----------
    path : Path
    ndim : int
        Dimensions the header must declare (3 for images, 1 for labels).
    count : int, optional
        Number of items the first dimension must have (checked from the header, before
        reading any data).
    count_source : Path, optional
        The file ``count`` comes from, named in the mismatch message.
    """
    what = "images" if ndim == 3 else "labels"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            compressed = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if compressed:
                with gzip.GzipFile(fileobj=f, mode="rb") as g:
                    return _parse_idx(g, path, ndim, what, size, True, count, count_source)
            return _parse_idx(f, path, ndim, what, size, False, count, count_source)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read IDX {what} file, truncated or corrupt "
                           f"({type(e).__name__}: {e})") from e


def _parse_idx(stream, path, ndim, what, file_size, compressed, count, count_source):
    head = stream.read(4)
    if len(head) < 4:
        raise DatasetError(f"{path}: truncated: {len(head)} bytes where an IDX header "
                           "starts with 4")
    magic = int.from_bytes(head, "big")
    expected = (_IDX_UBYTE << 8) | ndim
    if head[:2] != b"\0\0":
        raise DatasetError(f"{path}: wrong magic number 0x{magic:08x}: not an IDX file "
                           f"(IDX {what} start with 0x{expected:08x})")
    if head[2] != _IDX_UBYTE:
        raise DatasetError(f"{path}: IDX element type 0x{head[2]:02x}; only unsigned bytes "
                           f"(0x08, magic 0x{expected:08x}) are supported")
    if head[3] != ndim:
        raise DatasetError(f"{path}: wrong magic number 0x{magic:08x}: {head[3]}-dimensional "
                           f"data where {what} need {ndim} (magic 0x{expected:08x})")
    raw_dims = stream.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DatasetError(f"{path}: truncated header ({4 + len(raw_dims)} of "
                           f"{4 + 4 * ndim} bytes)")
    dims = tuple(int.from_bytes(raw_dims[4 * i:4 * i + 4], "big") for i in range(ndim))
    shape = " x ".join(map(str, dims))
    if 0 in dims:
        raise DatasetError(f"{path}: header declares an empty array ({shape})")
    if count is not None and dims[0] != count:
        raise DatasetError(f"count mismatch: {path} holds {dims[0]} {what} but "
                           f"{count_source} holds {count}")
    payload = math.prod(dims)
    header = 4 + 4 * ndim
    if not compressed:
        actual = file_size - header
        if actual != payload:
            why = "truncated" if actual < payload else "extra bytes after the data"
            raise DatasetError(f"{path}: header declares {shape} = {payload} bytes of data "
                               f"but the file holds {actual} ({why})")
        buf = bytearray(payload)
        if stream.readinto(buf) != payload:
            raise DatasetError(f"{path}: file shrank while being read")
        return np.frombuffer(buf, dtype=np.uint8).reshape(dims)
    if payload + header > _MAX_DEFLATE_RATIO * file_size + 1024:
        raise DatasetError(f"{path}: header declares {shape} = {payload} bytes of data, "
                           f"more than a {file_size}-byte gzip file can hold")
    chunks, got = [], 0
    while got < payload:                    # bounded reads: never more than is there
        chunk = stream.read(min(payload - got, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    if got < payload:
        raise DatasetError(f"{path}: truncated: header declares {shape} = {payload} bytes "
                           f"of data but the file decompresses to {got}")
    if stream.read(1):                      # also makes gzip check its CRC
        raise DatasetError(f"{path}: extra data after the {payload} bytes the header "
                           "declares")
    return np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(dims)


def _find_idx(folder, stem):
    """The file of official name ``stem`` in ``folder`` (.gz, plain, or '.idx' variant)."""
    dotted = stem.replace("-idx", ".idx")
    for cand in (stem + ".gz", stem, dotted + ".gz", dotted):
        p = folder / cand
        if p.is_file():
            return p
    return None


def _load_idx_pair(images_path, labels_path, *, name, split, num_classes=None,
                   class_names=None):
    labels = _read_idx(labels_path, 1)
    raw = _read_idx(images_path, 3, count=len(labels), count_source=labels_path)
    if num_classes is not None and int(labels.max()) >= num_classes:
        raise DatasetError(f"{labels_path}: label {int(labels.max())} out of range for "
                           f"{name} ({num_classes} classes)")
    return Dataset(raw[:, None, :, :], labels, name=name, split=split,
                   num_classes=num_classes, class_names=class_names,
                   source=str(images_path.parent))


def _search_places(key):
    """``[(description, folder or None), ...]`` searched for named set ``key``, in order."""
    places = []
    env = os.environ.get("DISTGAN_DATA", "")
    if env:
        base = Path(env).expanduser()
        places.append((f"$DISTGAN_DATA/{key}", base / key))
        places.append(("$DISTGAN_DATA", base))
    else:
        places.append(("$DISTGAN_DATA", None))
    debian = DEBIAN_DIRS.get(key)
    if debian is not None:
        places.append((f"Debian package {_NAMED[key]['apt']}", Path(debian)))
    places.append(("user cache", _cache_dir(key)))
    return places


def _cache_dir(key):
    return Path(os.path.expanduser("~")) / ".cache" / "distgan" / key


def _load_named_idx(key, split, download):
    spec = _NAMED[key]
    stems = _IDX_STEMS[split]
    notes = []
    for desc, folder in _search_places(key):
        if folder is None:
            notes.append(f"{desc}: not set")
            continue
        if not folder.is_dir():
            notes.append(f"{desc}: {folder}: no such folder")
            continue
        found = [_find_idx(folder, s) for s in stems]
        if all(found):
            return _load_idx_pair(found[0], found[1], name=key, split=split,
                                  num_classes=len(spec["class_names"]),
                                  class_names=spec["class_names"])
        missing = [s + "[.gz]" for s, p in zip(stems, found) if p is None]
        notes.append(f"{desc}: {folder}: no {' or '.join(missing)}")

    cache = _cache_dir(key)
    if download:
        try:
            for stem in stems:
                if _find_idx(cache, stem) is None:
                    fname = stem + ".gz"
                    size, sha = spec["files"][fname]
                    _download(spec["url"] + fname, cache / fname, size, sha)
        except _DownloadError as e:
            notes.append(f"download: {e}")
        else:
            return _load_idx_pair(_find_idx(cache, stems[0]), _find_idx(cache, stems[1]),
                                  name=key, split=split,
                                  num_classes=len(spec["class_names"]),
                                  class_names=spec["class_names"])
    else:
        notes.append("download: not tried (download=False)")

    how = []
    if spec["apt"]:
        how.append(f"apt-get install {spec['apt']}   (Debian/Ubuntu; installs the files in "
                   f"{DEBIAN_DIRS[key]})")
    how.append(f"set DISTGAN_DATA to a folder holding the files, or holding a subfolder "
               f"{key}/ with them")
    how.append(f"put the files in {cache}{os.sep}  (from {spec['url']})")
    lines = [f"{spec['title']} ({split!r} split) not found. distgan looked for "
             f"{stems[0]}[.gz] and {stems[1]}[.gz] in:"]
    lines += [f"  - {n}" for n in notes]
    lines.append("To get the files, do one of:")
    lines += [f"  - {h}" for h in how]
    raise DatasetNotFoundError("\n".join(lines))


class _DownloadError(Exception):
    pass


def _download(url, dest, size, sha256):
    """Fetch ``url`` to ``dest`` atomically, refusing anything but ``size`` bytes of ``sha256``."""
    tmp = None
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
            h, got = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > size:
                        raise _DownloadError(f"{url}: server sent more than the expected "
                                             f"{size} bytes")
                    h.update(chunk)
                    out.write(chunk)
        if got != size:
            raise _DownloadError(f"{url}: got {got} bytes, expected {size}")
        digest = h.hexdigest()
        if digest != sha256:
            raise _DownloadError(f"{url}: SHA-256 mismatch (got {digest}, expected "
                                 f"{sha256}); file discarded")
        os.replace(tmp, dest)
        tmp = None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise _DownloadError(f"{url}: failed ({type(e).__name__}: {e})") from e
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# ---------------------------------------------------------------------------------------
# CIFAR-10 python batches.

_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                  "dog", "frog", "horse", "ship", "truck")
_CIFAR_TRAIN = re.compile(r"data_batch_(\d+)")


def _pickle_allowlist():
    """The globals a CIFAR-10 batch pickle may name: numpy array reconstruction only."""
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = reconstruct
        allowed[(mod, "scalar")] = scalar
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(mod, "_frombuffer")] = frombuffer
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that resolves only numpy's array-rebuilding globals."""

    allowed = None

    def find_class(self, module, name):
        if _BatchUnpickler.allowed is None:
            _BatchUnpickler.allowed = _pickle_allowlist()
        obj = _BatchUnpickler.allowed.get((module, name))
        if obj is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a "
                                         "CIFAR-10 batch")
        return obj


def _unpickle(path):
    """Unpickle a CIFAR batch: a dict of numpy arrays and lists, nothing else.

    Pickle can run code: use it only on files you trust. This one is read whole (so a
    bogus length in it cannot make the reader allocate more than the file) and only
    numpy's array-rebuilding globals may be named in it.
    """
    try:
        data = path.read_bytes()
        obj = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, OSError, EOFError, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as e:
        raise DatasetError(f"{path}: not a CIFAR-10 batch pickle ({type(e).__name__}: "
                           f"{e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: a CIFAR-10 batch is a dict, got {type(obj).__name__}")
    return {(k.decode("latin-1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _load_cifar(folder, split):
    if split == "train":
        files = sorted((p for p in folder.iterdir() if _CIFAR_TRAIN.fullmatch(p.name)),
                       key=lambda p: int(_CIFAR_TRAIN.fullmatch(p.name).group(1)))
    else:
        files = [folder / "test_batch"] if (folder / "test_batch").is_file() else []
    if not files:
        want = "data_batch_1 ... data_batch_5" if split == "train" else "test_batch"
        raise DatasetError(f"{folder}: no CIFAR-10 {want} file for split {split!r}")
    class_names = _CIFAR_CLASSES
    if (folder / "batches.meta").is_file():
        names = _unpickle(folder / "batches.meta").get("label_names")
        if (not isinstance(names, list) or not names
                or not all(isinstance(s, (bytes, str)) for s in names)):
            raise DatasetError(f"{folder / 'batches.meta'}: label_names must be a list of "
                               "strings")
        class_names = tuple(s.decode("utf-8") if isinstance(s, bytes) else s for s in names)
    xs, ys = [], []
    for p in files:
        d = _unpickle(p)
        x, y = d.get("data"), d.get("labels")
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 \
                or x.shape[1] != 3 * 32 * 32:
            raise DatasetError(f"{p}: 'data' must be a uint8 array (N, 3072), got "
                               + (f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray)
                                  else type(x).__name__))
        if not isinstance(y, (list, np.ndarray)):
            raise DatasetError(f"{p}: 'labels' must be a list of ints, got "
                               f"{type(y).__name__}")
        if isinstance(y, list) and not all(_is_int(v) for v in y):
            raise DatasetError(f"{p}: 'labels' must be a list of ints")
        y = np.asarray(y)
        if y.shape != (x.shape[0],) or (y.size and y.dtype.kind not in "iu"):
            raise DatasetError(f"{p}: {x.shape[0]} images but {y.shape} labels")
        if y.size and (int(y.min()) < 0 or int(y.max()) >= len(class_names)):
            raise DatasetError(f"{p}: labels must be in 0..{len(class_names) - 1}, got "
                               f"{int(y.min())}..{int(y.max())}")
        xs.append(x.reshape(-1, 3, 32, 32))   # rows are R plane, G plane, B plane: NCHW
        ys.append(y.astype(np.int64))
    return Dataset(np.concatenate(xs), np.concatenate(ys), name="cifar10", split=split,
                   num_classes=len(class_names), class_names=class_names,
                   source=str(folder))


# ---------------------------------------------------------------------------------------
# Folders of images.

_IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff",
               ".ppm", ".pgm", ".pbm"}
_GRAY_MODES = {"1", "L", "LA"}
_COLOR_MODES = {"P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}


def _image_files(folder, recursive):
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in _IMAGE_EXTS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _load_image_folder(folder, split):
    """Dataset from a folder of images; subfolders (sorted by name) are the classes.

    A folder whose only subfolders are ``train/`` and/or ``test/`` is split by them.
    Grayscale modes ("1", "L", "LA") give 1 channel, colour modes 3 (alpha dropped); when
    both occur, grayscale images are repeated to 3 channels. All images must share one
    size.
    """
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    names = {d.name for d in subdirs}
    name = folder.name
    if subdirs and names <= set(_SPLITS):
        if split not in names:
            raise DatasetError(f"{folder}: no {split}/ subfolder")
        folder = folder / split
        subdirs = sorted(d for d in folder.iterdir()
                         if d.is_dir() and not d.name.startswith("."))
    elif split != "train":
        raise DatasetError(f"{folder}: has no {split!r} split (no train/ and test/ "
                           "subfolders)")
    if subdirs:
        files, labels = [], []
        for k, d in enumerate(subdirs):
            fs = _image_files(d, recursive=True)
            if not fs:
                raise DatasetError(f"{d}: class folder holds no images "
                                   f"({', '.join(sorted(_IMAGE_EXTS))})")
            files += fs
            labels += [k] * len(fs)
        class_names = tuple(d.name for d in subdirs)
    else:
        files, labels, class_names = _image_files(folder, recursive=False), None, None
    if not files:
        raise DatasetError(f"{folder}: no image files, IDX files or CIFAR-10 batches")

    try:
        from PIL import Image
    except ImportError as e:    # pragma: no cover - Pillow is a dependency
        raise ImportError("loading a folder of images needs Pillow: pip install pillow") from e

    arrays, shape0 = [], None
    for p in files:
        try:
            with Image.open(p) as im:
                if im.mode in _GRAY_MODES:
                    a = np.asarray(im.convert("L"))[None]
                elif im.mode in _COLOR_MODES:
                    a = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
                else:
                    raise DatasetError(f"{p}: unsupported image mode {im.mode!r} (8-bit "
                                       "grayscale or colour images only)")
        except DatasetError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise DatasetError(f"{p}: cannot read image ({type(e).__name__}: {e})") from e
        if shape0 is None:
            shape0 = (a.shape[1:], files[0])
        elif a.shape[1:] != shape0[0]:
            raise DatasetError(f"{p}: image is {a.shape[2]}x{a.shape[1]} but {shape0[1]} is "
                               f"{shape0[0][1]}x{shape0[0][0]}; all images must share one "
                               "size")
        arrays.append(a)
    channels = max(a.shape[0] for a in arrays)
    raw = np.empty((len(arrays), channels) + shape0[0], np.uint8)
    for i, a in enumerate(arrays):
        raw[i] = a          # broadcasts 1 -> 3 channels
    return Dataset(raw, labels, name=name, split=split,
                   num_classes=None if class_names is None else len(class_names),
                   class_names=class_names, source=str(folder))


# ---------------------------------------------------------------------------------------
# Toy 2-D mixtures.

def _ring8():
    # 8 modes equally spaced on a circle of radius 2, sigma 0.02 (VEEGAN, PacGAN).
    angles = 2.0 * np.pi * np.arange(8) / 8.0
    return 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1), 0.02


def _grid25():
    # 5 x 5 modes at {-4, -2, 0, 2, 4}^2, sigma 0.05 (VEEGAN, PacGAN); mode 5 i + j is
    # (x_i, y_j).
    g = np.arange(-4.0, 5.0, 2.0)
    xx, yy = np.meshgrid(g, g, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1), 0.05


_TOYS = {"ring8": _ring8, "grid25": _grid25}


def _load_toy(key, split, n, seed):
    if n is None:
        n = TOY_DEFAULT_N
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if seed is None:
        seed = 0
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    centers, sigma = _TOYS[key]()
    rng = np.random.default_rng([int(seed), _SPLITS.index(split)])
    labels = rng.integers(0, len(centers), size=int(n))
    points = centers[labels] + sigma * rng.standard_normal((int(n), 2))
    return Dataset(points.astype(np.float32), labels, name=key, split=split,
                   num_classes=len(centers), centers=centers, sigma=sigma)


# ---------------------------------------------------------------------------------------
# The entry point.

def load(name_or_path, split="train", *, n=None, seed=None, download=True, layout=None,
         value_range=None):
    """Load a data set by name or path.

    Parameters
    ----------
    name_or_path : str or os.PathLike
        A name (``"fashion-mnist"``, ``"fashion_mnist"``, ``"fmnist"``, ``"mnist"``,
        ``"ring8"``, ``"grid25"``; case-insensitive) or a path: a ``.npz``/``.npy`` file,
        a folder of IDX files under their official names, a CIFAR-10 python-batches folder
        (or its parent holding ``cifar-10-batches-py/``), or a folder of images. A string
        is taken as a name first: write ``"./mnist"`` (or pass a ``Path``) for a folder
        called ``mnist``.
    split : {"train", "test"}
        Which part. Sources without splits (a plain ``.npy``, an image folder without
        ``train/``/``test/``) only have ``"train"``.
    n : int, optional
        Toy sets: number of samples (default :data:`TOY_DEFAULT_N`). Other sets: keep the
        first ``n`` samples (:meth:`Dataset.subset`).
    seed : int, optional
        Toy sets only: seed of the samples (default 0). The split is part of the stream
        (``default_rng([seed, 0 or 1])``), so train and test samples differ.
    download : bool, default True
        Named IDX sets: whether to try the official address when no local copy is found.
    layout, value_range
        ``.npz``/``.npy`` only: see :func:`from_arrays`.

    Returns
    -------
    Dataset
        ``images`` float32 in [-1, 1] (NCHW; ``(n, 2)`` points for toy sets), ``labels``
        int64. Toy sets also carry ``centers`` (K, 2) and ``sigma``.

    Raises
    ------
    DatasetNotFoundError
        A named set is nowhere to be found and could not be downloaded; the message lists
        every place searched and how to get the files. Also for a path that does not exist.
    DatasetError
        A file is malformed (truncated, wrong magic, counts that disagree, sizes larger
        than the file, ...); the message names it and what is wrong.

    Examples
    --------
    >>> data = load("fashion-mnist")                    # doctest: +SKIP
    >>> data.images.shape, data.labels.shape            # doctest: +SKIP
    ((60000, 1, 28, 28), (60000,))
    >>> load("grid25", n=1000, seed=1).centers.shape
    (25, 2)
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got "
                        f"{type(name_or_path).__name__}")
    key = _ALIASES.get(name_or_path.strip().lower()) if isinstance(name_or_path, str) else None

    if key in _TOYS:
        if layout is not None or value_range is not None:
            raise TypeError("layout= and value_range= apply to .npz/.npy files only")
        return _load_toy(key, split, n, seed)
    if seed is not None:
        raise TypeError("seed= applies to the toy sets (ring8, grid25) only; "
                        "use Dataset.subset(n, seed=...) to sample real data")
    path = None if key is not None else Path(name_or_path).expanduser()
    is_array = path is not None and path.suffix.lower() in (".npz", ".npy")
    if (layout is not None or value_range is not None) and not is_array:
        raise TypeError("layout= and value_range= apply to .npz/.npy files only")
    if n is not None and (not _is_int(n) or n < 1):
        raise ValueError(f"n must be a positive int, got {n!r}")

    if key is not None:
        data = _load_named_idx(key, split, download)
    elif is_array and path.is_file():
        data = _load_arrays(path, split, layout, value_range)
    else:
        data = _load_path(path, split)
    if n is not None:
        data = data.subset(n)
    return data


def _load_path(path, split):
    if not path.exists():
        raise DatasetNotFoundError(
            f"{path}: no such file or folder (known names: {', '.join(NAMES)})")
    if path.is_file():
        raise DatasetError(f"{path}: unsupported file (load reads .npz/.npy files, or a "
                           "folder of IDX files, CIFAR-10 batches or images)")
    stems = _IDX_STEMS[split]
    found = [_find_idx(path, s) for s in stems]
    if any(found) or any(_find_idx(path, s) for st in _IDX_STEMS.values() for s in st):
        if not all(found):
            missing = [s + "[.gz]" for s, p in zip(stems, found) if p is None]
            raise DatasetError(f"{path}: IDX folder without {' or '.join(missing)} for "
                               f"split {split!r}")
        return _load_idx_pair(found[0], found[1], name=path.resolve().name, split=split)
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"
    if any(_CIFAR_TRAIN.fullmatch(p.name) for p in path.iterdir()) or \
            (path / "test_batch").is_file():
        return _load_cifar(path, split)
    return _load_image_folder(path, split)
