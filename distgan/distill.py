"""Distillation of a trained GAN (the teacher) into a smaller one (the student).

Teacher ``G_t, D_t`` frozen (``G_t`` is the teacher's EMA generator, ``D_t`` its
critic, both in eval mode so that they are fixed functions); student ``G_s`` and
a student critic ``D_s``. The same noise ``z`` (and labels ``y``) feed both
generators: ``x_t = G_t(z, y)``, ``x_s = G_s(z, y)``. The student's loss is

``L = w_out L_out + w_kd L_kd + w_cls L_cls + w_feat L_feat + w_adv L_adv``

=========== ===================================================================
``out``      ``mean |x_s - x_t|`` (L1; ``output_loss="l2"`` for MSE)
``kd``       tempered binary KL on the teacher critic's logits:
             ``T^2 mean[p log(p/q) + (1-p) log((1-p)/(1-q))]``,
             ``p = sigmoid(D_t(x_t)/T)``, ``q = sigmoid(D_t(x_s)/T)``
``cls``      tempered categorical KL on class logits of a classifier ``c``:
             ``T^2 KL(softmax(c(x_t)/T) || softmax(c(x_s)/T))``
``feat``     ``sum_l mean |phi_l(x_s) - phi_l(x_t)|`` over D_t's activations
``adv``      the adversarial loss of ``D_s(x_s)`` (the student GAN's loss)
=========== ===================================================================

Every term and its gradient is computed in the C core. ``D_s`` sees real data
when ``data`` is given, otherwise teacher samples stand in for it (black-box
distillation).
"""
from __future__ import annotations

import math
import time
from collections import namedtuple

import numpy as np

from . import _core
from .gan import GAN, DivergenceError, _as_dataset, _StopFlag, _Stream, adversarial_loss
from .nn import BatchNorm, Conv2d, ConvTranspose2d, LabelConcat, Linear, Reshape

__all__ = ["distill", "DistillResult", "DEFAULT_WEIGHTS", "prune_init", "sweep_temperature"]

#: Default loss weights, chosen by the ablation in docs/RESULTS.md: at equal time the
#: output L1 plus a light adversarial term beat adding feature matching or the
#: tempered critic KL, whose passes through the teacher critic cost 2-5x per step.
DEFAULT_WEIGHTS = {"out": 1.0, "kd": 0.0, "cls": 0.0, "feat": 0.0, "adv": 0.02}

DistillResult = namedtuple("DistillResult", ["student", "history"])


# -- initialisation from the teacher's strongest channels ---------------------------------

def _strongest(scores, k):
    """Indices of the k largest scores, in increasing index order (stable)."""
    idx = np.argsort(-scores, kind="stable")[:k]
    return np.sort(idx)


def _group_sizes(layers):
    """For each weighted layer, how many consecutive output features form one
    channel: H*W when the output is reshaped to (C, H, W) before the next
    weighted layer (a generator's first linear), else 1 (a conv's channels)."""
    sizes = {}
    for i, l in enumerate(layers):
        if isinstance(l, (Linear, Conv2d, ConvTranspose2d)):
            sizes[i] = 1
            for nxt in layers[i + 1:]:
                if isinstance(nxt, Reshape):
                    sizes[i] = int(np.prod(nxt.spec["shape"][1:]))
                    break
                if nxt.param_shapes and not isinstance(nxt, BatchNorm):
                    break
    return sizes


def prune_init(teacher_net, student_net):
    """Initialise ``student_net`` from ``teacher_net`` by keeping, layer by layer,
    the output channels whose filters have the largest L1 norm (Li et al. 2017,
    "Pruning filters for efficient ConvNets"), and the matching input channels
    of the next layer and batch-norm entries.

    Both networks must be the same sequence of layer types with each student
    size at most the teacher's. Returns True on success, False (student left
    untouched) where the architectures do not allow it.
    """
    tl, sl = teacher_net.layers, student_net.layers
    if len(tl) != len(sl) or any(a.type != b.type for a, b in zip(tl, sl)):
        return False
    saved_p, saved_b = student_net.params.copy(), student_net.buffers.copy()
    groups = _group_sizes(tl)
    keep_in = None          # kept indices along the current feature/channel axis
    try:
        for i, (t, s) in enumerate(zip(tl, sl)):
            if isinstance(t, (Linear, Conv2d, ConvTranspose2d)):
                W = t.p["weight"]
                if isinstance(t, ConvTranspose2d):            # (C, OC, KH, KW)
                    Win = W if keep_in is None else W[keep_in]
                    scores = np.abs(Win).sum(axis=(0, 2, 3))
                    oc = s.p["weight"].shape[1]
                else:                                         # (OC, C, ...) linear and conv
                    Win = W if keep_in is None else W[:, keep_in]
                    scores = np.abs(Win).reshape(W.shape[0], -1).sum(axis=1)
                    oc = s.p["weight"].shape[0]
                g = groups[i]
                if oc % g or len(scores) % g:
                    raise ValueError
                chans = _strongest(scores.reshape(-1, g).sum(axis=1), oc // g)
                keep_out = (chans[:, None] * g + np.arange(g)[None, :]).reshape(-1)
                Wk = Win[:, keep_out] if isinstance(t, ConvTranspose2d) else Win[keep_out]
                if Wk.shape != s.p["weight"].shape or (("bias" in s.p) != ("bias" in t.p)):
                    raise ValueError
                s.p["weight"][...] = Wk
                if "bias" in s.p:
                    s.p["bias"][...] = t.p["bias"][keep_out]
                keep_in = keep_out
            elif isinstance(t, BatchNorm):
                k = keep_in if keep_in is not None else slice(None)
                for name in ("weight", "bias"):
                    s.p[name][...] = t.p[name][k]
                for name in ("running_mean", "running_var"):
                    s.b[name][...] = t.b[name][k]
            elif isinstance(t, Reshape):
                if keep_in is not None:
                    hw = int(np.prod(t.spec["shape"][1:]))
                    keep_in = keep_in[::hw] // hw
            elif t.type == "flatten":
                if keep_in is not None:
                    hw = int(np.prod(teacher_net.shapes[i][1:]))
                    keep_in = (keep_in[:, None] * hw + np.arange(hw)[None, :]).reshape(-1)
            elif isinstance(t, LabelConcat):
                if t.p["embedding"].shape != s.p["embedding"].shape:
                    raise ValueError
                s.p["embedding"][...] = t.p["embedding"]
                keep_in = None
            elif t.param_shapes:
                raise ValueError
    except (ValueError, IndexError):
        student_net.params[...] = saved_p
        student_net.buffers[...] = saved_b
        return False
    return True


# -- the distillation loop ----------------------------------------------------------------

def _feature_taps(net):
    """Default feature layers of a critic: the outputs of its LeakyReLU layers."""
    return [i for i, l in enumerate(net.layers) if l.type in ("leaky_relu", "relu")]


def distill(teacher, student, T=2.0, data=None, steps=None, epochs=None, batch_size=64,
            weights=None, online=False, init="prune", seed=0, critic="fresh",
            output_loss="l1", feature_layers=None, classifier=None, progress=True,
            checkpoint=None, checkpoint_every=1000, log_every=10, callback=None,
            time_budget=None, bank=0, clock=None):
    """Distil ``teacher`` into ``student``.

    Parameters
    ----------
    teacher, student : distgan.GAN, or distgan.Classifier for both
        A loaded checkpoint works as teacher. Two classifiers give Hinton
        distillation (see :func:`distgan.classifier.distill_classifier`).
    T : float
        Temperature of the tempered KL terms (> 0).
    data : Dataset, ndarray or (images, labels), optional
        Real data for the student critic; without it teacher samples stand in
        for real data (black-box distillation).
    steps, epochs : int
        Iterations (``epochs`` counts passes over ``data``, or over 60,000
        samples without data). Default: 2,000 steps.
    batch_size : int
    weights : dict, optional
        Loss weights for ``out``, ``kd``, ``cls``, ``feat``, ``adv``; missing
        keys take :data:`DEFAULT_WEIGHTS`.
    online : bool
        Train the teacher in the same loop (one GAN step per iteration; needs data).
    init : {"prune", "random"}
        Start the student generator from the teacher's strongest channels
        (where the architectures allow it) or keep its random initialisation.
    seed : int
    critic : {"fresh", "teacher"}
        The student critic starts at its own random initialisation, or as a copy
        of the teacher critic (needs the same discriminator spec).
    output_loss : {"l1", "l2"}
    feature_layers : list of int, optional
        Indices of D_t layers matched by ``feat`` (default: its activations).
    classifier : distgan.Classifier, optional
        The class head ``c`` of the ``cls`` term.
    progress : bool
    checkpoint : path, optional
        The student is saved there every ``checkpoint_every`` steps, at the end
        and on Ctrl-C.
    time_budget : float, optional
        Stop after this many seconds.
    clock : callable, optional
        The clock of ``time_budget`` (default wall time, ``time.perf_counter``;
        ``time.process_time`` budgets CPU time).
    bank : int
        When > 0, draw that many teacher samples (with their noise and labels)
        once, in batches of 256, and distil from random batches of this bank:
        the teacher generator then costs nothing per iteration (its samples are
        a fixed function of z). 0 runs the teacher on fresh noise every step.
        Not with ``online``.

    Returns
    -------
    DistillResult
        ``(student, history)``; the history holds per-logged-step losses of
        each term and the elapsed time.
    """
    if not (isinstance(teacher, GAN) and isinstance(student, GAN)):
        from .classifier import Classifier

        if isinstance(teacher, Classifier) and isinstance(student, Classifier):
            from .classifier import distill_classifier

            return distill_classifier(teacher, student, T=T, data=data, steps=steps,
                                      epochs=epochs, batch_size=batch_size, seed=seed,
                                      progress=progress, weights=weights)
        raise TypeError("distill expects two distgan.GAN objects or two distgan.Classifier "
                        f"objects, got {type(teacher).__name__} and {type(student).__name__}")
    if not (isinstance(T, (int, float)) and math.isfinite(T) and T > 0):
        raise ValueError(f"T must be a positive finite number, got {T!r}")
    if teacher.image_shape != student.image_shape or teacher.latent_dim != student.latent_dim:
        raise ValueError(f"teacher and student must share latent_dim and image shape: "
                         f"{teacher.latent_dim}/{teacher.image_shape} vs "
                         f"{student.latent_dim}/{student.image_shape}")
    if teacher.num_classes != student.num_classes:
        raise ValueError("teacher and student must have the same num_classes")
    w = dict(DEFAULT_WEIGHTS)
    if weights:
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        w.update({k: float(v) for k, v in weights.items()})
    if any(v < 0 or not math.isfinite(v) for v in w.values()):
        raise ValueError(f"weights must be finite and >= 0, got {w}")
    if w["cls"] > 0 and classifier is None:
        raise ValueError("weights['cls'] > 0 needs classifier=")
    if init not in ("prune", "random"):
        raise ValueError(f"init must be 'prune' or 'random', got {init!r}")
    if critic not in ("fresh", "teacher"):
        raise ValueError(f"critic must be 'fresh' or 'teacher', got {critic!r}")
    if output_loss not in ("l1", "l2"):
        raise ValueError(f"output_loss must be 'l1' or 'l2', got {output_loss!r}")
    if online and data is None:
        raise ValueError("online=True trains the teacher too and needs data")
    if not isinstance(bank, int) or bank < 0:
        raise ValueError(f"bank must be an int >= 0, got {bank!r}")
    if bank and online:
        raise ValueError("bank= and online=True exclude each other (an online teacher changes)")
    if bank and bank < batch_size:
        raise ValueError(f"bank ({bank}) must hold at least one batch ({batch_size})")
    ds = _as_dataset(data) if data is not None else None
    if ds is not None and tuple(ds.images.shape[1:]) != student.image_shape:
        raise ValueError(f"data images are {tuple(ds.images.shape[1:])}, the models make "
                         f"{student.image_shape}")
    if ds is not None and student.num_classes is not None and ds.labels is None:
        raise ValueError("a conditional student needs labelled data")
    if not isinstance(batch_size, int) or batch_size < 2:
        raise ValueError(f"batch_size must be an int >= 2, got {batch_size!r}")
    per_epoch = (len(ds) if ds is not None else 60000) // batch_size
    if steps is None:
        steps = int(round(epochs * per_epoch)) if epochs is not None else 2000
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")

    Gt = teacher.generator if online else teacher.g_ema
    Dt = teacher.discriminator
    Gs, Ds = student.generator, student.discriminator
    if student.step_count == 0:
        if init == "prune":
            teacher._refresh_ema_stats()
            student.config["init_from_teacher"] = bool(prune_init(Gt, Gs))
            if student.config["init_from_teacher"]:
                student.g_ema.copy_from(Gs)
        if critic == "teacher":
            if Ds.spec != Dt.spec:
                raise ValueError("critic='teacher' needs the student critic spec to equal the teacher's")
            Ds.copy_from(Dt)
    taps = list(feature_layers) if feature_layers is not None else _feature_taps(Dt)
    need_dt = w["kd"] > 0 or w["feat"] > 0
    stream = _Stream(seed * 2 + 7, student.step_count * batch_size * (student.latent_dim + 1))
    hist = student.history.setdefault("distill", {})
    for k in ("step", "time", "out", "kd", "cls", "feat", "adv", "d_loss"):
        hist.setdefault(k, [])

    clock = clock or time.perf_counter
    c0 = clock()
    teacher._refresh_ema_stats()
    t0 = time.perf_counter()
    tbank = _make_bank(teacher, Gt, bank, batch_size, seed) if bank else None

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="distill", unit="it")
    batches = None
    epoch = 0
    end = student.step_count + steps
    try:
        with _StopFlag() as flag:
            while student.step_count < end and not flag.stop:
                if time_budget is not None and clock() - c0 > time_budget:
                    break
                real = labels = None
                if ds is not None:
                    if batches is None:
                        batches = ds.batches(batch_size, seed=seed, epoch=epoch)
                    try:
                        real, labels = next(batches)
                    except StopIteration:
                        epoch += 1
                        batches = ds.batches(batch_size, seed=seed, epoch=epoch)
                        real, labels = next(batches)
                    if student.num_classes is None:
                        labels = None
                    if online:
                        teacher.step(real, labels)
                terms = _distill_step(teacher, student, Gt, Dt, Gs, Ds, stream, batch_size, T, w,
                                      real, labels, taps, need_dt, output_loss, classifier,
                                      online, tbank)
                student.step_count += 1
                for k, v in terms.items():
                    if not math.isfinite(v):
                        raise DivergenceError(student.step_count, f"{k} loss", v)
                s = student.step_count
                if s % log_every == 0 or s == end:
                    el = time.perf_counter() - t0
                    hist["step"].append(s)
                    hist["time"].append(el)
                    for k in ("out", "kd", "cls", "feat", "adv", "d_loss"):
                        hist[k].append(terms.get(k, 0.0))
                    if bar is not None:
                        bar.set_postfix(out=f"{terms.get('out', 0):.3f}", feat=f"{terms.get('feat', 0):.3f}",
                                        adv=f"{terms.get('adv', 0):.3f}")
                if bar is not None:
                    bar.update(1)
                if callback is not None:
                    callback(student, s, terms)
                if checkpoint is not None and checkpoint_every and s % checkpoint_every == 0:
                    student.save(checkpoint)
    finally:
        if bar is not None:
            bar.close()
    if checkpoint is not None:
        student.save(checkpoint)
    student._ema_stats_step = -1
    return DistillResult(student, hist)


def _make_bank(teacher, Gt, n, batch_size, seed):
    """n teacher samples with the noise and labels that made them."""
    stream = _Stream(seed * 2 + 11)
    z = stream.normal((n, teacher.latent_dim))
    y = stream.integers(teacher.num_classes, n) if teacher.num_classes is not None else None
    x = np.empty((n,) + teacher.image_shape, np.float32)
    for i in range(0, n, 256):
        j = min(n, i + 256)
        x[i:j] = Gt.forward(z[i:j], None if y is None else y[i:j], train=False)
    return {"z": z, "y": y, "x": x}


def _distill_step(teacher, student, Gt, Dt, Gs, Ds, stream, n, T, w, real, labels, taps,
                  need_dt, output_loss, classifier, online=False, tbank=None):
    """One distillation iteration; returns the value of each term."""
    terms = {}
    if tbank is not None:
        # a random batch of the bank; the indices come from the same counter stream
        idx = stream.integers(len(tbank["z"]), n)
        z = tbank["z"][idx]
        y = None if tbank["y"] is None else tbank["y"][idx]
        x_t = tbank["x"][idx]
    else:
        z = stream.normal((n, student.latent_dim))
        y = None
        if student.num_classes is not None:
            y = labels if labels is not None else stream.integers(student.num_classes, n)
        # online: the live teacher generator with batch statistics (its EMA copy
        # has no current standing statistics while the teacher trains)
        x_t = Gt.forward(z, y, train=online).copy()
    x_s = Gs.forward(z, y, train=True)

    # student critic: real (or teacher samples) against student samples
    if w["adv"] > 0:
        Ds.zero_grad()
        out = Ds.forward(real if real is not None else x_t, y, train=True)
        lr_, d = adversarial_loss(student.config["loss"], out, True)
        Ds.backward(d, need_dx=False)
        out = Ds.forward(x_s, y, train=True)
        lf_, d = adversarial_loss(student.config["loss"], out, False)
        Ds.backward(d, need_dx=False)
        student.opt_d.step()
        terms["d_loss"] = lr_ + lf_

    Gs.zero_grad()
    dx = np.zeros_like(x_s)
    if w["out"] > 0:
        if output_loss == "l1":
            terms["out"] = _core._l1_forward(x_s, x_t)
            _core._l1_backward(dx, None, x_s, x_t, w["out"])
        else:
            terms["out"] = _core._mse_forward(x_s, x_t)
            _core._mse_backward(dx, None, x_s, x_t, w["out"])
    if need_dt:
        # the critic's features are tapped (and the teacher's copied) only when used
        use = taps if w["feat"] > 0 else []
        lt, ft = Dt.forward(x_t, y, train=False, taps=use)
        lt = lt.reshape(-1).copy()
        ft = [f.copy() for f in ft]
        ls, fs = Dt.forward(x_s, y, train=False, taps=use)
        dlogit = np.zeros_like(ls)
        if w["kd"] > 0:
            s_ = ls.reshape(-1)
            terms["kd"] = _core._distill_kl_forward(s_, lt, float(T), 1)
            _core._distill_kl_backward(dlogit.reshape(-1), s_, lt, float(T), 1, w["kd"])
        tap_grads = {}
        if w["feat"] > 0:
            total = 0.0
            for i, a, b in zip(taps, fs, ft):
                g = np.zeros_like(a)
                total += _core._l1_forward(a, b)
                _core._l1_backward(g, None, a, b, w["feat"])
                tap_grads[i] = g
            terms["feat"] = total
        dx += Dt.backward(dlogit, need_dx=True, param_grads=False, tap_grads=tap_grads)
    if w["cls"] > 0:
        net = classifier.network
        ct = net.forward(x_t, train=False).copy()
        cs = net.forward(x_s, train=False)
        dcs = np.zeros_like(cs)
        terms["cls"] = _core._distill_kl_forward(cs, ct, float(T), 0)
        _core._distill_kl_backward(dcs, cs, ct, float(T), 0, w["cls"])
        dx += net.backward(dcs, need_dx=True, param_grads=False)
    if w["adv"] > 0:
        out = Ds.forward(x_s, y, train=True)
        terms["adv"], d = adversarial_loss(student.config["loss"], out, "gen")
        dx += w["adv"] * Ds.backward(d, need_dx=True, param_grads=False)
    Gs.backward(dx, need_dx=False)
    student.opt_g.step()
    student.update_ema()
    return terms


def sweep_temperature(teacher, student_spec, Ts=(1, 2, 4, 8), data=None, eval_data=None,
                      steps=500, weights=None, kd=0.1, seed=0, n_eval=2000, plot_path=None,
                      progress=False, **distill_kw):
    """Quality of distilled students against the temperature T.

    For each T a fresh student (``GAN(student_spec, seed=seed)``) is distilled for
    ``steps`` iterations with the tempered critic KL switched on (weight ``kd``
    unless ``weights`` sets one), then evaluated with :func:`distgan.evaluate`.

    Parameters
    ----------
    teacher : GAN
    student_spec : dict
        A model spec, e.g. ``models.dcgan(width=0.25)``.
    Ts : sequence of float
    data : Dataset, optional
        Real data for the student critic (black-box distillation without it).
    eval_data : Dataset or str, optional
        What the students are evaluated against (default ``data``; required
        when ``data`` is None).
    steps, weights, kd, seed : as for :func:`distill`
    n_eval : int
        Samples per side for the metrics.
    plot_path : str, optional
        Writes the quality-against-T plot there.
    **distill_kw
        Passed on to :func:`distill` (``bank``, ``batch_size``, ``init`` ...).

    Returns
    -------
    list of dict
        One row per T: ``T``, ``steps``, ``seconds`` and the metrics of
        :func:`distgan.evaluate` (``fid`` ... for images, ``modes`` ... for toy sets).
    """
    from .evaluate import evaluate

    eval_data = eval_data if eval_data is not None else data
    if eval_data is None:
        raise ValueError("sweep_temperature needs eval_data (or data) to evaluate the students")
    Ts = [float(T) for T in Ts]
    if not Ts or any(not (math.isfinite(T) and T > 0) for T in Ts):
        raise ValueError(f"Ts must be positive finite temperatures, got {Ts}")
    w = dict(DEFAULT_WEIGHTS)
    w.update(weights or {})
    if w["kd"] == 0 and w["cls"] == 0:
        w["kd"] = float(kd)
    rows = []
    for T in Ts:
        student = GAN(student_spec, seed=seed)
        t0 = time.perf_counter()
        distill(teacher, student, T=T, data=data, steps=steps, weights=w, seed=seed,
                progress=progress, **distill_kw)
        secs = time.perf_counter() - t0
        m = evaluate(student, eval_data, n=n_eval, seed=seed)
        rows.append({"T": T, "steps": student.step_count, "seconds": secs, **m})
    if plot_path is not None:
        from . import plot

        key = "fid" if "fid" in rows[0] else "modes"
        plot.fid_vs_T([r["T"] for r in rows], [r[key] for r in rows], path=plot_path,
                      label=f"{key}, kd weight {w['kd']:g}")
    return rows
