"""Print the largest relative error of every distgan op against PyTorch, as a markdown table.

    python tests/error_table.py                  # distgan.ops (the C core)
    python tests/error_table.py --impl reference # the NumPy reference, for comparison

For each op: the maximum over its cases (tests/cases.py, the same cases as
tests/test_ops_vs_torch.py) of rel_err = max|a - b| / max|b| (conftest.py) for the forward
outputs and for the gradients, the worst case, and PASS/FAIL against 1e-4 (forward) and
1e-3 (backward). Exits 1 when any op fails or raises, 2 when the implementation is missing.
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

from cases import BWD_TOL, CASES, FWD_TOL, OPS  # noqa: E402
from conftest import SEED, load_impl, rel_err  # noqa: E402


def measure(impl, torch):
    """{op: dict(fwd=max err, bwd=max err or None, worst=case id, n=#cases, error=str|None)}."""
    rows = {op: dict(fwd=0.0, bwd=None, worst_fwd="", worst_bwd="", n=0, error=None)
            for op in OPS}
    for case in CASES:
        row = rows[case.op]
        row["n"] += 1
        inputs = case.make(np.random.default_rng(SEED))
        try:
            fwd, bwd = case.run(impl, inputs)
        except Exception as e:                     # report, keep measuring the other ops
            row["error"] = f"{case.name}: {type(e).__name__}: {e}"
            continue
        tfwd, tbwd = case.run_torch(torch, inputs)
        for got, want, key in ((fwd, tfwd, "fwd"), (bwd, tbwd, "bwd")):
            for name in want:
                err = rel_err(got[name], want[name]) if name in got else float("inf")
                if row[key] is None or err > row[key]:
                    row[key] = err
                    row["worst_" + key] = f"{case.name} ({name})"
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=["ops", "reference"], default="ops")
    args = ap.parse_args(argv)

    import torch
    torch.set_num_threads(1)
    impl = load_impl(args.impl)
    if impl is None:
        print(f"distgan.{args.impl} is not importable (distgan._core not built?)")
        return 2

    t0 = time.perf_counter()
    rows = measure(impl, torch)
    elapsed = time.perf_counter() - t0

    failed = False
    print(f"Relative error of distgan.{args.impl} against PyTorch {torch.__version__} (float32), "
          f"rel_err = max|a-b| / max|b|, thresholds forward {FWD_TOL:g}, backward {BWD_TOL:g}\n")
    print("| op | cases | forward max rel_err | backward max rel_err | result | worst case |")
    print("|---|---:|---:|---:|---|---|")
    for op, r in rows.items():
        if r["error"] is not None:
            failed = True
            print(f"| {op} | {r['n']} | - | - | FAIL | raised {r['error']} |")
            continue
        ok = r["fwd"] <= FWD_TOL and (r["bwd"] is None or r["bwd"] <= BWD_TOL)
        failed |= not ok
        bwd = "-" if r["bwd"] is None else f"{r['bwd']:.2e}"
        worst = r["worst_fwd"]
        if r["bwd"] is not None and r["bwd"] / BWD_TOL > r["fwd"] / FWD_TOL:
            worst = r["worst_bwd"]
        print(f"| {op} | {r['n']} | {r['fwd']:.2e} | {bwd} | {'PASS' if ok else 'FAIL'} "
              f"| {worst} |")
    print(f"\n{len(CASES)} cases in {elapsed:.2f} s: {'FAIL' if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
