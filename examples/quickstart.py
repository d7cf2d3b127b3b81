"""distgan in one go: train a teacher GAN on Fashion-MNIST, distil it into a
student four times smaller, and compare them side by side.

    python examples/quickstart.py                 # a few minutes on 2 cores
    python examples/quickstart.py --teacher-steps 4690 --distill-steps 1000   # closer to the real thing

Writes ``runs/quickstart/teacher_vs_student.png`` and prints a table.
Set DISTGAN_QUICK=1 for a smoke run of a few seconds (used by the tests).
"""
import argparse
import os
import time

import distgan


def main(argv=None):
    quick = os.environ.get("DISTGAN_QUICK") == "1"
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher-width", type=float, default=1.0)
    ap.add_argument("--student-width", type=float, default=0.25)
    ap.add_argument("--teacher-steps", type=int, default=20 if quick else 600)
    ap.add_argument("--distill-steps", type=int, default=10 if quick else 300)
    ap.add_argument("--T", type=float, default=2.0)
    ap.add_argument("--out", default="runs/quickstart")
    args = ap.parse_args(argv)

    data = distgan.datasets.load("fashion-mnist")
    if quick:
        data = data.subset(512)
    print(data)
    t0 = time.perf_counter()
    teacher = distgan.GAN(distgan.models.dcgan(width=args.teacher_width), seed=0)
    teacher.fit(data, steps=args.teacher_steps)
    t_teacher = time.perf_counter() - t0

    t0 = time.perf_counter()
    student = distgan.GAN(distgan.models.dcgan(width=args.student_width), seed=0)
    student, history = distgan.distill(teacher, student, T=args.T, steps=args.distill_steps)
    t_student = time.perf_counter() - t0

    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "teacher_vs_student.png")
    distgan.plot.side_by_side({f"teacher (width {args.teacher_width})": teacher.sample(64, seed=1),
                               f"student (width {args.student_width})": student.sample(64, seed=1)},
                              path=path)
    student.save(os.path.join(args.out, "student.safetensors"))
    g_t, g_s = teacher.generator, student.generator
    print(f"\n| model | G params | G MACs/sample | trained for |")
    print(f"|---|---:|---:|---:|")
    print(f"| teacher | {g_t.num_params:,} | {g_t.macs:,} | {t_teacher:.0f} s |")
    print(f"| student | {g_s.num_params:,} ({g_t.num_params / g_s.num_params:.1f}x fewer) | "
          f"{g_s.macs:,} ({g_t.macs / g_s.macs:.1f}x fewer) | {t_student:.0f} s |")
    print(f"\nsamples side by side: {path}")


if __name__ == "__main__":
    main()
