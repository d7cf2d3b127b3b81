"""The comparison that matters: distilled students against the same students trained
from scratch (for the same wall time and for the same iterations) and against the
teacher, on Fashion-MNIST, in the evaluation classifier's feature space.

    python examples/fashion_mnist_report.py --teacher runs/teacher_w1/gan.safetensors \\
        --budget 240 --widths 0.25,0.125 --out runs/report
    python examples/fashion_mnist_report.py --teacher ... --ablation --budget 120 --out runs/ablation

Writes ``<out>/results.md`` (a markdown table), ``<out>/results.json``, sample
grids side by side and FID plots. ``--ablation`` instead removes each distillation
term in turn, sweeps T over {1, 2, 4, 8}, and compares black-box (no data) with
with-data distillation, at width 1/4.
"""
import argparse
import json
import os
import platform
import time

import numpy as np

import distgan
from distgan.evaluate import evaluate, evaluation_classifier, profile

RECIPE = dict(weights={"out": 1.0, "feat": 0.0, "kd": 0.0, "adv": 0.02}, init="prune", bank=16384)


def _row(name, kind, gan, data, clf, n_eval, wall, steps, extra=None):
    m = evaluate(gan, data, n=n_eval, classifier=clf, seed=123)
    p = profile(gan, repeats=5)
    r = {"name": name, "kind": kind, "params": gan.generator.num_params, "macs": gan.generator.macs,
         "latency_ms_b1": p.get("latency_ms_b1"), "latency_ms_b256": p.get("latency_ms_b256"),
         "fid": m["fid"], "kid": m["kid"][0] if isinstance(m["kid"], (tuple, list)) else m["kid"],
         "precision": m["precision"], "recall": m["recall"], "density": m["density"],
         "coverage": m["coverage"], "wall_s": wall, "steps": steps}
    if extra:
        r.update(extra)
    print(f"  {name}: FID {r['fid']:.2f}  ({steps} steps, {wall:.0f} s)")
    return r


CLOCK = time.perf_counter


def _scratch(width, data, budget=None, steps=None, seed=0):
    gan = distgan.GAN(distgan.models.dcgan(width=width), seed=seed)
    t0 = CLOCK()
    gan.fit(data, steps=steps if steps is not None else 10**9, time_budget=budget, progress=False,
            clock=CLOCK)
    return gan, CLOCK() - t0


def _distil(teacher, width, data, budget=None, steps=None, T=2.0, seed=0, **kw):
    opts = dict(RECIPE)
    opts.update(kw)
    student = distgan.GAN(distgan.models.dcgan(width=width), seed=seed)
    t0 = CLOCK()
    distgan.distill(teacher, student, T=T, data=data, steps=steps if steps is not None else 10**9,
                    time_budget=budget, progress=False, seed=seed, clock=CLOCK, **opts)
    return student, CLOCK() - t0


def _table(rows):
    head = ("| model | kind | G params | G MACs | latency b1 (ms) | latency b256 (ms) | FID | KID×1e3 | "
            "precision | recall | density | coverage | steps | time (s) |")
    lines = [head, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['kind']} | {r['params']:,} | {r['macs']:,} | "
            f"{r['latency_ms_b1']:.2f} | {r['latency_ms_b256']:.1f} | {r['fid']:.2f} | "
            f"{1e3 * r['kid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
            f"{r['density']:.3f} | {r['coverage']:.3f} | {r['steps']} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher checkpoint (GAN.save)")
    ap.add_argument("--widths", default="0.25,0.125")
    ap.add_argument("--budget", type=float, default=240, help="seconds per student")
    ap.add_argument("--n-eval", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ablation", action="store_true")
    ap.add_argument("--black-box", action="store_true", help="distil without data")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="budget in wall time, or in this process's CPU time (fair on a shared machine)")
    ap.add_argument("--weights", default=None,
                    help="loss weights of the recipe, e.g. out=1,feat=0,adv=0.02,kd=0")
    ap.add_argument("--out", default="runs/report")
    args = ap.parse_args(argv)

    distgan.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.weights:
        RECIPE["weights"] = {k: float(v) for k, v in (kv.split("=") for kv in args.weights.split(","))}
    os.makedirs(args.out, exist_ok=True)
    data = distgan.datasets.load("fashion-mnist")
    clf = evaluation_classifier(data)
    acc = clf.info.get("test_accuracy") if hasattr(clf, "info") else None
    teacher = distgan.load(args.teacher)
    rows = [_row("teacher w1", "teacher", teacher, data, clf, args.n_eval, 0.0, teacher.step_count)]
    samples = {"teacher": teacher.sample(64, seed=1)}

    if args.ablation:
        w = 0.25
        # short runs: a bank of 16k teacher samples would eat most of the budget
        RECIPE["bank"] = 4096
        base = dict(RECIPE)
        runs = [("recipe T=2", {}), ]
        for term in ("out", "feat", "adv"):
            ww = dict(base["weights"])
            on = ww[term] > 0
            ww[term] = 0.0 if on else 1.0
            runs.append((f"without {term}" if on else f"with {term} 1", {"weights": ww}))
        for T in (1.0, 2.0, 4.0, 8.0):
            ww = dict(base["weights"])
            ww["kd"] = 0.1
            runs.append((f"with kd 0.1, T={T:g}", {"weights": ww, "T": T}))
        runs.append(("random init", {"init": "random"}))
        runs.append(("no bank", {"bank": 0}))
        runs.append(("black-box (no data)", {"data": None}))
        for name, kw in runs:
            kw = dict(kw)
            T = kw.pop("T", 2.0)
            d = kw.pop("data", data)
            st, wall = _distil(teacher, w, d, budget=args.budget, T=T, **kw)
            rows.append(_row(name, "distilled", st, data, clf, args.n_eval, wall, st.step_count))
        sc, wall = _scratch(w, data, budget=args.budget)
        rows.append(_row("scratch w1/4", "scratch", sc, data, clf, args.n_eval, wall, sc.step_count))
    else:
        for w in (float(x) for x in args.widths.split(",")):
            tag = f"w1/{round(1 / w)}"
            st, wall = _distil(teacher, w, None if args.black_box else data, budget=args.budget)
            rows.append(_row(f"distilled {tag}", "distilled", st, data, clf, args.n_eval, wall,
                             st.step_count))
            sc, wall_sc = _scratch(w, data, budget=args.budget)
            rows.append(_row(f"scratch {tag}, equal time", "scratch", sc, data, clf, args.n_eval,
                             wall_sc, sc.step_count))
            si, wall_si = _scratch(w, data, steps=st.step_count)
            rows.append(_row(f"scratch {tag}, equal iterations", "scratch", si, data, clf,
                             args.n_eval, wall_si, si.step_count))
            samples[f"distilled {tag}"] = st.sample(64, seed=1)
            samples[f"scratch {tag}"] = sc.sample(64, seed=1)

    table = _table(rows)
    header = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{args.threads} thread(s); FID/KID/precision/recall/density/coverage over "
              f"{args.n_eval} samples in the feature space of distgan's Fashion-MNIST classifier "
              f"(test accuracy {acc if acc is None else f'{100 * acc:.2f} %'}).\n\n"
              f"Command: `python examples/fashion_mnist_report.py "
              f"{' '.join(argv) if argv else ' '.join(__import__('sys').argv[1:])}`\n")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(header + "\n" + table + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "args": vars(args), "classifier_accuracy": acc}, f, indent=1)
    distgan.plot.side_by_side(samples, path=os.path.join(args.out, "samples.png"))
    distgan.plot.fid_vs_params(rows, path=os.path.join(args.out, "fid_vs_params.png"))
    print(header)
    print(table)


if __name__ == "__main__":
    main()
