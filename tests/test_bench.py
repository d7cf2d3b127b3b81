"""The benchmark script (python -m distgan.bench) runs end to end: a quick run at one
thread starts a distgan and a PyTorch worker, has them take turns on every workload and
prints the table of issue 6 with every row, and a row per weighted layer, with a
positive time for each framework and ratios that are those times' quotient. It also
writes its block into a markdown file between the markers, keeping the rest of the
file, and a failing worker surfaces as an error that carries the worker's own message.
"""
import re
import subprocess
import sys

import pytest

pytest.importorskip("torch")

from conftest import subprocess_env  # noqa: E402
from distgan import bench  # noqa: E402

UNIT = {"µs": 1e-6, "ms": 1e-3}


def _seconds(cell):
    value, unit = cell.strip().split()
    return float(value) * UNIT[unit]


def test_quick_run_prints_every_row_and_writes_its_block(tmp_path):
    doc = tmp_path / "PERF.md"
    doc.write_text("# Title\n\nbefore\n\n" + bench.MARK_BEGIN + "\nold table\n" + bench.MARK_END
                   + "\n\nafter\n")
    out = subprocess.run([sys.executable, "-m", "distgan.bench", "--quick", "--threads", "1",
                          "--output", str(doc)], capture_output=True, text=True, env=subprocess_env(),
                         timeout=600)
    assert out.returncode == 0, out.stderr
    rows = {}
    for line in out.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("("):
            rows[cells[0]] = cells
    # every workload of the issue, and one (e) row per weighted layer of dcgan(1.0)
    assert set(rows) == {label for _, label, _ in bench.WORKLOADS + bench.LAYER_WORKLOADS}
    assert sum(label.startswith("(e)") for label in rows) == 6
    for label, (_, threads, d, p, ratio, spread) in rows.items():
        assert threads == "1"
        td, tp = _seconds(d), _seconds(p)
        assert td > 0 and tp > 0
        # the ratio is the quotient of the printed (rounded) times
        assert float(ratio.rstrip("x")) == pytest.approx(tp / td, rel=0.02, abs=0.01), label
        lo, hi = (float(v) for v in re.fullmatch(r"([\d.]+)-([\d.]+)x", spread).groups())
        assert lo <= float(ratio.rstrip("x")) + 0.01 and hi >= float(ratio.rstrip("x")) - 0.01
    gemm = re.search(r"^\| 1 \| ([\d.]+) \| ([\d.]+) GFLOP/s \| ([\d.]+) GFLOP/s \| (\d+) % \|"
                     r" ([\d.]+) GFLOP/s \| (\d+) MiB \| (\d+) MiB \|$", out.stdout, re.M)
    assert gemm, out.stdout
    assert float(gemm.group(1)) == pytest.approx(17.08, abs=0.01)   # issue 6's count
    assert all(float(gemm.group(i)) > 0 for i in (2, 3, 5, 6, 7))
    text = doc.read_text()
    assert text.startswith("# Title\n\nbefore\n\n" + bench.MARK_BEGIN)
    assert text.endswith(bench.MARK_END + "\n\nafter\n")
    assert "old table" not in text and "| (a) train step" in text


def test_failing_worker_raises_with_its_message():
    # a worker the command line refuses exits at once: the driver's error carries the
    # worker's exit status and its stderr
    w = bench._Worker("nonsense", 1, True)
    try:
        with pytest.raises(RuntimeError, match=r"(?s)^nonsense worker \(1 threads\) failed "
                                               r"\(exit 2\):.*invalid choice: 'nonsense'"):
            w.recv("ready")
    finally:
        w.close()


def _fake_result(fw, threads, train):
    # a worker's result: the train step's times as given, every other workload 1 ms
    times = {k: [1e-3] for k, _, _ in bench.WORKLOADS + bench.LAYER_WORKLOADS}
    times["train"] = [train]
    return {"framework": fw, "threads": threads, "times": times, "peak_mem_train": 2**20,
            "train_gflop": 17.08, "dg_sgemm_gflops": 100.0, "cblas_sgemm_gflops": 100.0,
            "blas": "fake", "version": "fake"}


def test_thread_counts_take_turns_and_scaling_compares_each_round(monkeypatch, capsys):
    # (a)'s time at 1 and 2 threads per round: distgan's rounds scale 2.0x, 3.0x, 1.6x
    # (medians 0.2 s / 0.1 s: 2.00x), PyTorch's 1.5x in every round
    dg = {1: [0.2, 0.3, 0.2], 2: [0.1, 0.1, 0.125]}
    calls = []

    def fake_pair(threads, quick, torch_first):
        r = sum(t == threads for t, _ in calls)
        calls.append((threads, torch_first))
        return [_fake_result("distgan", threads, dg[threads][r]),
                _fake_result("torch", threads, 0.3 if threads == 1 else 0.2)]

    monkeypatch.setattr(bench, "_run_pair", fake_pair)
    assert bench.main(["--threads", "1,2", "--repeats", "3", "--no-write"]) == 0
    # round by round, the order of the thread counts and the first framework alternating
    assert calls == [(1, False), (2, False), (2, True), (1, True), (1, False), (2, False)]
    out = capsys.readouterr().out
    assert ("Scaling of (a), 1 -> 2 threads: distgan 2.00x (per round 1.60-3.00x), "
            "PyTorch 1.50x (per round 1.50-1.50x).") in out
