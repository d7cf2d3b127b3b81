"""Never crash, never lose a run (issue 7).

* fuzzing: many random mutations of a real checkpoint and of real Fashion-MNIST IDX
  files; every one loads (when the mutation left a valid file) or raises the reader's
  own error class, never anything else and never a crash;
* hostile sizes: declared sizes far beyond the file are refused before allocating;
* SIGKILL in the middle of a save leaves the previous checkpoint loadable;
* Ctrl-C (SIGINT) during ``fit`` and ``distill`` stops at a step boundary, saves and
  returns the history so far;
* 5,000 training steps keep the resident memory flat;
* two trainings in two Python threads finish faster together than one after the
  other (the GIL is released in the compute calls);
* hypothesis over the public entry points with wrong dtypes, shapes, layouts, empty
  batches, NaN and inf: a clear TypeError/ValueError or a documented result.

Children run with the same interpreter and environment (so a sanitizer preload
reaches them) and the source tree on their path.
"""
import collections
import gzip
import hashlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import numpy as np
import pytest

from conftest import subprocess_env
import distgan
from distgan import CheckpointError, models
from distgan.datasets import DatasetError

DEBIAN = "/usr/share/datasets/fashion-mnist"


def _env():
    return subprocess_env(PYTHONUNBUFFERED="1")


def _spawn(code, tmp_path):
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=str(tmp_path))


def _wait_line(proc, prefix, timeout=120):
    """Read the child's stdout until a line starting with ``prefix``; returns it."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            return line.strip()
    proc.kill()
    out, err = proc.communicate()
    raise AssertionError(f"child never printed {prefix!r}; exit {proc.returncode}\n{out}\n{err}")


# --------------------------------------------------------------------------------------------
# fuzzing
# --------------------------------------------------------------------------------------------

def _mutate(blob, rng, header_end):
    """One random mutation: byte flips, truncation, insertion, deletion, a rewritten
    length field, a bit flip in the header, a swapped or zeroed block."""
    b = bytearray(blob)
    kind = int(rng.integers(8))
    if kind == 0:
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(len(b)))] = int(rng.integers(256))
    elif kind == 1:
        b = b[:int(rng.integers(len(b)))]
    elif kind == 2:
        i = int(rng.integers(len(b) + 1))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    elif kind == 3:
        i = int(rng.integers(len(b)))
        del b[i:i + int(rng.integers(1, 64))]
    elif kind == 4:    # the leading length / magic / count fields
        i = int(rng.integers(min(16, len(b))))
        b[i] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256))]))
    elif kind == 5:
        i = int(rng.integers(min(header_end, len(b))))
        b[i] ^= 1 << int(rng.integers(8))
    elif kind == 6:
        n = int(rng.integers(1, 256))
        i, j = (int(v) for v in rng.integers(0, max(1, len(b) - n), 2))
        b[i:i + n], b[j:j + n] = b[j:j + n], b[i:i + n]
    else:
        i = int(rng.integers(len(b)))
        b[i:i + int(rng.integers(1, 512))] = bytes(len(b[i:i + int(rng.integers(1, 512))]))
    return bytes(b), kind


def _kind_of(message):
    """An error message with its numbers and names blanked: the class of the failure."""
    return re.sub(r"0x[0-9a-f]+|\d+|'[^']*'|/\S*", "#", message)[:44]


def _real_checkpoint(path):
    gan = distgan.GAN(models.dcgan(width=0.125, latent_dim=8), seed=0)
    x = np.random.default_rng(0).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32)
    gan.step(x)
    gan.step(x)
    gan.save(path)
    return gan


def test_checkpoint_fuzz(tmp_path):
    """1,500 mutations of a real checkpoint: each raises CheckpointError (the checksum
    covers tensors and metadata) or, if it left the bytes unchanged, loads."""
    good = tmp_path / "good.safetensors"
    _real_checkpoint(good)
    blob = good.read_bytes()
    header_end = 8 + int.from_bytes(blob[:8], "little")
    rng = np.random.default_rng(7)
    bad = tmp_path / "bad.safetensors"
    outcomes = collections.Counter()
    for _ in range(1500):
        m, kind = _mutate(blob, rng, header_end)
        bad.write_bytes(m)
        try:
            distgan.load(bad)
        except CheckpointError as e:
            outcomes[_kind_of(str(e).split(": ", 1)[1])] += 1
            continue
        assert m == blob, f"mutation kind {kind} loaded without an error"
        outcomes["unchanged, loaded"] += 1
    print("checkpoint fuzz outcomes:", dict(outcomes))
    assert sum(outcomes.values()) == 1500
    assert len(outcomes) >= 4       # the mutations reach the header, metadata and data checks


def _fashion_idx(folder, n, gz):
    """The first ``n`` Fashion-MNIST test images and labels from the Debian files,
    rewritten as an IDX pair (real bytes, count in the header set to ``n``)."""
    src = {}
    for stem, item in (("t10k-images-idx3-ubyte", 784), ("t10k-labels-idx1-ubyte", 1)):
        path = os.path.join(DEBIAN, stem + ".gz")
        if not os.path.exists(path):
            pytest.skip("apt-get install dataset-fashion-mnist")
        raw = gzip.open(path).read()
        head = 16 if item == 784 else 8
        blob = raw[:4] + struct.pack(">I", n) + raw[8:head] + raw[head:head + n * item]
        out = os.path.join(folder, stem + (".gz" if gz else ""))
        with (gzip.open(out, "wb") if gz else open(out, "wb")) as f:
            f.write(blob)
        src[stem] = (out, blob)
    return src


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_idx_fuzz(tmp_path, gz):
    """600 mutations of real Fashion-MNIST IDX files (images or labels, plain or gzip):
    each loads or raises DatasetError naming the file, and no load allocates more than
    a small multiple of what a valid file of that size needs."""
    folder = tmp_path / "fmnist"
    folder.mkdir()
    files = _fashion_idx(str(folder), 200, gz)
    ref = distgan.datasets.load(str(folder), split="test")
    assert ref.images.shape == (200, 1, 28, 28)
    originals = {}
    for p, _ in files.values():
        with open(p, "rb") as f:
            originals[p] = f.read()
    rng = np.random.default_rng(11 + gz)
    outcomes = collections.Counter()
    tracemalloc.start()
    try:
        for i in range(600):
            stem = "t10k-images-idx3-ubyte" if i % 3 else "t10k-labels-idx1-ubyte"
            path, blob = files[stem]
            m, kind = _mutate(blob, rng, 16)
            data = gzip.compress(m, compresslevel=1, mtime=0) if gz else m
            if gz and rng.random() < 0.2:        # corrupt the gzip stream itself
                d = bytearray(data)
                d[int(rng.integers(len(d)))] ^= 0xFF
                data = bytes(d)
            with open(path, "wb") as f:
                f.write(data)
            tracemalloc.reset_peak()
            try:
                ds = distgan.datasets.load(str(folder), split="test")
                outcomes["loaded"] += 1
                assert ds.images.shape[1:] == (1, 28, 28) and len(ds.labels) == len(ds.images)
                assert ds.images.dtype == np.float32 and np.abs(ds.images).max() <= 1
            except DatasetError as e:
                assert "t10k-" in str(e), str(e)
                outcomes[_kind_of(str(e).replace(str(folder), ""))] += 1
            peak = tracemalloc.get_traced_memory()[1]
            assert peak < 64 * 2**20, f"mutation kind {kind} made the loader allocate {peak} bytes"
            with open(path, "wb") as f:      # restore
                f.write(originals[path])
    finally:
        tracemalloc.stop()
    print("IDX fuzz outcomes:", dict(outcomes))
    assert outcomes["loaded"] < 600 and len(outcomes) >= 3


def _safetensors(header, data=b""):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def test_checkpoint_hostile_headers_refused_without_allocating(tmp_path):
    """Declared sizes far beyond the file, wrong versions and foreign files."""
    path = tmp_path / "h.safetensors"
    meta = {"format": "distgan", "format_version": "2", "kind": "gan", "sha256": "0" * 64}
    cases = {
        "header length 2**63": (struct.pack("<Q", 2**63) + b"{}", "header claims"),
        "header length 2**64-1": (struct.pack("<Q", 2**64 - 1) + b"{}", "header claims"),
        "tensor of 2**62 floats": (_safetensors({"__metadata__": meta, "g.p": {
            "dtype": "F32", "shape": [2**31, 2**31], "data_offsets": [0, 2**64 - 8]}}), ""),
        "offsets past the end": (_safetensors({"__metadata__": meta, "g.p": {
            "dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8), ""),
        "negative shape": (_safetensors({"__metadata__": meta, "g.p": {
            "dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4), ""),
        "version 99": (_safetensors({"__metadata__": dict(meta, format_version="99")}),
                       "format version '99'"),
        "no version": (_safetensors({"__metadata__": {"format": "distgan", "kind": "gan"}}),
                       "format version None"),
        "foreign safetensors": (_safetensors({"__metadata__": {"format": "pt"}}),
                                "not a distgan checkpoint"),
        "non-string metadata": (_safetensors({"__metadata__": dict(meta, kind=7)}), "strings"),
        "JSON list header": (struct.pack("<Q", 2) + b"[]", "corrupt header"),
        "binary junk": (os.urandom(4096), ""),
        "empty": (b"", "too short"),
    }
    tracemalloc.start()
    try:
        for name, (blob, match) in cases.items():
            path.write_bytes(blob)
            tracemalloc.reset_peak()
            with pytest.raises(CheckpointError, match=match or None):
                distgan.load(path)
            assert tracemalloc.get_traced_memory()[1] < 2**20 + 4 * len(blob), name
    finally:
        tracemalloc.stop()


def test_version_1_checkpoints_still_load(tmp_path):
    """Format 1 (checksum over the tensors only) is read; a corrupt tensor is still caught."""
    from distgan import checkpoint as ck

    gan = _real_checkpoint(tmp_path / "v2.safetensors")
    tensors = {k: np.ascontiguousarray(v) for k, v in gan._tensors().items()}
    state = {"step": gan.step_count, "noise_offset": gan.noise.offset, "sample_offset": 0,
             "opt_g_t": gan.opt_g.t, "opt_d_t": gan.opt_d.t}
    meta = {"format": "distgan", "format_version": "1", "kind": "gan",
            "sha256": ck._digest(tensors), "spec": json.dumps(gan.spec),
            "config": json.dumps(gan.config), "state": json.dumps(state),
            "history": json.dumps(gan.history)}
    from safetensors.numpy import save as st_save

    v1 = tmp_path / "v1.safetensors"
    v1.write_bytes(st_save(tensors, metadata=meta))
    back = distgan.load(v1)
    assert back.step_count == 2
    for k, a in back._tensors().items():
        np.testing.assert_array_equal(a, tensors[k])
    blob = bytearray(v1.read_bytes())
    blob[-3] ^= 0x10
    v1.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum"):
        distgan.load(v1)


# --------------------------------------------------------------------------------------------
# SIGKILL mid-save, Ctrl-C
# --------------------------------------------------------------------------------------------

SAVER = """
import os, sys, time
import numpy as np
import distgan
gan = distgan.GAN(distgan.models.dcgan(width=0.5), seed=0)   # ~8 MB checkpoint
path = "run.safetensors"
def said(text):
    # one write(2) per line: the child runs unbuffered, where print() writes "saved", " ",
    # the number and the newline separately, and a SIGKILL between them leaves half a line
    os.write(1, (text + "\\n").encode())
gan.save(path)
said(f"saved {gan.step_count}")
if sys.argv[-1] == "hang":
    # freeze inside the save, after the temporary file is written, before the rename
    real_fsync = os.fsync
    def fsync(fd):
        real_fsync(fd)
        said("in-save")
        time.sleep(60)
    os.fsync = fsync
while True:
    gan.step_count += 1
    gan.save(path)
    said(f"saved {gan.step_count}")
"""


@pytest.mark.parametrize("mode", ["hang", "random"])
def test_sigkill_mid_save_keeps_previous_checkpoint(tmp_path, mode):
    """Killed with SIGKILL during a save (frozen inside it, or at random moments of a
    save loop), the checkpoint on disk is the last complete one and loads."""
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = np.random.default_rng(5)
    for trial in range(1 if mode == "hang" else 4):
        proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=_env(), cwd=str(tmp_path))
        _wait_line(proc, "saved")
        if mode == "hang":
            _wait_line(proc, "in-save")
        else:
            time.sleep(float(rng.uniform(0.05, 0.6)))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        # read the rest through proc.stdout: communicate() would read the pipe beneath
        # it and miss lines that _wait_line's readline had already buffered
        out = proc.stdout.read()
        proc.stdout.close()
        proc.stderr.close()
        saved = [int(n) for n in re.findall(r"^saved (\d+)$", out, re.M)]
        gan = distgan.load(tmp_path / "run.safetensors")
        # the file is the last save that completed, or the one being renamed at the kill
        last = saved[-1] if saved else 0
        assert gan.step_count in (last, last + 1), (gan.step_count, saved[-3:])
        if mode == "hang":
            assert gan.step_count == last
            assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


INTERRUPTED = """
import json, os, signal, sys
import numpy as np
import distgan
data = distgan.datasets.load("grid25", n=4096, seed=0)
spec = distgan.models.mlp(hidden=32, depth=2)
def ready(gan, step, losses):
    if step == 20:
        print("ready", flush=True)
if sys.argv[-1] == "fit":
    gan = distgan.GAN(spec, seed=0)
    hist = gan.fit(data, steps=10**7, batch_size=64, progress=False, checkpoint="ck.safetensors",
                   checkpoint_every=10**9, log_every=1, callback=ready)
    model = gan
else:
    teacher = distgan.GAN(spec, seed=1)
    teacher.fit(data, steps=5, batch_size=64, progress=False)
    student = distgan.GAN(distgan.models.mlp(hidden=16, depth=2), seed=2)
    model, hist = distgan.distill(teacher, student, data=data, steps=10**7, progress=False,
                                  checkpoint="ck.safetensors", checkpoint_every=10**9,
                                  log_every=1, callback=ready)
print("returned", json.dumps({"step": model.step_count, "logged": len(hist["step"])}), flush=True)
"""


@pytest.mark.parametrize("what", ["fit", "distill"])
def test_ctrl_c_stops_saves_and_returns_history(tmp_path, what):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    proc = subprocess.Popen([sys.executable, str(script), what], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=str(tmp_path))
    _wait_line(proc, "ready")
    proc.send_signal(signal.SIGINT)
    line = _wait_line(proc, "returned", timeout=60)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = json.loads(line.split(" ", 1)[1])
    assert 20 <= got["step"] < 10**6 and got["logged"] >= 20
    saved = distgan.load(tmp_path / "ck.safetensors")
    assert saved.step_count == got["step"]
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------
# leaks and threads
# --------------------------------------------------------------------------------------------

RSS = """
import ctypes, json, os
import numpy as np
import distgan
page = os.sysconf("SC_PAGE_SIZE")
trim = ctypes.CDLL("libc.so.6").malloc_trim
def rss():
    trim(0)    # hand freed heap pages back, so RSS counts memory in use, not malloc's cache
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
rng = np.random.default_rng(0)
out = {}
for name, spec, shape in (("mlp", distgan.models.mlp(hidden=64, depth=3), (64, 2)),
                          ("dcgan", distgan.models.dcgan(width=0.125, latent_dim=16), (8, 1, 28, 28))):
    gan = distgan.GAN(spec, seed=0)
    x = rng.uniform(-1, 1, shape).astype(np.float32)
    marks = {}
    for i in range(1, 5001):
        gan.step(x)
        if i % 500 == 0:
            gan.sample(16, seed=i)
        if i in (1000, 5000):
            marks[i] = rss()
    out[name] = marks
print(json.dumps(out))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and glibc's malloc_trim")
@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's quarantine keeps freed memory resident by design")
def test_resident_memory_flat_over_5000_steps(tmp_path):
    """5,000 steps of an MLP GAN and of a DCGAN (every layer type) with sampling every
    500: resident memory after step 5,000 within 2 MiB of that after step 1,000."""
    proc = subprocess.run([sys.executable, "-c", RSS], capture_output=True, text=True,
                          env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr
    marks = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, m in marks.items():
        grew = m["5000"] - m["1000"]
        print(f"{name}: RSS {m['1000'] / 2**20:.1f} MiB at step 1000, "
              f"{m['5000'] / 2**20:.1f} MiB at step 5000")
        assert grew < 2 * 2**20, f"{name}: resident memory grew by {grew / 2**20:.1f} MiB"


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _two_thread_ratio(work, args):
    """Wall time of work(args[0]) and work(args[1]) in two threads, over the time of
    the two one after the other."""
    t0 = time.perf_counter()
    for a in args:
        work(a)
    serial = time.perf_counter() - t0
    threads = [threading.Thread(target=work, args=(a,)) for a in args]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return (time.perf_counter() - t0) / serial


@pytest.mark.skipif(_cores() < 2, reason="needs two cores")
def test_two_trainings_in_two_threads_run_in_parallel():
    """The compute calls release the GIL and do not serialise on a lock: two trainings
    (one core thread each) in two Python threads finish well before the same two run
    one after the other.

    That needs two free cores, which a shared machine does not always give. Each try
    measures a control beside the trainings: SHA-256 of a large buffer, which CPython
    computes with the GIL released. The trainings must run in parallel as well as the
    control did, within 0.1 (and below 0.75 when the control did better): one after
    the other they would take ~1.0. Tries whose control itself did not run in
    parallel (0.8 or more) do not count, and when none counts the machine had no
    second core to give and the test skips, saying so, rather than blaming the core."""
    old = distgan.get_num_threads()
    distgan.set_num_threads(1)
    try:
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (32, 1, 28, 28)).astype(np.float32)
        gans = [distgan.GAN(models.dcgan(width=0.5), seed=s) for s in (0, 1)]

        def train(g, steps=12):
            for _ in range(steps):
                g.step(x)

        for g in gans:
            train(g, 2)                       # warm caches and buffers
        t0 = time.perf_counter()
        train(gans[0])
        per_train = time.perf_counter() - t0
        blob = rng.integers(0, 256, 1 << 22, dtype=np.uint8).tobytes()
        t0 = time.perf_counter()
        hashlib.sha256(blob).digest()
        reps = max(1, round(per_train / (time.perf_counter() - t0)))

        def control(_):
            for _ in range(reps):
                hashlib.sha256(blob).digest()

        def bound(c):
            return max(0.75, c + 0.1)

        tries = []                            # (control ratio, training ratio)
        for _ in range(5):
            tries.append((_two_thread_ratio(control, (0, 1)), _two_thread_ratio(train, gans)))
            c, t = tries[-1]
            if c < 0.8 and t < bound(c):
                break
        print("two threads / one after the other (control, trainings):",
              [f"{c:.2f}, {t:.2f}" for c, t in tries])
        counted = [(c, t) for c, t in tries if c < 0.8]
        if not counted:
            pytest.skip(f"no second free core: the GIL-free control did not run in parallel "
                        f"({[round(c, 2) for c, _ in tries]})")
        assert any(t < bound(c) for c, t in counted), tries
    finally:
        distgan.set_num_threads(old)


# --------------------------------------------------------------------------------------------
# hypothesis over the public entry points
# --------------------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

DTYPES = [np.float32, np.float64, np.float16, np.int64, np.uint8, np.bool_, np.complex64,
          np.dtype(">f4"), object]
CLEAR = (TypeError, ValueError, FloatingPointError)   # incl. DatasetError, CheckpointError


@st.composite
def hostile_arrays(draw, max_dims=4):
    """Arrays of any dtype and shape (zero-size included), non-contiguous or read-only,
    holding NaN and inf or not."""
    dtype = draw(st.sampled_from(DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5))
    size = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    vals = rng.uniform(-1, 1, 2 * size)
    poison = draw(st.sampled_from([None, np.nan, np.inf, -np.inf]))
    if poison is not None and size:
        vals[int(rng.integers(2 * size))] = poison
        vals[0] = poison
    if dtype is object:
        a = np.empty(2 * size, object)
        a[:] = list(vals)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            a = vals.astype(dtype)
    a = a[::2] if draw(st.booleans()) else a[:size]        # strided or contiguous
    a = a.reshape(shape)
    if draw(st.booleans()):
        a.flags.writeable = False
    return a


@pytest.fixture(scope="module")
def small_models():
    mlp = distgan.GAN(models.mlp(hidden=8, depth=1), seed=0)
    cond = distgan.GAN(models.mlp(hidden=8, depth=1, num_classes=3), seed=0)
    img = distgan.GAN(models.dcgan(width=0.125, latent_dim=4), seed=0)
    student = distgan.GAN(models.mlp(hidden=4, depth=1), seed=1)
    return {"mlp": mlp, "cond": cond, "img": img, "student": student}


def _entry_points(m):
    """(name, call(array)) for every public entry point that takes an array."""
    from distgan import metrics, ops

    w = np.ones((3, 2), np.float32)
    centers = np.zeros((2, 2))
    return [
        ("GAN.step", lambda a: m["mlp"].step(a)),
        ("GAN.step(img)", lambda a: m["img"].step(a)),
        ("GAN.step(labels)", lambda a: m["cond"].step(np.zeros((a.shape[0] if a.ndim else 2, 2),
                                                               np.float32), a)),
        ("GAN.fit", lambda a: m["mlp"].fit(a, steps=1, batch_size=2, progress=False)),
        ("GAN.sample(labels)", lambda a: m["cond"].sample(3, labels=a)),
        ("distill(data)", lambda a: distgan.distill(m["mlp"], m["student"], data=a, steps=1,
                                                    batch_size=2, progress=False)),
        ("datasets.from_arrays", lambda a: distgan.datasets.from_arrays(a)),
        ("datasets.from_arrays(labels)", lambda a: distgan.datasets.from_arrays(
            np.zeros((a.shape[0] if a.ndim else 1, 2), np.float32), labels=a)),
        ("metrics.fid", lambda a: metrics.fid(a, np.ones((4, 2)))),
        ("metrics.precision_recall", lambda a: metrics.precision_recall(np.ones((6, 2)), a, k=2)),
        ("metrics.mode_stats", lambda a: metrics.mode_stats(a, centers, 0.1)),
        ("plot.grid", lambda a: distgan.plot.grid(a)),
        ("ops.linear(x)", lambda a: ops.linear(a, w)),
        ("ops.linear(weight)", lambda a: ops.linear(np.ones((2, 2), np.float32), a)),
        ("ops.conv2d", lambda a: ops.conv2d(a, np.ones((2, 1, 3, 3), np.float32), padding=1)),
        ("ops.batch_norm", lambda a: ops.batch_norm(a)),
        ("ops.leaky_relu", lambda a: ops.leaky_relu(a, 0.2)),
        ("ops.tempered_kl", lambda a: ops.tempered_kl(a, np.zeros_like(a, np.float32)
                                                      if a.dtype != object else a, 2.0)),
    ]


ENTRY_NAMES = [name for name, _ in _entry_points({k: None for k in
                                                  ("mlp", "cond", "img", "student")})]


@pytest.mark.parametrize("name", ENTRY_NAMES)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(a=hostile_arrays())
def test_public_entry_points_raise_clear_errors(small_models, name, a):
    """Whatever the array, an entry point returns or raises TypeError/ValueError (or
    DivergenceError) with a message; never IndexError, AttributeError, SystemError..."""
    call = dict(_entry_points(small_models))[name]
    try:
        call(a)
    except CLEAR as e:
        assert str(e), f"{name}: {type(e).__name__} without a message"
    except MemoryError:
        raise AssertionError(f"{name}: MemoryError on a {a.shape} array")


def test_nan_and_inf_behave_as_documented(small_models):
    """Training data with NaN/inf is refused (the step names where); metrics refuse
    non-finite features; the ops, like torch, propagate NaN."""
    from distgan import metrics, ops

    x = np.zeros((4, 2), np.float32)
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values \(first at index \(2, 1\)\)"):
        small_models["mlp"].step(x)
    with pytest.raises(ValueError, match="non-finite"):
        metrics.fid(np.where(np.isnan(x), np.inf, x), np.ones((4, 2)))
    y = ops.linear(x, np.ones((3, 2), np.float32))
    assert np.isnan(y[2]).all() and np.isfinite(np.delete(y, 2, axis=0)).all()


def test_empty_and_huge_requests(small_models, tmp_path):
    g = small_models["mlp"]
    assert g.sample(0).shape == (0, 2)
    with pytest.raises(ValueError, match="at least 2 samples"):
        g.step(np.zeros((0, 2), np.float32))
    with pytest.raises(ValueError, match="at least"):
        distgan.metrics.fid(np.zeros((0, 2)), np.ones((4, 2)))
    # sizes whose products overflow 32 bits, in a child capped at 4 GiB of address space
    # (a missing check there must fail the test, not take the machine down)
    env = _env()
    if "libasan" in env.get("LD_PRELOAD", ""):
        # AddressSanitizer reserves terabytes of address space for its shadow memory, so
        # the child caps allocations through its allocator instead of RLIMIT_AS
        # (its "failed to allocate" warnings go to a log of this test's own, which may
        # hold nothing else)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":allocator_may_return_null=1"
                               f":max_allocation_size_mb=4096:log_path={tmp_path}/asan")
        env["DISTGAN_NO_RLIMIT"] = "1"
    proc = subprocess.run([sys.executable, "-c", HUGE], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (proc.stdout, proc.stderr)
    for log in tmp_path.glob("asan*"):
        lines = [l for l in log.read_text().splitlines() if l.strip()]
        assert all("AddressSanitizer failed to allocate" in l for l in lines), lines


HUGE = """
import os, re, resource
import numpy as np
import distgan
if not os.environ.get("DISTGAN_NO_RLIMIT"):
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
g = distgan.GAN(distgan.models.mlp(hidden=8, depth=1), seed=0)
huge = np.broadcast_to(np.float32(0), (2**31, 2))      # a zero-copy view of 2**32 values
for call, exc, words in ((lambda: g.step(huge), ValueError, "C ints"),
                         (lambda: g.sample(2**62), (ValueError, MemoryError), "too big|allocate"),
                         (lambda: g.sample(2**31), (ValueError, MemoryError), "too big|allocate"),
                         (lambda: distgan.metrics.fid(huge, huge[:4]), (ValueError, MemoryError), "")):
    try:
        call()
    except exc as e:
        assert re.search(words, str(e)), repr(e)
        print(type(e).__name__, str(e)[:80])
    else:
        raise AssertionError("no error")
print("ok")
"""


def test_sampling_and_features_from_two_threads_agree_with_serial():
    """A GAN and a Classifier reuse their networks' buffers: two threads sampling the
    same GAN, or taking features with the same classifier, get exactly what one
    thread gets (a lock serves one caller at a time; before it, two evaluations at
    once returned each other's features)."""
    gan = distgan.GAN(models.dcgan(width=0.25), seed=0)
    clf = distgan.Classifier(models.classifier(width=0.25), seed=0)
    x = [np.random.default_rng(s).uniform(-1, 1, (300, 1, 28, 28)).astype(np.float32)
         for s in (0, 1)]
    want_s = [gan.sample(300, seed=s) for s in (0, 1)]
    want_f = [clf.features(a) for a in x]
    got = {}

    def work(i):
        for r in range(3):
            got[i, r] = (gan.sample(300, seed=i), clf.features(x[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (i, r), (s, f) in got.items():
        np.testing.assert_array_equal(s, want_s[i])
        np.testing.assert_array_equal(f, want_f[i])


# --------------------------------------------------------------------------------------------
# hypothesis: the core's ops against the NumPy reference, over shapes, slopes, temperatures
# --------------------------------------------------------------------------------------------

def _close(a, b, tol):
    from conftest import rel_err

    if isinstance(b, tuple):
        for x, y in zip(a, b):
            _close(x, y, tol)
        return
    assert rel_err(a, b) <= tol, rel_err(a, b)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(n=st.integers(1, 9), fin=st.integers(1, 33), fout=st.integers(1, 17),
       bias=st.booleans(), seed=st.integers(0, 2**31))
def test_linear_any_shape_vs_reference(n, fin, fout, bias, seed):
    from distgan import ops, reference as ref

    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(n, fin)).astype(np.float32), rng.normal(size=(fout, fin)).astype(np.float32)
    b = rng.normal(size=fout).astype(np.float32) if bias else None
    dy = rng.normal(size=(n, fout)).astype(np.float32)
    _close(ops.linear(x, w, b), ref.linear(x, w, b), 1e-5)
    _close(ops.linear_backward(dy, x, w), ref.linear_backward(dy, x, w), 1e-5)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7),
       slope=st.floats(-2.0, 2.0, allow_nan=False, width=32), seed=st.integers(0, 2**31))
def test_leaky_relu_any_slope_vs_reference(shape, slope, seed):
    from distgan import ops, reference as ref

    rng = np.random.default_rng(seed)
    x, dy = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
    _close(ops.leaky_relu(x, slope), ref.leaky_relu(x, slope), 1e-6)
    _close(ops.leaky_relu_backward(dy, x, slope), ref.leaky_relu_backward(dy, x, slope), 1e-6)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(n=st.integers(2, 6), c=st.integers(1, 9), spatial=st.sampled_from([(), (1, 1), (3, 2), (5, 7)]),
       affine=st.booleans(), eps=st.sampled_from([1e-5, 1e-3, 0.1]), seed=st.integers(0, 2**31))
def test_batch_norm_any_shape_vs_reference(n, c, spatial, affine, eps, seed):
    from distgan import ops, reference as ref

    rng = np.random.default_rng(seed)
    shape = (n, c) + spatial
    x, dy = (rng.normal(1.0, 2.0, size=shape).astype(np.float32) for _ in range(2))
    w, b = ((rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32))
            if affine else (None, None))
    _close(ops.batch_norm(x, w, b, eps=eps), ref.batch_norm(x, w, b, eps=eps), 1e-4)
    got = ops.batch_norm_backward(dy, x, w, eps=eps)
    want = ref.batch_norm_backward(dy, x, w, eps=eps)
    # dx is a difference of terms of size |dy| * |w| / std(x) that cancel (exactly so
    # for two samples a channel, where the output is +-1 whatever x is): float32 rounding
    # is relative to those terms, not to dx
    axes = (0,) + tuple(range(2, x.ndim))
    scale = (np.abs(dy).max() * (np.abs(w).max() if affine else 1.0)
             / np.sqrt(x.astype(np.float64).var(axis=axes) + eps).min())
    assert np.abs(got[0] - want[0]).max() <= 1e-3 * np.abs(want[0]).max() + 1e-5 * scale
    for g, r in zip(got[1:], want[1:]):
        if r is not None:
            _close(g, r, 1e-3)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(rows=st.integers(1, 9), k=st.integers(1, 12), binary=st.booleans(),
       T=st.floats(0.05, 50.0, allow_nan=False), scale=st.sampled_from([0.1, 1.0, 30.0]),
       seed=st.integers(0, 2**31))
def test_tempered_kl_any_temperature_vs_reference(rows, k, binary, T, scale, seed):
    from distgan import ops, reference as ref

    rng = np.random.default_rng(seed)
    s, t = (rng.normal(0, scale, size=(rows, k)).astype(np.float32) for _ in range(2))
    got, want = ops.tempered_kl(s, t, T, binary=binary), ref.tempered_kl(s, t, T, binary=binary)
    assert np.isfinite(got) and abs(got - want) <= 1e-4 * max(1.0, abs(want)), (got, want)
    _close(ops.tempered_kl_backward(1.0, s, t, T, binary=binary),
           ref.tempered_kl_backward(1.0, s, t, T, binary=binary), 1e-4)


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9),
       scale=st.sampled_from([0.1, 1.0, 50.0]), seed=st.integers(0, 2**31))
def test_losses_any_shape_vs_reference(shape, scale, seed):
    from distgan import ops, reference as ref

    rng = np.random.default_rng(seed)
    x, y = (rng.normal(0, scale, size=shape).astype(np.float32) for _ in range(2))
    tgt = (rng.random(shape) < 0.5).astype(np.float32)
    for name, args in (("binary_cross_entropy_with_logits", (x, tgt)), ("l1_loss", (x, y)),
                       ("mse_loss", (x, y)), ("least_squares", (x, 1.0))):
        got, want = getattr(ops, name)(*args), getattr(ref, name)(*args)
        assert abs(got - want) <= 1e-4 * max(1.0, abs(want)), (name, got, want)
        # elementwise, with an absolute floor far below float32's resolution of the
        # terms (a saturated BCE gradient sigmoid(x) - 1 ~ 1e-14 is a rounded difference)
        for g, r in zip(np.atleast_1d(getattr(ops, name + "_backward")(1.0, *args)),
                        np.atleast_1d(getattr(ref, name + "_backward")(1.0, *args))):
            if r is not None:
                np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-9 / x.size, err_msg=name)
