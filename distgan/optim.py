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

    def reset(self):
        """Forget the moments and the step count (as a fresh optimizer)."""
        self.m[...] = 0
        self.v[...] = 0
        self.t = 0

    def step(self):
        """One update of ``params`` in place from ``grads``."""
        self.t += 1
        _core._adam_step(self.params, self.m, self.v, self.grads, self.t, self.lr,
                         self.betas[0], self.betas[1], self.eps, self.weight_decay)

    def state(self):
        return {"t": self.t, "lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay}
