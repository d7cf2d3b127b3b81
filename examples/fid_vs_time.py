"""FID against training time: a distilled student and the same student trained from
scratch, evaluated at several points of one CPU-time budget, beside the teacher.

    python examples/fid_vs_time.py --teacher runs/teacher_w1/gan.safetensors \\
        --width 0.25 --points 40,80,160,320,480 --out runs/curve_w4

The two students train at the same time, in two Python threads (the core releases
the GIL), each with one core thread and its own CPU-time clock
(``time.thread_time``), paused while it is evaluated: the time axis counts training
only, and whatever load the machine carries falls on both alike. The distilled
student's budget includes drawing its bank of teacher samples. Writes
``<out>/curve.json``, ``<out>/curve.md`` and ``<out>/fid_vs_time.png``.
"""
import os

# one thread everywhere (NumPy's own OpenBLAS too, used by the metrics): the CPU-time
# clock then counts the training work and nothing spinning beside it
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import distgan  # noqa: E402
from distgan.evaluate import evaluate, evaluation_classifier  # noqa: E402

RECIPE = dict(weights={"out": 1.0, "feat": 0.0, "kd": 0.0, "adv": 0.02}, init="prune", bank=16384)


class PausableCPUClock:
    """The calling thread's CPU time since the first call, minus the time spent
    evaluating. Create and use it in the thread it measures."""

    def __init__(self):
        self.offset = time.thread_time()

    def __call__(self):
        return time.thread_time() - self.offset

    def evaluate_at(self, points, fn):
        """A training callback that calls ``fn(gan, step, t)`` once the clock passes
        each of ``points``, off the clock."""
        todo = sorted(points)

        def callback(gan, step, losses):
            t = self()
            while todo and t >= todo[0]:
                t0 = time.thread_time()
                fn(gan, step, todo.pop(0))
                self.offset += time.thread_time() - t0
        return callback


def run(kind, teacher, width, data, points, evaluate_fn, seed, rows):
    clock = PausableCPUClock()

    def record(gan, step, t):
        fid = evaluate_fn(gan)
        rows.append({"kind": kind, "t": t, "step": step, "fid": fid})
        print(f"  {kind:9s} t={t:5.0f} s  step {step:6d}  FID {fid:6.2f}", flush=True)

    cb = clock.evaluate_at(points, record)
    budget = max(points) + 1e-3
    student = distgan.GAN(distgan.models.dcgan(width=width), seed=seed)
    if kind == "distilled":
        distgan.distill(teacher, student, T=2.0, data=data, steps=10**9, time_budget=budget,
                        clock=clock, callback=cb, progress=False, seed=seed, **RECIPE)
    else:
        student.fit(data, steps=10**9, time_budget=budget, clock=clock, callback=cb,
                    progress=False)
    for t in points[len(rows):]:    # points the budget ran out before (no step after them)
        record(student, student.step_count, t)


def plot_curve(rows, teacher_fid, width, n_eval, path):
    plt = distgan.plot._pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for kind, style in (("distilled", "o-"), ("scratch", "s--")):
        r = [x for x in rows if x["kind"] == kind]
        ax.plot([x["t"] for x in r], [x["fid"] for x in r], style, label=f"{kind} w{width:g}")
    ax.axhline(teacher_fid, color="k", lw=0.8, ls=":", label="teacher w1")
    ax.set_xscale("log")
    ts = sorted({x["t"] for x in rows})
    ax.set_xticks(ts)
    ax.set_xticklabels([f"{t:g}" for t in ts])
    ax.minorticks_off()
    ax.set_ylim(bottom=0.9 * teacher_fid)
    ax.set_xlabel("training CPU seconds (one thread each)")
    ax.set_ylabel(f"FID (n={n_eval})")
    ax.legend()
    ax.set_title(f"distilled vs scratch student (width {width:g}), same CPU time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--points", default="40,80,160,320,480", help="CPU seconds")
    ap.add_argument("--n-eval", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/curve")
    ap.add_argument("--replot", action="store_true",
                    help="only redraw <out>/fid_vs_time.png from <out>/curve.json")
    args = ap.parse_args(argv)
    if args.replot:
        with open(os.path.join(args.out, "curve.json")) as f:
            c = json.load(f)
        plot_curve(c["rows"], c["teacher_fid"], c["args"]["width"], c["args"]["n_eval"],
                   os.path.join(args.out, "fid_vs_time.png"))
        return
    distgan.set_num_threads(1)
    points = [float(p) for p in args.points.split(",")]
    os.makedirs(args.out, exist_ok=True)
    data = distgan.datasets.load("fashion-mnist")
    clf = evaluation_classifier("fashion-mnist", progress=False)
    teacher = distgan.load(args.teacher)

    def fid_of(gan):
        return float(evaluate(gan, data, n=args.n_eval, classifier=clf, seed=123)["fid"])

    teacher_fid = fid_of(teacher)
    print(f"teacher FID {teacher_fid:.2f}")
    results = {"distilled": [], "scratch": []}
    errors = []

    def work(kind):
        try:
            run(kind, teacher, args.width, data, points, fid_of, args.seed, results[kind])
        except BaseException as e:          # surfaced below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    rows = results["distilled"] + results["scratch"]
    by = {(r["kind"], r["t"]): r for r in rows}
    lines = [f"Width {args.width}, one core thread per student (the two trained side by side), FID over {args.n_eval} samples; teacher FID "
             f"{teacher_fid:.2f}. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
             f"on {platform.machine()}.", "",
             "| CPU s | distilled FID (steps) | scratch FID (steps) | distilled / scratch | "
             "distilled / teacher |", "|---:|---:|---:|---:|---:|"]
    for t in points:
        d, s = by[("distilled", t)], by[("scratch", t)]
        lines.append(f"| {t:.0f} | {d['fid']:.2f} ({d['step']}) | {s['fid']:.2f} ({s['step']}) | "
                     f"{d['fid'] / s['fid']:.2f} | {d['fid'] / teacher_fid:.2f} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(args.out, "curve.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, "curve.json"), "w") as f:
        json.dump({"args": vars(args), "teacher_fid": teacher_fid, "rows": rows}, f, indent=1)
    plot_curve(rows, teacher_fid, args.width, args.n_eval,
               os.path.join(args.out, "fid_vs_time.png"))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
