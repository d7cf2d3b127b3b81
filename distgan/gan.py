"""distgan.GAN: a generator and a discriminator trained adversarially on the C core.

One training iteration (:meth:`GAN.step`) is, per DCGAN practice
(Radford et al. 2016; the non-saturating loss of Goodfellow et al. 2014):

1. ``discriminator_step``: ``fake = G(z)``; D's gradients from the loss on a
   real batch and on ``fake`` (separate batch-norm statistics, as in PyTorch's
   DCGAN example); one Adam update of D (repeated ``n_critic`` times with fresh
   noise).
2. ``generator_step``: D's input gradient at ``fake`` seeds G's output gradient
   (D's parameter gradients are not computed: their GEMMs are skipped); one Adam
   update of G; the EMA copy of G moves towards G.

Sampling uses the EMA generator with batch-norm statistics re-estimated for
the averaged weights ("standing statistics", Brock et al. 2019), in eval mode,
so a batch of one is as good as a batch of 256.
"""
from __future__ import annotations

import math
import signal
import threading
import time

import numpy as np

from . import _core
from . import checkpoint as _ckpt
from .nn import Network
from .optim import Adam

__all__ = ["GAN", "DivergenceError", "load"]

_LOSSES = ("ns", "hinge", "ls")


_INT_MAX = 2**31 - 1


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss; ``step`` and ``term`` say where."""

    def __init__(self, step, term, value):
        super().__init__(f"non-finite {term} ({value}) at step {step}; training stopped "
                         f"(the last checkpoint written, if any, is intact)")
        self.step, self.term, self.value = step, term, value


def _check_spec(spec):
    if not isinstance(spec, dict) or "generator" not in spec or "discriminator" not in spec:
        raise ValueError("spec must be a model spec dict with 'generator' and 'discriminator' "
                         "(use distgan.models.dcgan(...) or distgan.models.mlp(...))")


def adversarial_loss(kind, logits, real_target):
    """Loss and logit gradient of one side of the adversarial game, in the C core.

    ``kind`` is "ns" (BCE with logits against 1 or 0), "hinge" or "ls".
    For the discriminator, ``real_target`` is True on real data and False on
    fakes; for the generator pass ``"gen"``.
    Returns (loss, dlogits) with dlogits the gradient of the mean loss.
    """
    x = logits.reshape(-1)
    dx = np.zeros_like(x)
    if kind == "ns":
        t = 1.0 if real_target in (True, "gen") else 0.0
        y = np.full_like(x, t)
        loss = _core._bce_logits_forward(x, y)
        _core._bce_logits_backward(dx, x, y, 1.0)
    elif kind == "hinge":
        if real_target == "gen":
            loss = _core._hinge_gen_forward(x)
            _core._hinge_gen_backward(dx, 1.0)
        else:
            sign = 1.0 if real_target else -1.0
            loss = _core._hinge_forward(x, sign)
            _core._hinge_backward(dx, x, sign, 1.0)
    elif kind == "ls":
        t = 1.0 if real_target in (True, "gen") else 0.0
        loss = _core._least_squares_forward(x, t)
        _core._least_squares_backward(dx, x, t, 1.0)
    else:
        raise ValueError(f"loss must be one of {_LOSSES}, got {kind!r}")
    return float(loss), dx.reshape(logits.shape)


_NOISE_AHEAD = 64           # one-image samples whose noise GAN._normals draws at once


class _Stream:
    """A position in a counter-based random stream (seed, offset)."""

    def __init__(self, seed, offset=0):
        self.seed = int(seed) & 0xFFFFFFFFFFFFFFFF
        self.offset = int(offset)

    def normal(self, shape):
        out = np.empty(shape, np.float32)
        _core._rng_normal(out, self.seed, self.offset)
        self.offset += out.size
        return out

    def integers(self, k, n):
        u = np.empty(n, np.float32)
        _core._rng_uniform(u, self.seed, self.offset, 0.0, 1.0)
        self.offset += n
        return np.minimum((u * k).astype(np.int64), k - 1)


def _as_dataset(data):
    """A Dataset from distgan.datasets, or an (images[, labels]) array pair."""
    if hasattr(data, "images") and hasattr(data, "batches"):
        return data
    from .datasets import Dataset

    if isinstance(data, tuple) and len(data) == 2:
        images, labels = data
    else:
        images, labels = data, None
    images = np.asarray(images)
    if images.dtype != np.float32:
        raise TypeError(f"data images must be float32 in [-1, 1], got {images.dtype}")
    return Dataset(images=images, labels=None if labels is None else np.asarray(labels, np.int64),
                   name="array")


# R1's finite-difference step along g, as a share of the real batch's RMS. With the
# activations' gains frozen, a critic without batch norm is affine along the step, so
# the difference is exact for any step and a large one only cuts float32 cancellation
# (relative error against a float64 double backward, DCGAN critics: 2e-6 to 1e-5 at
# 0.1, 1e-5 to 2e-5 at 0.01, 1e-4 to 3e-4 at 0.001); batch norm adds O(step^2).
_R1_STEP = 0.1


def _check_nonneg(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
            or not (0.0 <= float(v) < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


class _StopFlag:
    """SIGINT during fit sets a flag checked at step boundaries (main thread only)."""

    def __init__(self):
        self.stop = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                if self.stop:   # a second Ctrl-C interrupts at once
                    raise KeyboardInterrupt
                self.stop = True
            self._old = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class GAN:
    """A generative adversarial network on the distgan core.

    Parameters
    ----------
    spec : dict
        Model spec (:func:`distgan.models.dcgan`, :func:`distgan.models.mlp`).
    seed : int
        Seeds the initialisation, the noise and the data order: the same seed,
        data and thread count give bit-identical weights.
    loss : {"ns", "hinge", "ls"}
        Non-saturating (default), hinge or least-squares.
    lr : float or (float, float)
        Adam learning rate (generator, discriminator).
    betas : (float, float)
    ema : float
        Decay of the generator's exponential moving average (0 disables it);
        warmed up as ``min(ema, (1 + t) / (10 + t))``.
    spectral_norm : bool
        Spectral normalisation in D instead of batch norm.
    n_critic : int
        Discriminator updates per generator update.
    r1 : float
        Weight gamma of the R1 penalty (Mescheder et al. 2018, "Which training
        methods for GANs do actually converge?"), gamma / 2 * mean ||grad_x D(x)||^2
        on real data, added to D's loss; 0 (default) is off. Settable between steps
        (``gan.r1 = 1.0``); saved in checkpoints.
    """

    def __init__(self, spec, seed=0, loss="ns", lr=2e-4, betas=(0.5, 0.999), ema=0.999,
                 spectral_norm=False, n_critic=1, init="dcgan", r1=0.0):
        _check_spec(spec)
        _check_nonneg("r1", r1)
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
        if not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"n_critic must be a positive int, got {n_critic!r}")
        if not (0.0 <= float(ema) < 1.0):
            raise ValueError(f"ema must be in [0, 1), got {ema!r}")
        lr_g, lr_d = (lr, lr) if np.isscalar(lr) else (float(lr[0]), float(lr[1]))
        self.spec = spec
        self.config = {"seed": int(seed), "loss": loss, "lr": [float(lr_g), float(lr_d)],
                       "betas": [float(betas[0]), float(betas[1])], "ema": float(ema),
                       "spectral_norm": bool(spectral_norm), "n_critic": n_critic, "init": init,
                       "r1": float(r1)}
        self.latent_dim = int(spec["latent_dim"])
        self.num_classes = spec.get("num_classes")
        self.image_shape = tuple(spec["image_shape"])
        self.generator = Network(spec["generator"], (self.latent_dim,), init=init, seed=seed)
        self.discriminator = Network(spec["discriminator"], self.image_shape,
                                     spectral_norm=spectral_norm, init=init, seed=seed + 1)
        if self.generator.output_shape != self.image_shape:
            raise ValueError(f"generator output {self.generator.output_shape} != image shape "
                             f"{self.image_shape}")
        self.g_ema = Network(spec["generator"], (self.latent_dim,), init=init, seed=seed)
        self.g_ema.copy_from(self.generator)
        self.g_ema.keep_packed = True   # changed only by update_ema, copy_from and load
        self.opt_g = Adam(self.generator.params, self.generator.grads, lr_g, betas)
        self.opt_d = Adam(self.discriminator.params, self.discriminator.grads, lr_d, betas)
        self.step_count = 0
        self.noise = _Stream(seed * 2 + 1)
        self.history = {"step": [], "d_loss": [], "g_loss": [], "time": []}
        self._ema_stats_step = -1
        self._ema_t0 = 0      # G updates before the last fold_batch_norm (EMA warm-up)
        # sampling reuses the networks' cached buffers: one sampler at a time
        self._sample_lock = threading.RLock()
        self._sample_offset = 0   # where the unseeded sampling stream is
        self._ahead = None        # normals drawn ahead (_normals)

    # -- training ----------------------------------------------------------------
    def _fake_labels(self, n):
        if self.num_classes is None:
            return None
        return self.noise.integers(self.num_classes, n)

    def discriminator_step(self, real, labels=None):
        """One D update; returns (d_loss, fake, fake_labels) with ``fake`` G's cached output."""
        G, D = self.generator, self.discriminator
        n = real.shape[0]
        z = self.noise.normal((n, self.latent_dim))
        y_fake = self._fake_labels(n)
        fake = G.forward(z, y_fake, train=True)
        D.zero_grad()
        gamma = self.r1
        before = D.buffers.copy() if gamma > 0 else None
        out = D.forward(real, labels, train=True)
        loss_r, dout = adversarial_loss(self.config["loss"], out, True)
        D.backward(dout, need_dx=False)
        penalty = self._r1_penalty(real, labels, out.shape, gamma, before) if gamma > 0 else 0.0
        out = D.forward(fake, y_fake, train=True)
        loss_f, dout = adversarial_loss(self.config["loss"], out, False)
        D.backward(dout, need_dx=False)
        self.opt_d.step()
        return loss_r + loss_f + penalty, fake, y_fake

    def _r1_penalty(self, real, labels, out_shape, gamma, before):
        """R1 on the batch D has just run forward on: returns gamma/2 * mean_i
        ||g_i||^2 with g = grad_x sum(D(x)), and accumulates its parameter gradient
        into D's grads. That gradient is the Hessian-vector product
        gamma/n * d/dtheta [g . grad_x sum(D(x))] with g held fixed, computed as
        gamma/n * d/dtheta [sum(D(x + eps g)) - sum(D(x - eps g))] / (2 eps): two more
        forward/backward passes instead of a double backward, which the core does
        not have. In those passes the ReLU/LeakyReLU gains are frozen at the real
        forward's (``Network.frozen_activations``), so D is the same affine piece
        as at x and the difference is exact but for batch norm's O(eps^2) and
        float32 rounding (see _R1_STEP). Each pass starts from D's buffers as they
        were ``before`` the forward on real data, so batch-norm statistics and
        spectral norm's power iteration are those of that forward; afterwards they
        are left as it left them."""
        D = self.discriminator
        n = real.shape[0]
        after = D.buffers.copy()
        g = D.backward(np.ones(out_shape, np.float32), need_dx=True, param_grads=False).copy()
        sq = np.square(g.reshape(n, -1), dtype=np.float64).sum(axis=1)
        ms = float(sq.mean())
        if not ms > 0.0:
            return 0.5 * gamma * ms
        scale = max(float(np.sqrt(np.mean(np.square(real, dtype=np.float64)))), 1e-3)
        eps = _R1_STEP * scale / np.sqrt(ms)
        with D.frozen_activations():
            for sign in (1.0, -1.0):
                D.buffers[...] = before
                D.forward((real + np.float32(sign * eps) * g).astype(np.float32), labels, train=True)
                D.backward(np.full(out_shape, sign * gamma / (2.0 * eps * n), np.float32),
                           need_dx=False)
        D.buffers[...] = after
        return 0.5 * gamma * ms

    def generator_step(self, fake, y_fake):
        """One G update from the fakes G produced in the D step (its caches are
        still those of that forward): D's input gradient seeds G's backward."""
        G, D = self.generator, self.discriminator
        G.zero_grad()
        out = D.forward(fake, y_fake, train=True)
        g_loss, dout = adversarial_loss(self.config["loss"], out, "gen")
        dfake = D.backward(dout, need_dx=True, param_grads=False)
        G.backward(dfake, need_dx=False)
        self.opt_g.step()
        self.update_ema()
        return g_loss

    @property
    def r1(self):
        """Weight of the R1 penalty on D (see the class doc); 0 is off."""
        return self.config.get("r1", 0.0)

    @r1.setter
    def r1(self, value):
        _check_nonneg("r1", value)
        self.config["r1"] = float(value)

    def remove_spectral_norm(self, reset_optimizer=True):
        """Turn D's spectral normalisation off mid-training, keeping D's function
        (W / sigma folded into W): the two-phase toy recipe trains with spectral
        norm for mode coverage, then without it so D can sharpen the modes.
        ``reset_optimizer`` zeroes D's Adam moments (their scale was that of the
        unnormalised W)."""
        if not self.discriminator.spectral_norm:
            raise ValueError("the discriminator has no spectral norm to remove")
        self.discriminator.remove_spectral_norm()
        self.config["spectral_norm_removed"] = True
        if reset_optimizer:
            self.opt_d.reset()

    def set_lr_multiplier(self, layer, mult, network="generator"):
        """Train one layer at ``mult`` times its network's learning rate (1 restores it).

        ``layer`` indexes ``gan.generator.layers`` (or ``gan.discriminator.layers``
        with ``network="discriminator"``) and must have parameters. Adam's step is
        proportional to the learning rate, so this is that layer's own learning rate;
        the learning-rate schedule of the network applies to it too. Recorded in the
        config, so checkpoints keep it. The toy recipe trains G's first layer, which
        places the kinks of G's piecewise-linear map in latent space, 10x faster.
        """
        if network not in ("generator", "discriminator"):
            raise ValueError(f"network must be 'generator' or 'discriminator', got {network!r}")
        net, opt = ((self.generator, self.opt_g) if network == "generator"
                    else (self.discriminator, self.opt_d))
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) \
                or not 0 <= layer < len(net.layers):
            raise ValueError(f"layer must be an index into the {network}'s {len(net.layers)} "
                             f"layers, got {layer!r}")
        spans = [(o, o + int(np.prod(sh))) for i, _, o, sh in net.param_index if i == layer]
        if not spans:
            raise ValueError(f"{network} layer {layer} ({net.layers[layer].type}) has no parameters")
        opt.set_lr_scale(min(a for a, _ in spans), max(b for _, b in spans), mult)
        mults = self.config.setdefault("lr_mult", {}).setdefault(network, {})
        if float(mult) == 1.0:
            mults.pop(str(int(layer)), None)
        else:
            mults[str(int(layer))] = float(mult)

    def fold_batch_norm(self):
        """Fold the generator's batch norm into the layers before it, for the rest of
        training.

        Each batch norm that follows a linear, convolution or transposed-convolution
        layer becomes a per-channel scale and shift of that layer's weight and bias
        (which it gains if it had none): the raw generator with its running
        statistics, the EMA generator with its standing statistics, so both compute
        what they computed in eval mode (up to rounding), from here on without batch
        norm. Without it G's weights are no longer scale-invariant and its samples no
        longer depend on the rest of the batch; the toy recipe does this when it
        sharpens the modes. G's Adam starts afresh (its parameters changed); its
        learning rate and betas, and the EMA's warm-up, carry on. The new spec is
        ``gan.spec`` (saved in checkpoints). Set learning-rate multipliers of G's
        layers after folding: the layer indices change.
        """
        from .nn import BatchNorm
        layers = self.spec["generator"]
        if not any(d["type"] == "batch_norm" for d in layers):
            raise ValueError("the generator has no batch norm to fold")
        if self.config.get("lr_mult", {}).get("generator"):
            raise ValueError("fold_batch_norm changes G's layer indices: set its learning-rate "
                             "multipliers after folding")
        absorbing = ("linear", "conv2d", "conv_transpose2d")
        new_layers, keep = [], []        # keep: old index of each new layer
        for i, d in enumerate(layers):
            if d["type"] == "batch_norm":
                if i == 0 or layers[i - 1]["type"] not in absorbing:
                    raise ValueError(f"generator layer {i} (batch_norm) follows "
                                     f"{'nothing' if i == 0 else layers[i - 1]['type']}, "
                                     f"which cannot absorb it")
                new_layers[-1]["bias"] = True
                continue
            new_layers.append(dict(d))
            keep.append(i)
        self._refresh_ema_stats()
        spec = dict(self.spec)
        spec["generator"] = new_layers
        c = self.config
        nets = []
        for old in (self.generator, self.g_ema):
            new = Network(new_layers, (self.latent_dim,), init=c["init"], seed=c["seed"])
            for j, i in enumerate(keep):
                src, dst = old.layers[i], new.layers[j]
                bn = old.layers[i + 1] if i + 1 < len(old.layers) and \
                    isinstance(old.layers[i + 1], BatchNorm) else None
                for name in dst.p:
                    if name not in ("weight", "bias") or bn is None:
                        dst.p[name][...] = src.p[name]
                for name in dst.b:
                    dst.b[name][...] = src.b[name]
                if bn is None:
                    continue
                sc = bn.p["weight"].astype(np.float64) / np.sqrt(
                    bn.b["running_var"].astype(np.float64) + bn.eps)
                axis = 1 if dst.type == "conv_transpose2d" else 0
                shape = [1] * dst.p["weight"].ndim
                shape[axis] = -1
                dst.p["weight"][...] = src.p["weight"].astype(np.float64) * sc.reshape(shape)
                b = src.p["bias"].astype(np.float64) if "bias" in src.p else 0.0
                dst.p["bias"][...] = (b - bn.b["running_mean"]) * sc + bn.p["bias"]
            nets.append(new)
        opt = self.opt_g
        with self._sample_lock:          # a sampler in another thread sees old or new G
            self._ema_t0 += opt.t
            nets[1].keep_packed = True
            self.generator, self.g_ema = nets
            self.opt_g = Adam(self.generator.params, self.generator.grads, opt.lr, opt.betas,
                              opt.eps, opt.weight_decay)
            self.spec = spec
            self._ema_stats_step = -1

    def update_ema(self):
        """Move the EMA generator towards G (one C call over the flat buffer)."""
        t = self.opt_g.t + self._ema_t0
        decay = min(self.config["ema"], (1.0 + t) / (10.0 + t)) if self.config["ema"] > 0 else 0.0
        _core._ema_update(self.g_ema.params, self.generator.params, float(decay))
        self.g_ema.weights_changed()

    def step(self, real, labels=None):
        """One iteration: ``n_critic`` discriminator updates, then one generator update.

        Parameters
        ----------
        real : ndarray, float32, (N, *image_shape), values in [-1, 1]
        labels : ndarray of int, (N,), for conditional models

        Returns
        -------
        dict with ``d_loss`` and ``g_loss``.
        """
        real = self._check_batch(real, labels)
        if labels is not None:
            labels = np.ascontiguousarray(labels, np.int64)
        for _ in range(self.config["n_critic"]):
            d_loss, fake, y_fake = self.discriminator_step(real, labels)
        g_loss = self.generator_step(fake, y_fake)
        self.step_count += 1
        for term, v in (("discriminator loss", d_loss), ("generator loss", g_loss)):
            if not math.isfinite(v):
                raise DivergenceError(self.step_count, term, v)
        return {"d_loss": d_loss, "g_loss": g_loss}

    def _check_batch(self, real, labels):
        if not isinstance(real, np.ndarray):
            raise TypeError(f"real must be a numpy array, got {type(real).__name__}")
        if real.dtype != np.float32:
            raise TypeError(f"real must be float32, got {real.dtype}")
        if real.ndim != 1 + len(self.image_shape) or real.shape[1:] != self.image_shape:
            raise ValueError(f"real must be (N, {', '.join(map(str, self.image_shape))}), got {real.shape}")
        if real.shape[0] < 2:
            raise ValueError("a training batch needs at least 2 samples (batch norm)")
        if real.size > _INT_MAX:
            raise ValueError(f"real holds {real.size} values; the core's sizes are C ints "
                             f"(at most {_INT_MAX}): use smaller batches")
        if not np.isfinite(real).all():
            raise ValueError(f"real holds {int(np.size(real) - np.isfinite(real).sum())} NaN or "
                             f"infinite values (first at index "
                             f"{tuple(int(i) for i in np.argwhere(~np.isfinite(real))[0])})")
        if (self.num_classes is not None) != (labels is not None):
            raise ValueError("labels are required for a conditional model and only for one")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
                raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
            if labels.shape != (real.shape[0],):
                raise ValueError(f"labels must be ({real.shape[0]},), got {labels.shape}")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(f"labels must be in [0, {self.num_classes}), got "
                                 f"[{labels.min()}, {labels.max()}]")
        return np.ascontiguousarray(real)

    def fit(self, data, epochs=None, steps=None, batch_size=64, progress=True,
            checkpoint=None, checkpoint_every=1000, log_every=10, callback=None,
            time_budget=None, clock=None):
        """Train on ``data``.

        Parameters
        ----------
        data : Dataset, ndarray, or (images, labels)
            Images float32 in [-1, 1]. Labels are used when the model is conditional.
        epochs, steps : int
            How much more to train (one of them; ``steps`` wins if both are given).
            The data order depends only on the seed and the global step, so a run
            resumed from a checkpoint continues exactly where it stopped.
        batch_size : int
        progress : bool
            A tqdm progress bar with the losses and samples/s.
        checkpoint : path, optional
            Saved every ``checkpoint_every`` steps, at the end and on Ctrl-C.
        log_every : int
            History records every this many steps.
        callback : callable(gan, step, losses), optional
        time_budget : float, optional
            Stop after this many seconds (at a step boundary).
        clock : callable, optional
            The clock of ``time_budget`` (default ``time.perf_counter``, wall
            time); ``time.process_time`` budgets CPU time, fairer on a shared machine.

        Returns
        -------
        dict of lists: ``step``, ``d_loss``, ``g_loss``, ``time`` (seconds since
        the start of this call).
        """
        ds = _as_dataset(data)
        if tuple(ds.images.shape[1:]) != self.image_shape:
            raise ValueError(f"data images are {tuple(ds.images.shape[1:])}, the model makes "
                             f"{self.image_shape}")
        if self.num_classes is not None and ds.labels is None:
            raise ValueError("a conditional model needs labelled data")
        if not isinstance(batch_size, int) or batch_size < 2 or batch_size > len(ds):
            raise ValueError(f"batch_size must be an int in [2, {len(ds)}], got {batch_size!r}")
        per_epoch = len(ds) // batch_size
        if steps is None:
            if epochs is None:
                raise ValueError("give epochs= or steps=")
            steps = int(round(epochs * per_epoch))
        if steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        start, end = self.step_count, self.step_count + steps
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc="train", unit="it", leave=True)
        t0 = time.perf_counter()
        clock = clock or time.perf_counter
        c0 = clock()
        seed = self.config["seed"]
        try:
            with _StopFlag() as flag:
                epoch = start // per_epoch
                while self.step_count < end and not flag.stop:
                    skip = self.step_count - epoch * per_epoch
                    for i, (x, y) in enumerate(ds.batches(batch_size, seed=seed, epoch=epoch)):
                        if i < skip:
                            continue
                        if self.step_count >= end or flag.stop:
                            break
                        if time_budget is not None and clock() - c0 > time_budget:
                            flag.stop = True
                            break
                        losses = self.step(x, y if self.num_classes is not None else None)
                        s = self.step_count
                        if s % log_every == 0 or s == end:
                            el = time.perf_counter() - t0
                            self.history["step"].append(s)
                            self.history["d_loss"].append(losses["d_loss"])
                            self.history["g_loss"].append(losses["g_loss"])
                            self.history["time"].append(el)
                            if bar is not None:
                                done = s - start
                                bar.set_postfix(d=f"{losses['d_loss']:.3f}", g=f"{losses['g_loss']:.3f}",
                                                samples_s=f"{done * batch_size / max(el, 1e-9):.0f}")
                        if bar is not None:
                            bar.update(1)
                        if callback is not None:
                            callback(self, s, losses)
                        if checkpoint is not None and checkpoint_every and s % checkpoint_every == 0:
                            self.save(checkpoint)
                    epoch += 1
        finally:
            if bar is not None:
                bar.close()
        if checkpoint is not None:
            self.save(checkpoint)
        return self.history

    # -- sampling ----------------------------------------------------------------
    def _refresh_ema_stats(self, batches=8, batch_size=256):
        """Standing statistics: re-estimate the EMA generator's batch-norm running
        statistics as the cumulative average over ``batches`` noise batches."""
        if self._ema_stats_step == self.step_count:
            return
        from .nn import BatchNorm

        bns = [l for l in self.g_ema.layers if isinstance(l, BatchNorm)]
        if bns:
            stream = _Stream(self.config["seed"] * 2 + 2)
            saved = [l.momentum for l in bns]
            try:
                for k in range(1, batches + 1):
                    for l in bns:
                        l.momentum = 1.0 / k
                    z = stream.normal((batch_size, self.latent_dim))
                    y = stream.integers(self.num_classes, batch_size) if self.num_classes else None
                    self.g_ema.forward(z, y, train=True)
            finally:
                for l, m in zip(bns, saved):
                    l.momentum = m
        self._ema_stats_step = self.step_count

    def sample(self, n, labels=None, seed=None, batch_size=256, ema=True):
        """Draw ``n`` samples, float32 ``(n, *image_shape)`` in [-1, 1].

        Parameters
        ----------
        n : int
        labels : int or array of int, optional
            Classes to draw (conditional models); random when omitted.
        seed : int, optional
            Fixes the noise; otherwise a stream advanced on every call is used.
        batch_size : int
            Samples per forward pass.
        ema : bool
            Use the EMA generator (default) or the raw one (in eval mode).

        The EMA generator keeps its weights packed for the one-image kernel
        (``Network.keep_packed``): after writing into ``g_ema.params`` or
        ``g_ema.buffers`` yourself, call ``g_ema.weights_changed()``.
        """
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        n = int(n)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                                 or seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {seed!r}")
        with self._sample_lock:
            return self._sample(n, labels, seed, batch_size, ema)

    def _normals(self, key, off, size, ahead):
        """(block, at): the stream (key, off)'s next ``size`` normals at block[at:].
        With ``ahead`` (the unseeded stream), from a block of them drawn ahead
        (``_NOISE_AHEAD`` one-image samples' worth): the same values as drawn one
        sample at a time (each is its counter's), and one draw, whose code runs cold
        after a sample's kernels, per block rather than per sample (~1.5 % of a
        teacher's one-image sample, PERFORMANCE.md log 130). Otherwise just those."""
        if not ahead:
            return _Stream(key, off).normal(size), 0
        kept = self._ahead
        if kept is None or kept[0] != key or not kept[1] <= off <= kept[2] - size:
            block = _Stream(key, off).normal(max(size, _NOISE_AHEAD * self.latent_dim))
            kept = self._ahead = (key, off, off + block.size, block)
        return kept[3], off - kept[1]

    def _sample(self, n, labels, seed, batch_size, ema):
        net = self.g_ema if ema else self.generator
        key = seed * 2 + 3 if seed is not None else self.config["seed"] * 2 + 5
        off = 0 if seed is not None else self._sample_offset
        if labels is None and self.num_classes is None and 0 < n <= batch_size:
            # one batch of an unconditional model: its noise (_normals) copied into
            # predict's plan, the plan run and its output copied in one core call,
            # with no _Stream, z array or slices (the Python around a teacher's
            # one-image sample took ~5 % of its time, its caches cold after the
            # kernels: PERFORMANCE.md log 130)
            if ema and self._ema_stats_step != self.step_count:
                self._refresh_ema_stats()
            src, at = self._normals(key, off, n * self.latent_dim, ahead=seed is None)
            y = net._predict_from(n, src, at)
            if y is not None:
                if seed is None:
                    self._sample_offset = off + n * self.latent_dim
                return y
        stream = _Stream(key, off)
        if self.num_classes is not None:
            if labels is None:
                labels = stream.integers(self.num_classes, n)
            labels = np.asarray(labels)
            if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
                raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
            if labels.ndim > 1 or (labels.ndim == 1 and labels.shape[0] != n):
                raise ValueError(f"labels must be one int or {n} ints, got shape {labels.shape}")
            labels = np.broadcast_to(labels.astype(np.int64), (n,)).copy()
            if n and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"labels must be in [0, {self.num_classes})")
        elif labels is not None:
            raise ValueError("labels given to an unconditional model")
        z = stream.normal((n, self.latent_dim))
        if seed is None:
            self._sample_offset = stream.offset
        if ema:
            self._refresh_ema_stats()
        out = np.empty((n,) + self.image_shape, np.float32)
        for i in range(0, n, batch_size):
            j = min(n, i + batch_size)
            out[i:j] = net.predict(z[i:j], None if labels is None else labels[i:j])
        return out

    # -- persistence ---------------------------------------------------------------
    def _tensors(self):
        t = {}
        for name, net in (("generator", self.generator), ("discriminator", self.discriminator),
                          ("g_ema", self.g_ema)):
            t[f"{name}.params"] = net.params
            t[f"{name}.buffers"] = net.buffers
        for name, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            t[f"{name}.m"] = opt.m
            t[f"{name}.v"] = opt.v
        return t

    def save(self, path):
        """Write a checkpoint (safetensors, atomic): weights, optimizer state, step,
        RNG positions, spec, config and history."""
        state = {"step": self.step_count, "noise_offset": self.noise.offset,
                 "sample_offset": getattr(self, "_sample_offset", 0),
                 "opt_g_t": self.opt_g.t, "opt_d_t": self.opt_d.t, "ema_t0": self._ema_t0}
        _ckpt.save(path, self._tensors(), "gan", spec=self.spec, config=self.config,
                   state=state, history=self.history)

    @classmethod
    def load(cls, path):
        """Rebuild a GAN from a checkpoint written by :meth:`save`."""
        tensors, docs = _ckpt.load(path, kind="gan")
        with _ckpt.rebuilding(path):
            cfg = docs["config"]
            gan = cls(docs["spec"], seed=cfg["seed"], loss=cfg["loss"], lr=tuple(cfg["lr"]),
                      betas=tuple(cfg["betas"]), ema=cfg["ema"], spectral_norm=cfg["spectral_norm"],
                      n_critic=cfg["n_critic"], init=cfg.get("init", "dcgan"),
                      r1=cfg.get("r1", 0.0))
            mine = gan._tensors()
            if set(mine) != set(tensors):
                raise _ckpt.CheckpointError(f"{path}: tensors {sorted(tensors)} do not match the "
                                            f"model's {sorted(mine)}")
            for k, a in mine.items():
                if tensors[k].shape != a.shape or tensors[k].dtype != a.dtype:
                    raise _ckpt.CheckpointError(f"{path}: tensor {k} is {tensors[k].shape} "
                                                f"{tensors[k].dtype}, the spec needs {a.shape} {a.dtype}")
                a[...] = tensors[k]
            for net in (gan.generator, gan.discriminator, gan.g_ema):
                net.weights_changed()
            if cfg.get("spectral_norm_removed"):
                gan.discriminator.remove_spectral_norm(fold=False)
                gan.config["spectral_norm_removed"] = True
            st = docs["state"]
            gan.step_count = int(st["step"])
            gan.noise.offset = int(st["noise_offset"])
            gan._sample_offset = int(st["sample_offset"])
            gan.opt_g.t, gan.opt_d.t = int(st["opt_g_t"]), int(st["opt_d_t"])
            gan._ema_t0 = int(st.get("ema_t0", 0))
            for which, mults in cfg.get("lr_mult", {}).items():
                for layer, mult in mults.items():
                    gan.set_lr_multiplier(int(layer), mult, which)
            gan.history = {k: list(v) for k, v in docs.get("history", {}).items()} or gan.history
        return gan

    def __repr__(self):
        g, d = self.generator, self.discriminator
        return (f"GAN({self.spec.get('name', 'custom')}, G {g.num_params:,} params / "
                f"{g.macs:,} MACs, D {d.num_params:,} params / {d.macs:,} MACs, "
                f"loss={self.config['loss']}, step {self.step_count})")


def load(path):
    """Load a checkpoint written by ``GAN.save`` (or later, other distgan models)."""
    return GAN.load(path)
