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
