"""Side-by-side benchmark of distgan and PyTorch on the CPU (DESIGN.md "Performance").

    python -m distgan.bench                       # threads 1,2; 5 runs per framework
    python -m distgan.bench --threads 1 --repeats 5
    python -m distgan.bench --quick --no-write    # a fast smoke run

The same models run through distgan and through PyTorch (``torch.nn.Sequential``
mirrors of the same specs, float32) with the same batch and thread count:

(a) one training iteration of ``models.dcgan(1.0)`` at batch 64, exactly as
    ``GAN.step``: G makes a fake batch; D on the real and on the fake batch
    (BCE with logits, batch-norm statistics of each batch), one Adam step of D;
    then D on the same fake again with D's parameter gradients skipped, its input
    gradient through G, one Adam step of G and the EMA update of G;
(b) one distillation iteration at batch 64 (``distill._distill_step``): teacher
    width 1.0, student width 1/4, weights out=1, kd=1, feat=0, adv=0.02, T=2,
    no data (the student critic sees teacher samples as real): teacher sample
    (eval), student sample, one Adam step of the student critic, output L1 +
    tempered binary KL through the frozen teacher critic (eval) + adversarial
    term through the student critic, one Adam step and EMA update of the student;
(c) sampling (eval mode, noise drawn inside the timed call) from the teacher and
    the width-1/4 student generator at batch 1 and 256: ``GAN.sample(n)`` against
    ``G(torch.randn(n, 100))`` under ``torch.inference_mode()``;
(d) the GEMM FLOPs of (a) (counted from the layer shapes: forward, weight- and
    input-gradient products of every linear/conv layer that (a) runs) divided by
    its median time, beside the rate of ``cblas_sgemm`` of distgan's OpenBLAS on
    a 1024x1024x1024 product with OpenBLAS's own threads set to the same count,
    measured in the same distgan process (and the rate of distgan's ``dg_sgemm``,
    which splits a product over its own thread pool);
and the peak memory of (a): the growth of the worker process's peak resident set
(``ru_maxrss``) from just before the models are built to the end of (a)'s timed
iterations (framework, inputs and interpreter already loaded; it covers the
parameters, gradients, optimiser state, activations and workspaces).

A second table, (e), takes (a) apart: each weighted layer of ``models.dcgan(1.0)``
alone at batch 64 (``distgan.nn.Network([spec], shape)`` against the torch mirror of
the same spec), gradients zeroed, forward in training mode, then backward with the
parameter gradients and the input gradient (which (a) skips for the generator's
first layer). It shows where each framework wins, layer by layer.

Each run starts one worker process per framework at the same thread count (thread
pools of two libraries in one process disturb each other). The workers take turns
block by block on each workload, one timing while the other waits idle, the first
turn alternating from block to block: a machine whose speed drifts (a shared host's
second vCPU, its cache, its memory bandwidth) then slows both frameworks alike, and
the ratio of one run holds where absolute times of separate processes scattered.
Every block starts with untimed calls (see ``_plan``), so each timed call runs warm,
as in a run of consecutive calls. Times are wall-clock medians over all timed
iterations of all runs; the ratio is PyTorch's time over distgan's (> 1: distgan is
faster); "per run pair" gives the spread of the runs' own ratios. The thread counts
take turns round by round (1, 2, then 2, 1, ...), so that the scaling of (a) compares
runs made side by side, not a slow phase of the host against a fast one; its "per
round" range is the spread of each round's own 1-thread over 2-thread times.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

BATCH = 64
LATENT = 100
T_KD = 2.0
DISTILL_WEIGHTS = {"out": 1.0, "kd": 1.0, "cls": 0.0, "feat": 0.0, "adv": 0.02}
MARK_BEGIN = "<!-- bench:begin -->"
MARK_END = "<!-- bench:end -->"

# (key, label, how it is timed: see _plan) of the timed workloads, in the order of the table
WORKLOADS = [
    ("train", "(a) train step, dcgan(1.0), batch 64", "step"),
    ("distill", "(b) distill step, 1.0 -> 0.25, batch 64", "step"),
    ("sample_t1", "(c) sample teacher, batch 1", "small"),
    ("sample_s1", "(c) sample student, batch 1", "small"),
    ("sample_t256", "(c) sample teacher, batch 256", "big"),
    ("sample_s256", "(c) sample student, batch 256", "big"),
]


@functools.lru_cache(maxsize=None)
def _layer_cases():
    """(key, label, spec, per-sample input shape) of every weighted layer of
    ``models.dcgan(1.0)`` (generator, then discriminator), for the per-layer rows;
    computed once per process (it builds both networks to read their shapes)."""
    from distgan import models
    from distgan.nn import Network

    spec, cases = models.dcgan(1.0), []
    for part, inp in (("generator", (spec["latent_dim"],)), ("discriminator", tuple(spec["image_shape"]))):
        net = Network(spec[part], inp)
        for i, (d, shape, out) in enumerate(zip(net.spec, net.shapes, net.shapes[1:])):
            t = d["type"]
            if t not in ("linear", "conv2d", "conv_transpose2d"):
                continue
            if t == "linear":
                what = f"linear {d['in_features']} -> {d['out_features']}"
            else:
                what = (f"{'conv' if t == 'conv2d' else 'conv-T'} {d['in_channels']} -> "
                        f"{d['out_channels']}, {shape[1]}x{shape[2]} -> {out[1]}x{out[2]}")
            cases.append((f"layer_{part[0]}{i}", f"(e) {part[0].upper()} layer {i}: {what}",
                          d, shape))
    return tuple(cases)


# (e) rows: each weighted layer of (a) alone at batch 64, forward in training mode, then
# backward with parameter and input gradients (gradients zeroed first)
LAYER_WORKLOADS = [(key, label, "layer") for key, label, _, _ in _layer_cases()]


def _maxrss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timeit(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


# How each workload is timed: (warm-up calls before the first block, timed calls in all,
# timed calls per block, warm-up calls before every later block). The two workers take
# turns block by block. Every block starts with untimed calls that bring the worker's
# weights and buffers back into cache after the other worker's turn, as in a run of
# consecutive calls: one training step or batch-256 sample before two timed ones, five
# batch-1 samples before 25.
_KIND = {key: kind for key, _, kind in WORKLOADS + LAYER_WORKLOADS}


def _plan(key, quick):
    kind = _KIND[key]
    if quick:
        return {"step": (1, 3, 2, 1), "small": (20, 50, 25, 5), "big": (1, 3, 2, 1),
                "layer": (1, 2, 2, 1)}[kind]
    return {"step": (2, 10, 2, 1), "small": (50, 200, 25, 5), "big": (2, 8, 2, 1),
            "layer": (2, 12, 3, 1)}[kind]


def _real_batch():
    rng = np.random.default_rng(0)
    return np.tanh(rng.normal(size=(BATCH, 1, 28, 28))).astype(np.float32)


def train_gemm_flops(gan, n=BATCH):
    """GEMM FLOPs of one GAN.step at batch n (unconditional model, n_critic = 1).

    Every linear/conv/conv-transpose layer does 2*MACs*n FLOPs per product; a
    discriminator step runs D forward and backward twice (weight gradients of
    every layer, input gradients of all but the first), the generator step D
    forward and input gradients of every layer, and G forward once, backward
    once (no input gradient for its first layer)."""
    def layer_flops(net):
        return [2 * l.macs(s) * n for l, s in zip(net.layers, net.shapes)
                if l.type in ("linear", "conv2d", "conv_transpose2d")]

    g, d = layer_flops(gan.generator), layer_flops(gan.discriminator)
    d_step = 2 * (sum(d) + sum(d) + sum(d[1:]))
    g_step = sum(d) + sum(d) + sum(g) + sum(g[1:])
    return sum(g) + d_step + g_step


# ----------------------------------------------------------------------------------------
# distgan worker
# ----------------------------------------------------------------------------------------

def _stages_distgan(threads, quick, res):
    """Sets up each workload in turn and yields (key, fn) for the worker loop to time;
    fills res with what is not a time."""
    import distgan
    import importlib

    from distgan import _core, models
    from distgan.gan import _Stream

    dmod = importlib.import_module("distgan.distill")   # distgan.distill is the function

    distgan.set_num_threads(threads)
    real = _real_batch()

    # (a) first, so that the peak-memory delta is (a)'s alone
    rss0 = _maxrss_bytes()
    gan = distgan.GAN(models.dcgan(1.0), seed=0)
    yield "train", lambda: gan.step(real)
    res["peak_mem_train"] = _maxrss_bytes() - rss0
    res["train_gflop"] = train_gemm_flops(gan) / 1e9
    del gan

    # (b)
    teacher = distgan.GAN(models.dcgan(1.0), seed=0)
    student = distgan.GAN(models.dcgan(0.25), seed=0)
    teacher._refresh_ema_stats()
    Gt, Dt = teacher.g_ema, teacher.discriminator
    Gs, Ds = student.generator, student.discriminator
    taps = dmod._feature_taps(Dt)
    stream = _Stream(7)

    def distill_step():
        dmod._distill_step(teacher, student, Gt, Dt, Gs, Ds, stream, BATCH, T_KD,
                           DISTILL_WEIGHTS, None, None, taps, True, "l1", None, False)

    yield "distill", distill_step

    # (c)
    for key, g, n in (("sample_t1", teacher, 1), ("sample_s1", student, 1),
                      ("sample_t256", teacher, 256), ("sample_s256", student, 256)):
        yield key, lambda: g.sample(n)
    del teacher, student, Gt, Dt, Gs, Ds

    # (e)
    from distgan.nn import Network

    rng = np.random.default_rng(2)
    for key, _, spec, shape in _layer_cases():
        net = Network([spec], shape)
        x = rng.standard_normal((BATCH,) + shape, dtype=np.float32)
        dy = rng.standard_normal((BATCH,) + net.output_shape, dtype=np.float32)

        def layer_step(net=net, x=x, dy=dy):
            net.zero_grad()
            net.forward(x, train=True)
            net.backward(dy)

        yield key, layer_step
    del net, layer_step

    # (d) GEMM rates on 1024^2, last: cblas_sgemm wakes OpenBLAS's own thread pool
    m = 1024
    rng = np.random.default_rng(1)
    A = rng.random((m, m), dtype=np.float32)
    B = rng.random((m, m), dtype=np.float32)
    C = np.zeros((m, m), np.float32)
    reps = 3 if quick else 10
    res["dg_sgemm_gflops"] = 2 * m ** 3 / statistics.median(
        _timeit(lambda: _core._sgemm(False, False, 1.0, A, B, 0.0, C), 2, reps)) / 1e9
    if hasattr(_core, "_cblas_sgemm"):
        res["cblas_sgemm_gflops"] = 2 * m ** 3 / statistics.median(
            _timeit(lambda: _core._cblas_sgemm(False, False, 1.0, A, B, 0.0, C, threads), 2, reps)) / 1e9
    res["blas"] = _core._blas_name()


# ----------------------------------------------------------------------------------------
# PyTorch worker
# ----------------------------------------------------------------------------------------

def _torch_net(spec_layers, torch):
    """A float32 nn.Sequential mirroring an unconditional distgan layer list."""
    nn = torch.nn
    mods, flat = [], True
    for d in spec_layers:
        t = d["type"]
        if t == "linear":
            mods.append(nn.Linear(d["in_features"], d["out_features"], bias=d.get("bias", True)))
            flat = True
        elif t == "conv2d":
            mods.append(nn.Conv2d(d["in_channels"], d["out_channels"], d["kernel_size"],
                                  d.get("stride", 1), d.get("padding", 0), bias=d.get("bias", True)))
            flat = False
        elif t == "conv_transpose2d":
            mods.append(nn.ConvTranspose2d(d["in_channels"], d["out_channels"], d["kernel_size"],
                                           d.get("stride", 1), d.get("padding", 0),
                                           d.get("output_padding", 0), bias=d.get("bias", True)))
            flat = False
        elif t == "batch_norm":
            mods.append((nn.BatchNorm1d if flat else nn.BatchNorm2d)(d["num_features"]))
        elif t == "relu":
            mods.append(nn.ReLU())
        elif t == "leaky_relu":
            mods.append(nn.LeakyReLU(d.get("negative_slope", 0.2)))
        elif t == "tanh":
            mods.append(nn.Tanh())
        elif t == "reshape":
            mods.append(nn.Unflatten(1, tuple(d["shape"])))
            flat = False
        elif t == "flatten":
            mods.append(nn.Flatten())
            flat = True
        else:
            raise ValueError(f"no torch mirror for {t!r}")
    return nn.Sequential(*mods)


class _TorchGAN:
    """G, D, their Adam optimisers and the EMA copy of G, as distgan.GAN holds them."""

    def __init__(self, width, torch):
        import copy

        from distgan import models

        spec = models.dcgan(width)
        self.torch = torch
        self.G = _torch_net(spec["generator"], torch)
        self.D = _torch_net(spec["discriminator"], torch)
        self.G_ema = copy.deepcopy(self.G)
        for p in self.G_ema.parameters():
            p.requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.t = 0

    def update_ema(self):
        self.t += 1
        decay = min(0.999, (1.0 + self.t) / (10.0 + self.t))
        with self.torch.no_grad():
            self.torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()),
                                      1.0 - decay)


def _stages_torch(threads, quick, res):
    """As _stages_distgan, for the PyTorch mirrors."""
    import torch

    torch.set_num_threads(threads)
    F = torch.nn.functional
    res["version"] = torch.__version__
    real = torch.from_numpy(_real_batch())
    ones = torch.ones(BATCH, 1)
    zeros = torch.zeros(BATCH, 1)
    bce = F.binary_cross_entropy_with_logits

    # (a)
    rss0 = _maxrss_bytes()
    torch.manual_seed(0)
    g = _TorchGAN(1.0, torch)
    G, D = g.G, g.D

    def train_step():
        z = torch.randn(BATCH, LATENT)
        fake = G(z)
        # discriminator step
        g.opt_d.zero_grad()
        bce(D(real), ones).backward()
        bce(D(fake.detach()), zeros).backward()
        g.opt_d.step()
        # generator step through D, D's parameter gradients skipped
        g.opt_g.zero_grad()
        for p in D.parameters():
            p.requires_grad_(False)
        bce(D(fake), ones).backward()
        for p in D.parameters():
            p.requires_grad_(True)
        g.opt_g.step()
        g.update_ema()

    yield "train", train_step
    res["peak_mem_train"] = _maxrss_bytes() - rss0
    del g, G, D, train_step

    # (b)
    teacher, student = _TorchGAN(1.0, torch), _TorchGAN(0.25, torch)
    Gt, Dt = teacher.G_ema.eval(), teacher.D.eval()
    for p in Dt.parameters():
        p.requires_grad_(False)
    Gs, Ds = student.G, student.D
    w = DISTILL_WEIGHTS
    T = T_KD

    def distill_step():
        z = torch.randn(BATCH, LATENT)
        with torch.no_grad():
            x_t = Gt(z)
        x_s = Gs(z)
        # student critic: teacher samples as real, student samples as fake
        student.opt_d.zero_grad()
        bce(Ds(x_t), ones).backward()
        bce(Ds(x_s.detach()), zeros).backward()
        student.opt_d.step()
        # student generator: L1 + tempered KL through the frozen teacher critic + adversarial
        student.opt_g.zero_grad()
        l_out = (x_s - x_t).abs().mean()
        with torch.no_grad():
            lt = Dt(x_t) / T
        ls = Dt(x_s) / T
        p = torch.sigmoid(lt)
        kd = T * T * (p * (F.logsigmoid(lt) - F.logsigmoid(ls))
                      + (1 - p) * (F.logsigmoid(-lt) - F.logsigmoid(-ls))).mean()
        for q in Ds.parameters():
            q.requires_grad_(False)
        adv = bce(Ds(x_s), ones)
        for q in Ds.parameters():
            q.requires_grad_(True)
        (w["out"] * l_out + w["kd"] * kd + w["adv"] * adv).backward()
        student.opt_g.step()
        student.update_ema()

    yield "distill", distill_step

    # (c)
    for net in (teacher.G_ema, student.G_ema):
        net.eval()

    def sampler(net, n):
        def f():
            with torch.inference_mode():
                net(torch.randn(n, LATENT))
        return f

    for key, net, n in (("sample_t1", teacher.G_ema, 1), ("sample_s1", student.G_ema, 1),
                        ("sample_t256", teacher.G_ema, 256), ("sample_s256", student.G_ema, 256)):
        yield key, sampler(net, n)
    del teacher, student

    # (e)
    gen = torch.Generator().manual_seed(2)
    for key, _, spec, shape in _layer_cases():
        m = _torch_net([spec], torch)
        x = torch.randn((BATCH,) + shape, generator=gen).requires_grad_(True)
        dy = torch.randn(m(x).shape, generator=gen)

        def layer_step(m=m, x=x, dy=dy):
            m.zero_grad()
            x.grad = None
            m(x).backward(dy)

        yield key, layer_step


# ----------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------

def _worker(fw, threads, quick):
    """The worker process: sets up each workload in turn and times it when the driver
    says so. Lines of JSON on the original stdout carry the protocol (anything the
    libraries print goes to stderr): the worker sends {"ready": key} once the workload
    is set up, answers {"op": "run", "warmup": w, "iters": n} with {"times": [...]}
    (w untimed calls, then n timed ones), moves on at {"op": "next"}, and ends with
    {"result": ...}, the figures that are not times."""
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # C libraries' prints too
    sys.stdout = sys.stderr

    def send(msg):
        proto.write(json.dumps(msg) + "\n")
        proto.flush()

    res = {"framework": fw, "threads": threads}
    stages = (_stages_distgan if fw == "distgan" else _stages_torch)(threads, quick, res)
    for key, fn in stages:
        send({"ready": key})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] != "run":
                break
            send({"times": _timeit(fn, cmd["warmup"], cmd["iters"])})
        del fn
    send({"result": res})


class _Worker:
    """A worker process of the driver (see _worker)."""

    def __init__(self, fw, threads, quick):
        env = dict(os.environ)
        # thread counts of every pool the worker might load (OpenMP for torch; OpenBLAS
        # of NumPy, which distgan does not use for its own compute)
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
                   OPENBLAS_NUM_THREADS="1" if fw == "distgan" else str(threads))
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        cmd = [sys.executable, "-m", "distgan.bench", "--worker", fw, "--threads", str(threads)]
        if quick:
            cmd.append("--quick")
        self.fw, self.threads = fw, threads
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, text=True)

    def send(self, **msg):
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.fail()

    def recv(self, field):
        line = self.proc.stdout.readline()
        if not line:
            self.fail()
        return json.loads(line)[field]

    def fail(self):
        self.proc.wait()
        self.err.seek(0)
        raise RuntimeError(f"{self.fw} worker ({self.threads} threads) failed "
                           f"(exit {self.proc.returncode}):\n{self.err.read()}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.err):
            f.close()


def _run_pair(threads, quick, torch_first):
    """One run: a distgan worker and a PyTorch worker at the same thread count, taking
    turns block by block on every workload (the first turn alternating from block to
    block). Returns the two workers' results, times included."""
    workers = [_Worker(fw, threads, quick) for fw in ("distgan", "torch")]
    try:
        times = [{}, {}]
        for key, _, _ in WORKLOADS + LAYER_WORKLOADS:
            for w in workers:
                got = w.recv("ready")
                if got != key:
                    raise RuntimeError(f"{w.fw} worker set up {got!r}, expected {key!r}")
            warmup, iters, block, rewarm = _plan(key, quick)
            for b in range(-(-iters // block)):
                order = (1, 0) if (b % 2 == 0) == torch_first else (0, 1)
                for i in order:
                    workers[i].send(op="run", warmup=warmup if b == 0 else rewarm,
                                    iters=min(block, iters - b * block))
                    times[i].setdefault(key, []).extend(workers[i].recv("times"))
                    # let the pool that just finished go idle (spinning threads park)
                    time.sleep(0.02)
            if key != LAYER_WORKLOADS[-1][0]:
                for w in workers:
                    w.send(op="next")
        # one worker at a time from here: the distgan worker measures the GEMM rates
        # (d) before it answers, and the other must not be exiting meanwhile
        results = []
        for w, t in zip(workers, times):
            w.send(op="next")
            r = w.recv("result")
            r["times"] = t
            results.append(r)
            if w.proc.wait() != 0:
                w.fail()
        return results
    finally:
        for w in workers:
            w.close()


def _fmt_time(s):
    if s >= 0.1:
        return f"{s * 1e3:.0f} ms"
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.0f} µs"


def _machine():
    model, cores = platform.processor() or platform.machine(), os.cpu_count()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = info.get("Model name", model).strip()
        cores = int(info.get("Core(s) per socket", "0").strip() or 0) * \
            int(info.get("Socket(s)", "1").strip() or 1) or cores
    except (OSError, ValueError):
        pass
    return f"{model}, {cores} cores"


def _loadavg():
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def summarize(runs, threads_list):
    """Markdown tables from the worker results."""
    lines = []
    agg = {}
    for t in threads_list:
        for fw in ("distgan", "torch"):
            rs = [r for r in runs if r["threads"] == t and r["framework"] == fw]
            a = {k: statistics.median([x for r in rs for x in r["times"][k]])
                 for k, _, _ in WORKLOADS + LAYER_WORKLOADS}
            a["peak_mem_train"] = statistics.median([r["peak_mem_train"] for r in rs])
            for k in ("train_gflop", "dg_sgemm_gflops", "cblas_sgemm_gflops", "blas", "version"):
                vals = [r[k] for r in rs if k in r]
                if vals:
                    a[k] = statistics.median(vals) if not isinstance(vals[0], str) else vals[0]
            a["run_medians"] = {k: [statistics.median(r["times"][k]) for r in rs]
                                for k, _, _ in WORKLOADS + LAYER_WORKLOADS}
            agg[(t, fw)] = a

    def spread(num, den, k):
        # the range of the runs' own ratios of workload k: the r-th run of `num`
        # over the r-th run of `den` (made one after the other)
        per = [a / b for a, b in zip(num["run_medians"][k], den["run_medians"][k])]
        return f"{min(per):.2f}-{max(per):.2f}x"

    def ratio_rows(workloads):
        lines.append("| workload | threads | distgan | PyTorch | PyTorch time / distgan time | "
                     "per run pair, min-max |")
        lines.append("|---|---|---|---|---|---|")
        for k, label, _ in workloads:
            for t in threads_list:
                d, p = agg[(t, "distgan")][k], agg[(t, "torch")][k]
                lines.append(f"| {label} | {t} | {_fmt_time(d)} | {_fmt_time(p)} | "
                             f"{p / d:.2f}x | {spread(agg[(t, 'torch')], agg[(t, 'distgan')], k)} |")
        lines.append("")

    ratio_rows(WORKLOADS)
    lines.append("| threads | GEMM GFLOP of (a) | (a) GEMM rate | cblas_sgemm 1024² | "
                 "(a) rate / cblas rate | dg_sgemm 1024² | peak mem (a) distgan | "
                 "peak mem (a) PyTorch |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for t in threads_list:
        d, p = agg[(t, "distgan")], agg[(t, "torch")]
        rate = d["train_gflop"] / d["train"]
        cb = d.get("cblas_sgemm_gflops")
        lines.append(
            f"| {t} | {d['train_gflop']:.2f} | {rate:.1f} GFLOP/s | "
            f"{f'{cb:.1f} GFLOP/s' if cb else 'n/a'} | {f'{100 * rate / cb:.0f} %' if cb else 'n/a'} | "
            f"{d['dg_sgemm_gflops']:.1f} GFLOP/s | {d['peak_mem_train'] / 2**20:.0f} MiB | "
            f"{p['peak_mem_train'] / 2**20:.0f} MiB |")
    if len(threads_list) > 1 and 1 in threads_list:
        t2 = max(threads_list)

        def scaling(fw):
            one, two = agg[(1, fw)], agg[(t2, fw)]
            return (f"{one['train'] / two['train']:.2f}x "
                    f"(per round {spread(one, two, 'train')})")

        lines.append("")
        lines.append(f"Scaling of (a), 1 -> {t2} threads: distgan {scaling('distgan')}, "
                     f"PyTorch {scaling('torch')}.")
    lines.append("")
    lines.append("(e) Each weighted layer of (a) alone, batch 64: forward (training mode), then "
                 "backward with parameter and input gradients.")
    lines.append("")
    ratio_rows(LAYER_WORKLOADS)
    return "\n".join(lines).rstrip("\n"), agg


def _write_doc(path, block):
    text = ""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    if MARK_BEGIN in text and MARK_END in text:
        head, rest = text.split(MARK_BEGIN, 1)
        _, tail = rest.split(MARK_END, 1)
        text = head + MARK_BEGIN + "\n" + block + "\n" + MARK_END + tail
    else:
        text = ("# Performance\n\n" + MARK_BEGIN + "\n" + block + "\n" + MARK_END + "\n" + text)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m distgan.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="subprocess runs per framework and thread count (default 5)")
    ap.add_argument("--quick", action="store_true", help="few iterations, one run (a smoke test)")
    ap.add_argument("--output", default=None,
                    help="markdown file whose bench section is replaced "
                         "(default: docs/PERFORMANCE.md of the source tree)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--worker", choices=("distgan", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        threads_list = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError:
        ap.error(f"--threads must be comma-separated ints, got {args.threads!r}")
    if not threads_list or min(threads_list) < 1:
        ap.error("--threads must list ints >= 1")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")

    if args.worker:
        _worker(args.worker, threads_list[0], args.quick)
        return 0

    repeats = 1 if args.quick else args.repeats
    started = datetime.datetime.now()
    load_before = _loadavg()
    runs = []
    # the thread counts take turns round by round (see the module docstring)
    for r in range(repeats):
        for t in (threads_list if r % 2 == 0 else threads_list[::-1]):
            pair = _run_pair(t, args.quick, torch_first=r % 2 == 1)
            runs.extend(pair)
            print(f"  threads={t} run {r + 1}/{repeats}: (a) " + ", ".join(
                f"{res['framework']} {_fmt_time(statistics.median(res['times']['train']))}"
                for res in pair), file=sys.stderr)
    table, agg = summarize(runs, threads_list)
    torch_version = next((r["version"] for r in runs if "version" in r), "?")
    blas = next((r["blas"] for r in runs if "blas" in r), "?")
    cmd = " ".join(["python -m distgan.bench"] + list(sys.argv[1:] if argv is None else argv))
    header = [
        f"Command: `{cmd.strip()}`  ",
        f"Date: {started:%Y-%m-%d %H:%M}; machine: {_machine()}; threads: "
        f"{', '.join(map(str, threads_list))}; runs per framework and thread count: {repeats}  ",
        f"PyTorch {torch_version}; distgan BLAS: {blas}; Python {platform.python_version()}  ",
        f"Load average (1/5/15 min) before / after: {load_before} — {_loadavg()}",
        "",
    ]
    block = "\n".join(header) + "\n" + table
    print(block)
    if not args.no_write:
        path = args.output or os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "PERFORMANCE.md")
        _write_doc(path, block)
        print(f"\nwritten to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
