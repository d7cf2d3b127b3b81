"""Tests of distgan.datasets: the loaders, the search order, malformed files, Dataset.

Fast (a few seconds) and offline: an autouse fixture replaces urllib.request.urlopen, so no
test can reach the network, and points HOME and DISTGAN_DATA at empty temporary folders.
The Fashion-MNIST tests use Debian's dataset-fashion-mnist package (CI installs it) and
skip with a reason where it is absent; everything else runs on small files made here.
"""
import gzip
import hashlib
import io
import os
import pickle
import struct
import time
import tracemalloc
import urllib.error
import urllib.request

import numpy as np
import pytest

from distgan import datasets
from distgan.datasets import Dataset, DatasetError, DatasetNotFoundError

DEBIAN = "/usr/share/datasets/fashion-mnist"
needs_debian = pytest.mark.skipif(
    not os.path.isfile(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz")),
    reason=f"Debian package dataset-fashion-mnist is not installed ({DEBIAN} missing): "
           "apt-get install dataset-fashion-mnist")


# ---------------------------------------------------------------------------------------
# Helpers and fixtures.

class NoNetwork:
    """Stands in for urllib.request.urlopen: records each call and fails like no network."""

    def __init__(self):
        self.calls = []

    def __call__(self, url, *args, timeout=None, **kwargs):
        self.calls.append((url, timeout))
        raise urllib.error.URLError("network disabled in the tests")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """Every test: no network, an empty HOME, no DISTGAN_DATA."""
    fake = NoNetwork()
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DISTGAN_DATA", raising=False)
    return fake


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    """Pretend the Debian package is not installed."""
    monkeypatch.setitem(datasets.DEBIAN_DIRS, "fashion-mnist", tmp_path / "no-debian")


def idx_bytes(arr, dims=None, type_code=0x08):
    arr = np.asarray(arr, np.uint8)
    dims = arr.shape if dims is None else dims
    header = bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims)
    return header + arr.tobytes()


def write_idx(path, arr, gz=None, **kw):
    data = idx_bytes(arr, **kw)
    if gz is None:
        gz = str(path).endswith(".gz")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def make_idx_set(folder, n=30, split="train", gz=True, seed=0, hw=(5, 7), classes=10):
    """Write an IDX image/label pair under the official names; return (images, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n,) + hw, dtype=np.uint8)
    labels = (np.arange(n) % classes).astype(np.uint8)
    img_stem, lbl_stem = datasets._IDX_STEMS[split]
    ext = ".gz" if gz else ""
    write_idx(folder / (img_stem + ext), images, gz=gz)
    write_idx(folder / (lbl_stem + ext), labels, gz=gz)
    return images, labels


def peak_alloc(fn):
    """Peak traced allocation (bytes) while fn() runs; fn must raise DatasetError."""
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError) as info:
            fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak, info


# ---------------------------------------------------------------------------------------
# Fashion-MNIST from the Debian package.

@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """Fashion-MNIST train and test, found by name (Debian is the only place there)."""
    if not os.path.isfile(os.path.join(DEBIAN, "train-images-idx3-ubyte.gz")):
        pytest.skip(f"Debian package dataset-fashion-mnist is not installed ({DEBIAN} "
                    "missing): apt-get install dataset-fashion-mnist")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(urllib.request, "urlopen", NoNetwork())
        mp.setenv("HOME", str(tmp_path_factory.mktemp("home")))
        mp.delenv("DISTGAN_DATA", raising=False)
        return datasets.load("fashion-mnist"), datasets.load("fashion-mnist", split="test")


@needs_debian
def test_fashion_mnist_shapes_dtypes_range_and_classes(fashion):
    train, test = fashion
    for ds, n in ((train, 60000), (test, 10000)):
        assert len(ds) == n
        assert ds.images.shape == (n, 1, 28, 28) and ds.images.dtype == np.float32
        assert ds.raw.shape == (n, 1, 28, 28) and ds.raw.dtype == np.uint8
        assert ds.labels.shape == (n,) and ds.labels.dtype == np.int64
        assert ds.images.min() == -1.0 and ds.images.max() == 1.0
        assert ds.num_classes == 10 and ds.image_shape == (1, 28, 28)
        assert ds.name == "fashion-mnist"
        assert np.array_equal(np.bincount(ds.labels, minlength=10), np.full(10, n // 10))
        assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert train.split == "train" and test.split == "test"
    assert train.checksum != test.checksum
    assert "fashion-mnist" in repr(train) and "60000" in repr(train)


@needs_debian
def test_fashion_mnist_bytes_match_recorded_sums(fashion):
    """The loader returns the IDX payload byte for byte (sums recorded in datasets.py)."""
    sums = datasets._FASHION_MNIST_IDX_SHA256
    for ds, (img_stem, lbl_stem) in zip(fashion, (datasets._IDX_STEMS["train"],
                                                  datasets._IDX_STEMS["test"])):
        n = len(ds)
        img = idx_bytes(ds.raw[:, 0], dims=(n, 28, 28))
        lbl = idx_bytes(ds.labels.astype(np.uint8))
        assert hashlib.sha256(img).hexdigest() == sums[img_stem]
        assert hashlib.sha256(lbl).hexdigest() == sums[lbl_stem]
    # images are v / 127.5 - 1 of the raw bytes
    train = fashion[0]
    sl = slice(0, 500)
    assert np.array_equal(train.images[sl], train.raw[sl].astype(np.float32) / 127.5 - 1)


@needs_debian
def test_debian_gz_sums_are_the_recorded_ones():
    for fname, want in datasets._FASHION_MNIST_DEBIAN_GZ_SHA256.items():
        with open(os.path.join(DEBIAN, fname), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == want, fname


@needs_debian
def test_fashion_mnist_alias_and_folder_path_agree(fashion):
    test = fashion[1]
    by_alias = datasets.load("FMNIST", split="test")
    by_path = datasets.load(DEBIAN, split="test")
    assert by_alias.checksum == by_path.checksum == test.checksum
    assert by_path.num_classes == 10


# ---------------------------------------------------------------------------------------
# IDX folders, gzipped and not.

@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_gz_and_plain(tmp_path, gz):
    images, labels = make_idx_set(tmp_path / "d", n=30, gz=gz)
    make_idx_set(tmp_path / "d", n=12, split="test", gz=gz, seed=1)
    ds = datasets.load(tmp_path / "d")
    assert ds.raw.shape == (30, 1, 5, 7)
    assert np.array_equal(ds.raw[:, 0], images)
    assert np.array_equal(ds.labels, labels)
    assert ds.labels.dtype == np.int64 and ds.num_classes == 10 and ds.name == "d"
    assert ds.images.dtype == np.float32 and ds.images.shape == (30, 1, 5, 7)
    assert np.array_equal(ds.images, images[:, None].astype(np.float32) / 127.5 - 1)
    assert len(datasets.load(str(tmp_path / "d"), split="test")) == 12


def test_idx_gz_and_plain_give_the_same_checksum(tmp_path):
    make_idx_set(tmp_path / "a", gz=True)
    make_idx_set(tmp_path / "b", gz=False)
    assert datasets.load(tmp_path / "a").checksum == datasets.load(tmp_path / "b").checksum


def test_idx_folder_missing_split(tmp_path):
    make_idx_set(tmp_path / "d")
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte"):
        datasets.load(tmp_path / "d", split="test")


# ---------------------------------------------------------------------------------------
# Where named sets are looked for.

def test_resolution_order(tmp_path, monkeypatch):
    env = tmp_path / "env"
    debian = tmp_path / "debian"
    cache = tmp_path / "home" / ".cache" / "distgan" / "fashion-mnist"
    make_idx_set(env / "fashion-mnist", n=11)
    make_idx_set(env, n=12)
    make_idx_set(debian, n=13)
    make_idx_set(cache, n=14)
    monkeypatch.setitem(datasets.DEBIAN_DIRS, "fashion-mnist", debian)
    monkeypatch.setenv("DISTGAN_DATA", str(env))
    assert len(datasets.load("fashion-mnist")) == 11          # $DISTGAN_DATA/<name>
    for f in (env / "fashion-mnist").iterdir():
        f.unlink()
    assert len(datasets.load("fashion_mnist")) == 12          # $DISTGAN_DATA itself
    monkeypatch.delenv("DISTGAN_DATA")
    assert len(datasets.load("fmnist")) == 13                 # Debian's folder
    monkeypatch.setitem(datasets.DEBIAN_DIRS, "fashion-mnist", tmp_path / "gone")
    assert len(datasets.load("Fashion-MNIST")) == 14          # ~/.cache/distgan/<name>


def test_mnist_ignores_the_debian_fashion_folder(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    make_idx_set(debian, n=13)
    monkeypatch.setitem(datasets.DEBIAN_DIRS, "fashion-mnist", debian)
    make_idx_set(tmp_path / "env" / "mnist", n=9)
    make_idx_set(tmp_path / "home" / ".cache" / "distgan" / "mnist", n=8)
    monkeypatch.setenv("DISTGAN_DATA", str(tmp_path / "env"))
    ds = datasets.load("mnist")
    assert len(ds) == 9 and ds.name == "mnist" and ds.class_names[3] == "3"
    monkeypatch.delenv("DISTGAN_DATA")
    assert len(datasets.load("mnist")) == 8


def test_not_found_names_every_place_and_how_to_get_the_files(tmp_path, monkeypatch,
                                                              offline, no_debian):
    env = tmp_path / "env"
    env.mkdir()
    make_idx_set(env, n=5, split="test")        # the wrong split only
    monkeypatch.setenv("DISTGAN_DATA", str(env))
    t0 = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load("fashion-mnist")
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    cache = tmp_path / "home" / ".cache" / "distgan" / "fashion-mnist"
    for place in (str(env / "fashion-mnist"), str(env), str(tmp_path / "no-debian"),
                  str(cache), "$DISTGAN_DATA",
                  datasets.FASHION_MNIST_URL + "train-images-idx3-ubyte.gz",
                  "network disabled",
                  "apt-get install dataset-fashion-mnist", "DISTGAN_DATA",
                  "train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        assert place in msg, (place, msg)
    assert isinstance(info.value, DatasetError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, FileNotFoundError)
    # one download was attempted, with a short timeout, at the official address
    assert len(offline.calls) == 1
    url, timeout = offline.calls[0]
    assert url.startswith(datasets.FASHION_MNIST_URL) and 0 < timeout <= 10
    assert not cache.exists()                   # a failed download leaves nothing


def test_not_found_without_download_and_for_mnist(offline, no_debian, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load("mnist", split="test", download=False)
    msg = str(info.value)
    assert offline.calls == []
    assert "$DISTGAN_DATA: not set" in msg
    assert str(tmp_path / "home" / ".cache" / "distgan" / "mnist") in msg
    assert "download=False" in msg and "apt-get" not in msg
    assert "t10k-images-idx3-ubyte" in msg and datasets.MNIST_URL in msg


class FakeServer:
    """urlopen that serves given bytes per URL (a BytesIO is its own context manager)."""

    def __init__(self, files):
        self.files = files
        self.calls = []

    def __call__(self, url, *args, timeout=None, **kwargs):
        self.calls.append(url)
        return io.BytesIO(self.files[url])


def _serve_fashion(monkeypatch, tmp_path, corrupt=False):
    images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    labels = np.array([3, 1, 4, 1], np.uint8)
    files = {}
    for stem, arr in zip(datasets._IDX_STEMS["train"], (images, labels)):
        data = gzip.compress(idx_bytes(arr), mtime=0)
        fname = stem + ".gz"
        monkeypatch.setitem(datasets._FASHION_MNIST_FILES, fname,
                            (len(data), hashlib.sha256(data).hexdigest()))
        files[datasets.FASHION_MNIST_URL + fname] = (data[:-1] + bytes([data[-1] ^ 1])
                                                     if corrupt else data)
    server = FakeServer(files)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    return server, images, labels


def test_download_is_checked_and_cached(monkeypatch, tmp_path, no_debian):
    server, images, labels = _serve_fashion(monkeypatch, tmp_path)
    ds = datasets.load("fashion-mnist")
    assert np.array_equal(ds.raw[:, 0], images) and np.array_equal(ds.labels, labels)
    cache = tmp_path / "home" / ".cache" / "distgan" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz",
                                                       "train-labels-idx1-ubyte.gz"]
    assert len(server.calls) == 2
    datasets.load("fashion-mnist")              # now from the cache
    assert len(server.calls) == 2


def test_download_with_wrong_checksum_is_discarded(monkeypatch, tmp_path, no_debian):
    _serve_fashion(monkeypatch, tmp_path, corrupt=True)
    with pytest.raises(DatasetNotFoundError, match="SHA-256 mismatch"):
        datasets.load("fashion-mnist")
    cache = tmp_path / "home" / ".cache" / "distgan" / "fashion-mnist"
    assert list(cache.iterdir()) == []          # no file, no partial file


def test_recorded_official_sums_are_well_formed():
    for table in (datasets._FASHION_MNIST_FILES, datasets._MNIST_FILES):
        assert sorted(table) == sorted(s + ".gz" for p in datasets._IDX_STEMS.values()
                                       for s in p)
        for size, sha in table.values():
            assert size > 0 and len(sha) == 64 and int(sha, 16) >= 0


# ---------------------------------------------------------------------------------------
# Malformed IDX files.

def _good_pair(tmp_path, gz):
    return make_idx_set(tmp_path, n=20, gz=gz)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_images(tmp_path, gz):
    _good_pair(tmp_path, gz)
    stem = "train-images-idx3-ubyte" + (".gz" if gz else "")
    p = tmp_path / stem
    p.write_bytes(p.read_bytes()[:-50])
    with pytest.raises(DatasetError, match="truncated") as info:
        datasets.load(tmp_path)
    assert str(p) in str(info.value)


def test_truncated_inside_the_header(tmp_path):
    _good_pair(tmp_path, False)
    p = tmp_path / "train-labels-idx1-ubyte"
    p.write_bytes(p.read_bytes()[:6])
    with pytest.raises(DatasetError, match="truncated header") as info:
        datasets.load(tmp_path)
    assert str(p) in str(info.value)
    p.write_bytes(b"")
    with pytest.raises(DatasetError, match="truncated"):
        datasets.load(tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_wrong_magic(tmp_path, gz):
    _good_pair(tmp_path, gz)
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    data = b"\x12\x34" + idx_bytes(np.zeros((20, 5, 7)))[2:]
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match="magic") as info:
        datasets.load(tmp_path)
    assert str(p) in str(info.value)


def test_labels_where_images_belong(tmp_path):
    images, labels = _good_pair(tmp_path, False)
    write_idx(tmp_path / "train-images-idx3-ubyte", labels)
    with pytest.raises(DatasetError, match="0x00000801.*images need 3"):
        datasets.load(tmp_path)


def test_unsupported_element_type(tmp_path):
    _good_pair(tmp_path, False)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((20, 5, 7)), type_code=0x0D)
    with pytest.raises(DatasetError, match="element type 0x0d"):
        datasets.load(tmp_path)


def test_count_mismatch_names_both_files(tmp_path):
    make_idx_set(tmp_path, n=20, gz=True)
    lbl = write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(19))
    with pytest.raises(DatasetError, match="count mismatch") as info:
        datasets.load(tmp_path)
    msg = str(info.value)
    assert str(lbl) in msg and str(tmp_path / "train-images-idx3-ubyte.gz") in msg
    assert "20" in msg and "19" in msg


@pytest.mark.parametrize("gz", [True, False])
def test_extra_bytes_after_the_data(tmp_path, gz):
    _good_pair(tmp_path, gz)
    p = tmp_path / ("train-labels-idx1-ubyte" + (".gz" if gz else ""))
    data = idx_bytes(np.zeros(20)) + b"junk"
    p.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match="extra"):
        datasets.load(tmp_path)


def test_corrupt_gzip_crc(tmp_path):
    _good_pair(tmp_path, True)
    p = tmp_path / "train-labels-idx1-ubyte.gz"
    data = bytearray(p.read_bytes())
    data[-6] ^= 0xFF                            # inside the CRC32 of the trailer
    p.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="corrupt") as info:
        datasets.load(tmp_path)
    assert str(p) in str(info.value)


@pytest.mark.parametrize("gz", [True, False])
def test_huge_declared_size_is_refused_without_allocating(tmp_path, gz):
    """A header declaring 10^9 images of 28x28 in a ~100-byte file."""
    p = tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))
    data = idx_bytes(np.zeros(84), dims=(10**9, 28, 28))
    p.write_bytes(gzip.compress(data) if gz else data)
    assert p.stat().st_size < 120
    t0 = time.perf_counter()
    peak, info = peak_alloc(lambda: datasets._read_idx(p, 3))
    assert time.perf_counter() - t0 < 1.0
    assert peak < 8 << 20, f"allocated {peak} bytes"
    assert str(p) in str(info.value) and "1000000000 x 28 x 28" in str(info.value)


@pytest.mark.parametrize("gz", [True, False])
def test_huge_declared_labels_through_load(tmp_path, gz):
    make_idx_set(tmp_path, n=20, gz=gz)
    lbl = tmp_path / ("train-labels-idx1-ubyte" + (".gz" if gz else ""))
    write_idx(lbl, np.zeros(92), dims=(10**9,), gz=gz)
    peak, info = peak_alloc(lambda: datasets.load(tmp_path))
    assert peak < 8 << 20, f"allocated {peak} bytes"
    assert str(lbl) in str(info.value) and "1000000000" in str(info.value)


@pytest.mark.parametrize("gz", [True, False])
def test_huge_declared_image_size_with_agreeing_counts(tmp_path, gz):
    """Counts agree with the labels, but each image claims to be 50000 x 50000."""
    make_idx_set(tmp_path, n=20, gz=gz)
    p = write_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")),
                  np.zeros(100), dims=(20, 50000, 50000), gz=gz)
    peak, info = peak_alloc(lambda: datasets.load(tmp_path))
    assert peak < 8 << 20, f"allocated {peak} bytes"
    assert str(p) in str(info.value) and "20 x 50000 x 50000" in str(info.value)


def test_labels_out_of_range_for_a_named_set(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "env" / "mnist", n=20)
    write_idx(tmp_path / "env" / "mnist" / "train-labels-idx1-ubyte.gz", np.full(20, 12))
    monkeypatch.setenv("DISTGAN_DATA", str(tmp_path / "env"))
    with pytest.raises(DatasetError, match="label 12 out of range"):
        datasets.load("mnist")


# ---------------------------------------------------------------------------------------
# .npz / .npy arrays.

def test_npz_uint8_nhwc_with_labels(tmp_path, rng):
    x = rng.integers(0, 256, (6, 8, 9, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "a.npz", x=x, y=y)
    ds = datasets.load(tmp_path / "a.npz")
    assert ds.raw.shape == (6, 3, 8, 9)
    assert np.array_equal(ds.raw, x.transpose(0, 3, 1, 2))
    assert ds.images.dtype == np.float32 and ds.images.min() >= -1 and ds.images.max() <= 1
    assert np.array_equal(ds.labels, y) and ds.num_classes == 3 and ds.name == "a"


def test_npz_images_labels_keys_and_nchw(tmp_path, rng):
    x = rng.integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    np.savez_compressed(tmp_path / "b.npz", images=x, labels=np.arange(5))
    ds = datasets.load(str(tmp_path / "b.npz"))
    assert np.array_equal(ds.raw, x) and ds.num_classes == 5


def test_npz_with_splits(tmp_path, rng):
    np.savez(tmp_path / "s.npz", x_train=np.zeros((7, 4, 4), np.uint8), y_train=np.zeros(7, int),
             x_test=np.zeros((3, 4, 4), np.uint8), y_test=np.ones(3, int))
    assert len(datasets.load(tmp_path / "s.npz")) == 7
    test = datasets.load(tmp_path / "s.npz", split="test")
    assert len(test) == 3 and test.raw.shape == (3, 1, 4, 4) and test.labels.tolist() == [1] * 3


def test_npy_float_range_rule(tmp_path, rng):
    unit = rng.random((4, 6, 6)).astype(np.float32)         # [0, 1]
    np.save(tmp_path / "u.npy", unit)
    ds = datasets.load(tmp_path / "u.npy")
    assert ds.labels is None and ds.num_classes is None and ds.raw is None
    assert ds.images.shape == (4, 1, 6, 6)
    np.testing.assert_allclose(ds.images[:, 0], 2 * unit - 1, rtol=0, atol=1e-6)

    sym = (2 * unit - 1).astype(np.float64)                  # [-1, 1], has negatives
    np.save(tmp_path / "s.npy", sym)
    np.testing.assert_allclose(datasets.load(tmp_path / "s.npy").images[:, 0], sym, atol=1e-7)

    np.save(tmp_path / "p.npy", unit)                        # [-1, 1] data, no negatives
    same = datasets.load(tmp_path / "p.npy", value_range=(-1, 1))
    np.testing.assert_allclose(same.images[:, 0], unit, atol=0)

    np.save(tmp_path / "bad.npy", unit * 255)
    with pytest.raises(DatasetError, match=r"\[0, 1\] or \[-1, 1\]"):
        datasets.load(tmp_path / "bad.npy")
    ok = datasets.load(tmp_path / "bad.npy", value_range=(0, 255))
    np.testing.assert_allclose(ok.images[:, 0], 2 * unit - 1, atol=1e-5)


def test_npy_points_are_kept_and_nan_refused(tmp_path, rng):
    pts = (rng.standard_normal((50, 2)) * 3).astype(np.float32)
    np.save(tmp_path / "pts.npy", pts)
    ds = datasets.load(tmp_path / "pts.npy")
    assert ds.images.shape == (50, 2) and np.array_equal(ds.images, pts)
    pts[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", pts)
    with pytest.raises(DatasetError, match="NaN"):
        datasets.load(tmp_path / "nan.npy")


def test_layout_detection_and_override(tmp_path):
    x = np.zeros((2, 8, 8, 1), np.uint8)
    assert datasets.from_arrays(x).image_shape == (1, 8, 8)
    assert datasets.from_arrays(np.zeros((2, 3, 8, 8), np.uint8)).image_shape == (3, 8, 8)
    amb = np.zeros((2, 3, 5, 4), np.uint8)
    with pytest.raises(DatasetError, match="layout"):
        datasets.from_arrays(amb)
    assert datasets.from_arrays(amb, layout="NHWC").image_shape == (4, 3, 5)
    assert datasets.from_arrays(amb, layout="nchw").image_shape == (3, 5, 4)
    with pytest.raises(DatasetError, match="layout"):
        datasets.from_arrays(np.zeros((2, 8, 8, 8), np.uint8))
    np.save(tmp_path / "amb.npy", amb)
    assert datasets.load(tmp_path / "amb.npy", layout="NHWC").image_shape == (4, 3, 5)


def test_arrays_malformed(tmp_path):
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetError, match="obj.npz"):
        datasets.load(tmp_path / "obj.npz")
    np.savez(tmp_path / "flt.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(3))
    with pytest.raises(DatasetError, match="labels must be integers"):
        datasets.load(tmp_path / "flt.npz")
    np.savez(tmp_path / "cnt.npz", x=np.zeros((3, 4, 4), np.uint8), y=np.zeros(4, int))
    with pytest.raises(DatasetError, match="3 images but labels of shape"):
        datasets.load(tmp_path / "cnt.npz")
    np.savez(tmp_path / "keys.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DatasetError, match="no images array"):
        datasets.load(tmp_path / "keys.npz")
    np.save(tmp_path / "one.npy", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(DatasetError, match="no 'test' split"):
        datasets.load(tmp_path / "one.npy", split="test")
    np.save(tmp_path / "neg.npy", -np.ones((3, 4, 4), np.int16))
    with pytest.raises(DatasetError, match=r"0\.\.255"):
        datasets.load(tmp_path / "neg.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DatasetError, match="junk.npz"):
        datasets.load(tmp_path / "junk.npz")


def test_npy_huge_declared_shape(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)})
    p = tmp_path / "huge.npy"
    p.write_bytes(buf.getvalue() + b"\0" * 40)
    peak, info = peak_alloc(lambda: datasets.load(p))
    assert peak < 8 << 20 and str(p) in str(info.value)


# ---------------------------------------------------------------------------------------
# Folders of images.

def _png(path, arr):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_image_folder_with_classes(tmp_path, rng):
    pytest.importorskip("PIL")
    imgs = rng.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    for i, cls in enumerate(["zebra", "ant", "zebra", "moth", "ant"]):
        _png(tmp_path / "pics" / cls / f"{i}.png", imgs[i])
    (tmp_path / "pics" / "ant" / "notes.txt").write_text("not an image")
    ds = datasets.load(tmp_path / "pics")
    assert ds.class_names == ("ant", "moth", "zebra") and ds.num_classes == 3
    assert ds.raw.shape == (5, 1, 6, 4)
    # sorted by class, then by file name: ant/1, ant/4, moth/3, zebra/0, zebra/2
    assert ds.labels.tolist() == [0, 0, 1, 2, 2]
    assert np.array_equal(ds.raw[:, 0], imgs[[1, 4, 3, 0, 2]])
    assert ds.name == "pics"


def test_image_folder_flat_color_and_mixed(tmp_path, rng):
    pytest.importorskip("PIL")
    rgb = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    _png(tmp_path / "f" / "a.png", rgb)
    _png(tmp_path / "f" / "b.png", gray)
    ds = datasets.load(tmp_path / "f")
    assert ds.labels is None and ds.num_classes is None and ds.raw.shape == (2, 3, 4, 4)
    assert np.array_equal(ds.raw[0], rgb.transpose(2, 0, 1))
    assert np.array_equal(ds.raw[1], np.stack([gray] * 3))


def test_image_folder_split_and_errors(tmp_path, rng):
    pytest.importorskip("PIL")
    img = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    _png(tmp_path / "s" / "train" / "a" / "0.png", img)
    _png(tmp_path / "s" / "train" / "b" / "1.png", img)
    _png(tmp_path / "s" / "test" / "a" / "2.png", img)
    assert len(datasets.load(tmp_path / "s")) == 2
    assert len(datasets.load(tmp_path / "s", split="test")) == 1

    _png(tmp_path / "sz" / "0.png", img)
    _png(tmp_path / "sz" / "1.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DatasetError, match="one size") as info:
        datasets.load(tmp_path / "sz")
    assert "1.png" in str(info.value)

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="x.png"):
        datasets.load(tmp_path / "bad")
    with pytest.raises(DatasetError, match="no 'test' split"):
        datasets.load(tmp_path / "sz", split="test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        datasets.load(tmp_path / "empty")


# ---------------------------------------------------------------------------------------
# CIFAR-10 python batches.

def _cifar_batch(path, rng, n, protocol=2, override=None):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    d = {b"batch_label": b"fake batch", b"labels": labels, b"data": data,
         b"filenames": [f"{i}.png".encode() for i in range(n)]}
    d.update(override or {})
    path.write_bytes(pickle.dumps(d, protocol=protocol))
    return data, labels


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_folder(tmp_path, rng, protocol):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    parts = [_cifar_batch(root / f"data_batch_{i}", rng, 4, protocol) for i in (2, 1)]
    test = _cifar_batch(root / "test_batch", rng, 3, protocol)
    names = [s.encode() for s in datasets._CIFAR_CLASSES]
    (root / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
    ds = datasets.load(root)
    assert ds.name == "cifar10" and len(ds) == 8 and ds.raw.shape == (8, 3, 32, 32)
    data = np.concatenate([parts[1][0], parts[0][0]])        # batch 1 before batch 2
    assert ds.labels.tolist() == parts[1][1] + parts[0][1]
    # row = R plane, G plane, B plane, each 32x32 row-major
    assert ds.raw[5, 2, 7, 9] == data[5, 2 * 1024 + 7 * 32 + 9]
    assert ds.num_classes == 10 and ds.class_names[0] == "airplane"
    ts = datasets.load(tmp_path, split="test")               # the parent folder works too
    assert len(ts) == 3 and np.array_equal(ts.raw.reshape(3, -1), test[0])


def test_cifar10_refuses_foreign_pickles(tmp_path, rng):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DatasetError, match="not allowed") as info:
        datasets.load(tmp_path)
    assert "data_batch_1" in str(info.value)
    assert not marker.exists()

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DatasetError, match="is a dict"):
        datasets.load(tmp_path)
    _cifar_batch(tmp_path / "data_batch_1", rng, 2,
                 override={b"data": np.zeros((2, 3072), np.int32)})
    with pytest.raises(DatasetError, match="uint8"):
        datasets.load(tmp_path)
    _cifar_batch(tmp_path / "data_batch_1", rng, 2, override={b"labels": [1, 2, 3]})
    with pytest.raises(DatasetError, match="labels"):
        datasets.load(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": 1})[:-3])
    with pytest.raises(DatasetError, match="data_batch_1"):
        datasets.load(tmp_path)


# ---------------------------------------------------------------------------------------
# Toy sets.

def test_ring8_centres_and_sigma():
    ds = datasets.load("ring8", n=4000, seed=3)
    c = ds.centers
    assert c.shape == (8, 2) and ds.sigma == 0.02 and ds.num_classes == 8
    np.testing.assert_allclose(np.hypot(c[:, 0], c[:, 1]), 2.0, rtol=1e-12)
    step = np.diff(np.unwrap(np.arctan2(c[:, 1], c[:, 0])))
    np.testing.assert_allclose(step, 2 * np.pi / 8, rtol=1e-12)


def test_grid25_centres_and_sigma():
    ds = datasets.load("grid25", n=100, seed=0)
    assert ds.centers.shape == (25, 2) and ds.sigma == 0.05 and ds.num_classes == 25
    grid = {(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)}
    assert {tuple(p) for p in ds.centers.tolist()} == {(float(x), float(y)) for x, y in grid}


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_toy_samples(name):
    ds = datasets.load(name, n=20000, seed=7)
    x, y = ds.images, ds.labels
    assert x.shape == (20000, 2) and x.dtype == np.float32 and y.dtype == np.int64
    assert ds.image_shape == (2,) and len(ds) == 20000
    d = x - ds.centers[y]
    assert np.hypot(d[:, 0], d[:, 1]).max() < 6 * ds.sigma       # P(> 6 sigma) ~ 1e-8
    np.testing.assert_allclose(d.std(axis=0), ds.sigma, rtol=0.05)
    np.testing.assert_allclose(np.abs(d.mean(axis=0)), 0, atol=0.1 * ds.sigma)
    counts = np.bincount(y, minlength=ds.num_classes)
    assert counts.min() > 0.7 * counts.mean()


def test_toy_determinism():
    a = datasets.load("grid25", n=500, seed=1)
    b = datasets.load("grid25", n=500, seed=1)
    c = datasets.load("grid25", n=500, seed=2)
    t = datasets.load("grid25", split="test", n=500, seed=1)
    assert np.array_equal(a.images, b.images) and a.checksum == b.checksum
    assert not np.array_equal(a.images, c.images)
    assert not np.array_equal(a.images, t.images)
    assert len(datasets.load("ring8")) == datasets.TOY_DEFAULT_N


# ---------------------------------------------------------------------------------------
# The Dataset object.

@pytest.fixture
def small(rng):
    raw = rng.integers(0, 256, (23, 1, 3, 3), dtype=np.uint8)
    return Dataset(raw, np.arange(23) % 4, name="small")


def test_batches_follow_the_seeded_permutation(small):
    batches = list(small.batches(5, seed=3, epoch=2))
    assert len(batches) == 4                                  # 23 // 5, last 3 dropped
    perm = np.random.default_rng([3, 2]).permutation(23)
    for i, (x, y) in enumerate(batches):
        idx = perm[5 * i:5 * i + 5]
        assert x.dtype == np.float32 and x.shape == (5, 1, 3, 3)
        assert np.array_equal(x, small.images[idx]) and np.array_equal(y, small.labels[idx])
    again = list(small.batches(5, 3, 2))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    other = next(iter(small.batches(5, 3, 3)))[1]
    assert not np.array_equal(other, batches[0][1])
    full = list(small.batches(5, 3, 2, drop_last=False))
    assert [len(b[1]) for b in full] == [5, 5, 5, 5, 3]
    assert sorted(np.concatenate([b[1] for b in full]).tolist()) == sorted(small.labels.tolist())
    x, _ = batches[0]
    x[0] = 0                                                  # a batch is the caller's copy


def test_batches_argument_checks(small):
    with pytest.raises(ValueError, match="larger than the data set"):
        small.batches(24, 0, 0)
    assert len(list(small.batches(24, 0, 0, drop_last=False))) == 1
    for bad in [(0, 0, 0), (5, -1, 0), (5, 0, -1), (5.0, 0, 0), (5, None, 0)]:
        with pytest.raises(ValueError):
            small.batches(*bad)


def test_batches_without_labels(rng):
    ds = Dataset(rng.standard_normal((10, 2)).astype(np.float32), name="pts")
    for x, y in ds.batches(4, 0, 0):
        assert y is None and x.shape == (4, 2)


def test_subset_checksum_and_readonly(small):
    sub = small.subset(5)
    assert len(sub) == 5 and np.array_equal(sub.raw, small.raw[:5])
    assert sub.num_classes == 4 and sub.name == "small"
    tiny = small.subset(3, seed=1)
    assert len(tiny) == 3 and tiny.num_classes == 4
    assert set(tiny.labels.tolist()) <= set(range(4))
    assert sub.checksum != small.checksum and len(small.checksum) == 64
    same = Dataset(small.raw.copy(), small.labels.copy(), name="other name")
    assert same.checksum == small.checksum
    relabelled = small.labels.copy()
    relabelled[0] = (relabelled[0] + 1) % 4
    assert Dataset(small.raw, relabelled).checksum != small.checksum
    assert Dataset(small.raw).checksum != small.checksum
    for arr in (small.images, small.labels, small.raw):
        with pytest.raises(ValueError):
            arr[0] = 0
    for bad in (0, 24, 2.5):
        with pytest.raises(ValueError):
            small.subset(bad)


def test_dataset_from_float_arrays_like_gan_does(rng):
    x = rng.uniform(-1, 1, (6, 1, 4, 4)).astype(np.float32)
    ds = Dataset(images=x, labels=np.array([0, 1, 0, 1, 0, 1], np.int64), name="array")
    assert ds.raw is None and ds.images.dtype == np.float32 and ds.num_classes == 2
    assert np.array_equal(ds.images, x)
    with pytest.raises(DatasetError):
        Dataset(x, labels=np.array([0, -1, 0, 1, 0, 1]))
    with pytest.raises(DatasetError):
        Dataset(x, labels=np.zeros(5, int))
    with pytest.raises(DatasetError):
        Dataset(x, labels=np.zeros(6, int), num_classes=1, class_names=["a", "b"])
    with pytest.raises(DatasetError):
        Dataset(np.zeros((6, 4, 4), np.float32))


def test_load_arguments(tmp_path):
    with pytest.raises(ValueError, match="split"):
        datasets.load("ring8", split="valid")
    with pytest.raises(TypeError, match="seed"):
        datasets.load(tmp_path, seed=1)
    with pytest.raises(TypeError, match="npz"):
        datasets.load("ring8", layout="NHWC")
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        datasets.load(tmp_path / "nowhere")
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DatasetError, match="unsupported file"):
        datasets.load(tmp_path / "x.csv")
    make_idx_set(tmp_path / "d", n=30)
    assert len(datasets.load(tmp_path / "d", n=7)) == 7
