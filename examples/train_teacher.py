"""Train a DCGAN teacher on Fashion-MNIST and save its checkpoint, samples and losses.

    python examples/train_teacher.py --width 1.0 --epochs 5 --out runs/teacher
    python examples/train_teacher.py --conditional --epochs 5 --out runs/teacher_cond

Writes ``<out>/gan.safetensors`` (checkpointed during training; a rerun with
the same arguments resumes from it), ``<out>/samples.png``, ``<out>/losses.png``
and ``<out>/train.json`` (seconds per epoch, steps, final losses).
"""
import argparse
import json
import os
import time

import distgan


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--epochs", type=float, default=5)
    ap.add_argument("--steps", type=int, default=None, help="overrides --epochs")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--conditional", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--subset", type=int, default=None, help="train on the first N images")
    ap.add_argument("--out", default="runs/teacher")
    args = ap.parse_args(argv)

    if args.threads:
        distgan.set_num_threads(args.threads)
    data = distgan.datasets.load(args.data)
    if args.subset:
        data = data.subset(args.subset)
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "gan.safetensors")
    if os.path.exists(ckpt):
        gan = distgan.load(ckpt)
        print(f"resuming {ckpt} at step {gan.step_count}")
    else:
        spec = distgan.models.dcgan(width=args.width, num_classes=10 if args.conditional else None,
                                    image_shape=data.image_shape)
        gan = distgan.GAN(spec, seed=args.seed)
    per_epoch = len(data) // args.batch_size
    total = args.steps if args.steps is not None else int(round(args.epochs * per_epoch))
    todo = max(0, total - gan.step_count)
    print(gan)
    t0 = time.perf_counter()
    gan.fit(data, steps=todo, batch_size=args.batch_size, checkpoint=ckpt, checkpoint_every=500)
    secs = time.perf_counter() - t0
    labels = [i % 10 for i in range(100)] if args.conditional else None
    distgan.plot.grid(gan.sample(100, labels=labels, seed=0), os.path.join(args.out, "samples.png"), nrow=10)
    distgan.plot.losses(gan.history, os.path.join(args.out, "losses.png"), keys=["d_loss", "g_loss"],
                        title=f"DCGAN width {args.width} on {args.data}")
    info = {"steps": gan.step_count, "steps_this_run": todo, "seconds_this_run": secs,
            "seconds_per_epoch": secs / max(todo, 1) * per_epoch, "threads": distgan.get_num_threads(),
            "batch_size": args.batch_size, "final_d_loss": gan.history["d_loss"][-1] if gan.history["d_loss"] else None,
            "final_g_loss": gan.history["g_loss"][-1] if gan.history["g_loss"] else None}
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
