"""Adam over a network's flat parameter buffer.

One optimizer holds one flat ``m`` and one flat ``v`` array matching the
network's ``params``/``grads``; an update is a single C call
(:func:`distgan._core._adam_step`) over the whole network.
"""
from __future__ import annotations

import numpy as np

from . import _core

__all__ = ["Adam"]


class Adam:
    """Adam with decoupled weight decay (AdamW when ``weight_decay > 0``).

    Parameters
    ----------
    params, grads : ndarray
        The flat float32 parameter and gradient arrays of a network.
    lr : float
    betas : (float, float)
    eps : float
    weight_decay : float
    """

    def __init__(self, params, grads, lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0.0):
        if params.shape != grads.shape or params.dtype != np.float32:
            raise ValueError("Adam: params and grads must be float32 arrays of one shape")
        lr, b1, b2, eps, wd = float(lr), float(betas[0]), float(betas[1]), float(eps), float(weight_decay)
        if not lr >= 0:
            raise ValueError(f"Adam: lr must be >= 0, got {lr}")
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: betas must be in [0, 1), got {betas}")
        if not eps >= 0 or not wd >= 0:
            raise ValueError(f"Adam: eps and weight_decay must be >= 0, got {eps}, {wd}")
        self.params, self.grads = params, grads
        self.lr, self.betas, self.eps, self.weight_decay = lr, (b1, b2), eps, wd
        self.m = np.zeros_like(params)
        self.v = np.zeros_like(params)
        self.t = 0
        self.lr_scales = []     # sorted, disjoint (start, stop, mult): see set_lr_scale

    def reset(self):
        """Forget the moments and the step count (as a fresh optimizer)."""
        self.m[...] = 0
        self.v[...] = 0
        self.t = 0

    def set_lr_scale(self, start, stop, mult):
        """Update ``params[start:stop]`` at ``mult`` times the learning rate (a layer-wise
        learning rate; 1 removes the scale). Ranges must not overlap partly; setting the
        same range again replaces its multiplier."""
        n = self.params.size
        if not (isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
                and 0 <= start < stop <= n):
            raise ValueError(f"Adam: lr scale range [{start}, {stop}) is not within [0, {n})")
        if isinstance(mult, bool) or not isinstance(mult, (int, float, np.integer, np.floating)) \
                or not (0 <= float(mult) < float("inf")):
            raise ValueError(f"Adam: lr multiplier must be a finite number >= 0, got {mult!r}")
        mult = float(mult)
        kept = []
        for a, b, m in self.lr_scales:
            if (a, b) == (start, stop):
                continue
            if a < stop and start < b:
                raise ValueError(f"Adam: lr scale range [{start}, {stop}) overlaps [{a}, {b})")
            kept.append((a, b, m))
        if mult != 1.0:
            kept.append((int(start), int(stop), mult))
        self.lr_scales = sorted(kept)

    def step(self):
        """One update of ``params`` in place from ``grads``."""
        self.t += 1
        # Adam is elementwise: the pieces get the same bits as one call would
        at = 0
        for a, b, m in self.lr_scales + [(self.params.size, self.params.size, 1.0)]:
            if at < a:
                self._update(slice(at, a), self.lr)
            if a < b:
                self._update(slice(a, b), self.lr * m)
            at = b

    def _update(self, sl, lr):
        _core._adam_step(self.params[sl], self.m[sl], self.v[sl], self.grads[sl], self.t, lr,
                         self.betas[0], self.betas[1], self.eps, self.weight_decay)

    def state(self):
        return {"t": self.t, "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}
