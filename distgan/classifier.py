"""distgan.Classifier: an image classifier trained on the C core.

Scope: the evaluation network of DESIGN.md "Evaluation" (its penultimate
activations are the feature space of FID, KID, precision/recall, ...) and the
classifier side of Hinton distillation. The network is a
:class:`distgan.nn.Network` built from :func:`distgan.models.classifier`; the
loss is softmax cross-entropy in the core (``_core._cross_entropy_forward`` /
``_backward``, softmax fused into the loss gradient); the optimizer is
:class:`distgan.optim.Adam` (AdamW when ``weight_decay > 0``) over the flat
parameter array, with a learning rate set per step by a warm-up + cosine
schedule.

Letters: ``N`` images, ``C, H, W`` image shape, ``K`` classes, ``F`` feature
dimension.
"""
from __future__ import annotations

import math
import numbers
import threading
import time

import numpy as np

from . import _core
from . import checkpoint as _ckpt
from .nn import Network
from .optim import Adam

__all__ = ["Classifier", "augment_batch", "cosine_lr", "distill_classifier",
           "DISTILL_WEIGHTS"]

#: Default loss weights of :func:`distill_classifier`: the tempered KL to the
#: teacher (``kd``) and the cross-entropy with the data's labels (``ce``).
DISTILL_WEIGHTS = {"kd": 1.0, "ce": 0.0}

_F32 = np.float32


def cosine_lr(step, total, lr, warmup=0):
    """Learning rate at ``step`` (0-based) of a linear warm-up then a cosine decay to 0.

    ``lr * (step + 1) / warmup`` for ``step < warmup``; then
    ``lr * (1 + cos(pi * p)) / 2`` with ``p = (step - warmup) / (total - warmup)``
    (SGDR without restarts, Loshchilov & Hutter 2017, https://arxiv.org/abs/1608.03983).

    Parameters
    ----------
    step, total, warmup : int
        Current step, number of steps of the run, warm-up steps.
    lr : float
        Peak learning rate.

    Returns
    -------
    float
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(1.0, (step - warmup) / span)
    return lr * 0.5 * (1.0 + math.cos(math.pi * p))


def augment_batch(x, rng, flip=True, shift=2):
    """Random horizontal flips and integer shifts of a batch, in one vectorised gather.

    Each image is padded by ``shift`` pixels (with its own background value -1,
    black in [-1, 1] images) on every side, then a ``H x W`` window at a random
    offset in ``[0, 2 * shift]`` is read out; a flipped image reads its columns
    in reverse order. No Python loop over images or pixels.

    Parameters
    ----------
    x : ndarray, float32, (N, C, H, W)
    rng : numpy.random.Generator
    flip : bool
        Flip each image left-right with probability 1/2.
    shift : int
        Largest shift in pixels, each direction (0: none).

    Returns
    -------
    ndarray, float32, (N, C, H, W), a new array.
    """
    N, C, H, W = x.shape
    s = int(shift)
    if s > 0:
        xp = np.full((N, C, H + 2 * s, W + 2 * s), -1.0, _F32)
        xp[:, :, s:s + H, s:s + W] = x
        dy = rng.integers(0, 2 * s + 1, size=N)
        dx = rng.integers(0, 2 * s + 1, size=N)
    else:
        xp = x
        dy = np.zeros(N, np.int64)
        dx = np.zeros(N, np.int64)
    cols = np.broadcast_to(np.arange(W), (N, W))
    if flip:
        flipped = rng.random(N) < 0.5
        cols = np.where(flipped[:, None], W - 1 - np.arange(W)[None, :], cols)
    rows = dy[:, None] + np.arange(H)[None, :]           # (N, H)
    cols = dx[:, None] + cols                            # (N, W)
    return xp[np.arange(N)[:, None, None, None], np.arange(C)[None, :, None, None],
              rows[:, None, :, None], cols[:, None, None, :]]


def _augment_options(augment):
    """None (no augmentation) or keyword arguments of :func:`augment_batch`."""
    if augment is False or augment is None:
        return None
    if augment is True:
        return {"flip": True, "shift": 2}
    if isinstance(augment, dict):
        unknown = set(augment) - {"flip", "shift"}
        if unknown:
            raise ValueError(f"augment: unknown options {sorted(unknown)}; known: flip, shift")
        opts = {"flip": bool(augment.get("flip", True)),
                "shift": _check_count(augment.get("shift", 2), "augment shift", 0)}
        return opts if (opts["flip"] or opts["shift"]) else None
    raise ValueError(f"augment must be True, False or a dict of flip/shift, got {augment!r}")


def _as_images(x, image_shape, name="x"):
    """``x`` as a C-contiguous float32 (N, *image_shape) array, or a clear error."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a float array of images in [-1, 1], got {x.dtype}")
    if x.ndim != 1 + len(image_shape) or tuple(x.shape[1:]) != tuple(image_shape):
        raise ValueError(f"{name} must be (N, {', '.join(map(str, image_shape))}), got {x.shape}")
    x = np.ascontiguousarray(x, dtype=_F32)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return x


def _as_labelled(data, image_shape, num_classes, name="data"):
    """(images float32, labels int64) from a Dataset or an ``(images, labels)`` pair."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
        if labels is None:
            raise ValueError(f"{name} has no labels: a classifier needs labelled data")
    elif isinstance(data, tuple) and len(data) == 2:
        images, labels = data
    else:
        raise TypeError(f"{name} must be a distgan Dataset or an (images, labels) pair, "
                        f"got {type(data).__name__}")
    images = _as_images(np.asarray(images), image_shape, f"{name} images")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{name} labels must be integers, got {labels.dtype}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{name}: {images.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{name} labels must be in [0, {num_classes}), got "
                         f"[{labels.min()}, {labels.max()}]")
    return images, np.ascontiguousarray(labels, dtype=np.int64)


def _run_length(n, batch_size, epochs, steps):
    """Steps of a run from ``epochs`` or ``steps`` (``steps`` wins), validated."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or not 2 <= batch_size <= n:
        raise ValueError(f"batch_size must be an int in [2, {n}], got {batch_size!r}")
    if steps is None:
        if epochs is None:
            raise ValueError("give epochs= or steps=")
        if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real) \
                or not epochs >= 0 or not math.isfinite(epochs):
            raise ValueError(f"epochs must be a number >= 0, got {epochs!r}")
        steps = int(round(epochs * (n // batch_size)))
    return _check_count(steps, "steps", 0)


def _epoch_batches(n, batch_size, seed, epoch):
    """Index arrays of one shuffled epoch (last partial batch dropped); the order
    is ``default_rng([seed, epoch]).permutation(n)``, as Dataset.batches."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n - n % batch_size, batch_size):
        yield order[start:start + batch_size]


def _check_count(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class Classifier:
    """A CNN image classifier on the distgan core.

    Parameters
    ----------
    spec : dict
        A classifier spec from :func:`distgan.models.classifier`: ``{"network":
        [...], "image_shape": [C, H, W], "num_classes": K, ...}``. The last layer
        must be the ``linear`` layer to the ``K`` logits; the layer before it
        gives the features (the ReLU after the feature-dim linear + batch norm).
    seed : int
        Seeds the initialisation, the data order and the augmentation.
    init : {"default", "dcgan"}
        Weight initialisation (PyTorch's default, or N(0, 0.02)).

    Attributes
    ----------
    network : distgan.nn.Network
    num_classes : int
    image_shape : tuple of int
    feature_layer : int
        Index of the layer whose output :meth:`features` returns.
    info : dict
        Free-form facts saved with the weights (e.g. ``test_accuracy``).
    history : dict of lists
        ``step``, ``loss``, ``accuracy`` (training batch), ``lr``, ``time``.
    """

    def __init__(self, spec, seed=0, init="default"):
        if not isinstance(spec, dict) or "network" not in spec:
            raise ValueError("spec must be a classifier spec dict with a 'network' list "
                             "(use distgan.models.classifier(...))")
        layers = spec["network"]
        if not isinstance(layers, list) or len(layers) < 2:
            raise ValueError("spec['network'] must be a list of at least two layer dicts")
        last = layers[-1]
        if not isinstance(last, dict) or last.get("type") != "linear":
            raise ValueError("the last layer of a classifier must be the 'linear' layer to the "
                             f"logits, got {last!r}")
        num_classes = spec.get("num_classes", last.get("out_features"))
        if last.get("out_features") != num_classes:
            raise ValueError(f"the last linear layer has {last.get('out_features')} outputs "
                             f"but the spec says num_classes={num_classes}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.spec = spec
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(s) for s in spec["image_shape"])
        self.config = {"seed": int(seed), "init": init}
        self.network = Network(layers, self.image_shape, init=init, seed=int(seed))
        self._lock = threading.Lock()
        if self.network.output_shape != (self.num_classes,):
            raise ValueError(f"the network outputs {self.network.output_shape}, expected "
                             f"({self.num_classes},)")
        self.feature_layer = len(layers) - 2
        self.feature_dim = int(np.prod(self.network.shapes[self.feature_layer + 1]))
        self.opt = Adam(self.network.params, self.network.grads, lr=1e-3, betas=(0.9, 0.999))
        self.step_count = 0
        self.epoch_count = 0
        self.info = {}
        self.history = {"step": [], "loss": [], "accuracy": [], "lr": [], "time": []}

    # -- training ------------------------------------------------------------------
    def train_step(self, x, labels, lr=None):
        """One Adam update on a batch; returns (loss, batch accuracy).

        Parameters
        ----------
        x : ndarray, float32, (N, C, H, W), N >= 2
        labels : ndarray of int64, (N,)
        lr : float, optional
            Learning rate of this step (default: the optimizer's current one).
        """
        net = self.network
        if lr is not None:
            self.opt.lr = float(lr)
        net.zero_grad()
        logits = net.forward(x, train=True)
        loss = float(_core._cross_entropy_forward(logits, labels))
        if not math.isfinite(loss):
            from .gan import DivergenceError
            raise DivergenceError(self.step_count + 1, "classifier loss", loss)
        dlogits = np.zeros_like(logits)
        _core._cross_entropy_backward(dlogits, logits, labels, 1.0)
        acc = float(np.mean(np.argmax(logits, axis=1) == labels))
        net.backward(dlogits, need_dx=False)
        self.opt.step()
        self.step_count += 1
        return loss, acc

    def fit(self, data, epochs=None, steps=None, batch_size=128, lr=2e-3, weight_decay=5e-4,
            warmup=None, augment=False, progress=True, log_every=50):
        """Train on labelled images with AdamW and a warm-up + cosine learning rate.

        Parameters
        ----------
        data : Dataset or (images, labels)
            Images float32 ``(N, C, H, W)`` in [-1, 1], integer labels ``(N,)``.
        epochs, steps : int or float, int
            Length of this run (one of them; ``steps`` wins if both are given).
            The learning-rate schedule spans exactly this run.
        batch_size : int
        lr : float
            Peak learning rate.
        weight_decay : float
            Decoupled weight decay (AdamW, Loshchilov & Hutter 2019).
        warmup : int, optional
            Linear warm-up steps (default: 3 % of the run, at most 200).
        augment : bool or dict
            ``True``: random horizontal flips and shifts of up to 2 pixels
            (:func:`augment_batch`); a dict sets ``flip`` and ``shift``
            (e.g. ``{"flip": True, "shift": 0}``); ``False``: none.
        progress : bool
            A tqdm progress bar with loss and accuracy.
        log_every : int
            History records every this many steps (and the last step).

        Returns
        -------
        dict of lists
            ``history``: ``step``, ``loss``, ``accuracy`` (of the training
            batch, augmented if ``augment``), ``lr``, ``time`` (seconds since the
            start of this call).
        """
        images, labels = _as_labelled(data, self.image_shape, self.num_classes)
        n = images.shape[0]
        steps = _run_length(n, batch_size, epochs, steps)
        log_every = _check_count(log_every, "log_every")
        lr = float(lr)
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive finite number, got {lr!r}")
        if not (float(weight_decay) >= 0 and math.isfinite(weight_decay)):
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        self.opt.weight_decay = float(weight_decay)
        if warmup is None:
            warmup = min(200, int(0.03 * steps))
        warmup = _check_count(warmup, "warmup", 0)
        aug = _augment_options(augment)
        seed = self.config["seed"]

        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=steps, desc="classifier", unit="it", leave=True)
        t0 = time.perf_counter()
        done = 0
        try:
            while done < steps:
                epoch = self.epoch_count
                aug_rng = np.random.default_rng([seed, epoch, 1])
                for idx in _epoch_batches(n, batch_size, seed, epoch):
                    if done >= steps:
                        break
                    x, y = images[idx], labels[idx]
                    if aug is not None:
                        x = augment_batch(x, aug_rng, **aug)
                    step_lr = cosine_lr(done, steps, lr, warmup)
                    loss, acc = self.train_step(x, y, step_lr)
                    done += 1
                    if done % log_every == 0 or done == steps:
                        el = time.perf_counter() - t0
                        for k, v in (("step", self.step_count), ("loss", loss), ("accuracy", acc),
                                     ("lr", step_lr), ("time", el)):
                            self.history[k].append(v)
                        if bar is not None:
                            bar.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")
                    if bar is not None:
                        bar.update(1)
                self.epoch_count += 1
        finally:
            if bar is not None:
                bar.close()
        return self.history

    # -- inference -----------------------------------------------------------------
    def features_and_logits(self, x, batch_size=512):
        """Penultimate features and logits of images, in eval mode, in one pass.

        Parameters
        ----------
        x : ndarray, float, (N, C, H, W), values in [-1, 1]
        batch_size : int
            Images per forward pass.

        Returns
        -------
        features : ndarray, float32, (N, F)
        logits : ndarray, float32, (N, K)
        """
        x = _as_images(x, self.image_shape)
        batch_size = _check_count(batch_size, "batch_size")
        N = x.shape[0]
        feats = np.empty((N, self.feature_dim), _F32)
        logits = np.empty((N, self.num_classes), _F32)
        taps = (self.feature_layer,)
        with self._lock:                    # the network's buffers serve one caller at a time
            for i in range(0, N, batch_size):
                j = min(N, i + batch_size)
                out, (f,) = self.network.forward(x[i:j], train=False, taps=taps)
                logits[i:j] = out           # copies: the network reuses its buffers
                feats[i:j] = f.reshape(j - i, -1)
        return feats, logits

    def logits(self, x, batch_size=512):
        """Class logits ``(N, K)`` (float32) of images, in eval mode.

        Parameters
        ----------
        x : ndarray, float, (N, C, H, W), values in [-1, 1]
        batch_size : int

        Returns
        -------
        ndarray, float32, (N, K)
        """
        return self.features_and_logits(x, batch_size)[1]

    def features(self, x, batch_size=512):
        """Penultimate activations ``(N, F)`` (float32), in eval mode: the output of
        the ReLU after the feature-dim linear + batch norm.

        Parameters
        ----------
        x : ndarray, float, (N, C, H, W), values in [-1, 1]
        batch_size : int

        Returns
        -------
        ndarray, float32, (N, F)
        """
        return self.features_and_logits(x, batch_size)[0]

    def predict(self, x, batch_size=512):
        """Predicted classes ``(N,)`` (int64), the argmax of the logits.

        Parameters
        ----------
        x : ndarray, float, (N, C, H, W)
        batch_size : int

        Returns
        -------
        ndarray of int64
        """
        return np.argmax(self.logits(x, batch_size), axis=1).astype(np.int64)

    def accuracy(self, data, batch_size=512):
        """Share of correctly classified images.

        Parameters
        ----------
        data : Dataset or (images, labels)
        batch_size : int

        Returns
        -------
        float in [0, 1]
        """
        images, labels = _as_labelled(data, self.image_shape, self.num_classes)
        if images.shape[0] == 0:
            raise ValueError("accuracy of an empty data set")
        return float(np.mean(self.predict(images, batch_size) == labels))

    # -- persistence -----------------------------------------------------------------
    def _tensors(self):
        return {"network.params": self.network.params, "network.buffers": self.network.buffers,
                "opt.m": self.opt.m, "opt.v": self.opt.v}

    def save(self, path):
        """Write a checkpoint (safetensors, atomic, kind ``"classifier"``): weights,
        batch-norm statistics, optimizer moments, spec, config, ``info`` and history.

        Parameters
        ----------
        path : str or os.PathLike
        """
        state = {"step": self.step_count, "epoch": self.epoch_count, "opt_t": self.opt.t,
                 "opt_lr": self.opt.lr, "weight_decay": self.opt.weight_decay}
        _ckpt.save(path, self._tensors(), "classifier", spec=self.spec, config=self.config,
                   state=state, info=self.info, history=self.history)

    @classmethod
    def load(cls, path):
        """Rebuild a classifier from a checkpoint written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike

        Returns
        -------
        Classifier

        Raises
        ------
        distgan.checkpoint.CheckpointError
            Missing, corrupt or foreign file, or tensors that do not fit the spec.
        """
        tensors, docs = _ckpt.load(path, kind="classifier")
        with _ckpt.rebuilding(path):
            cfg = docs["config"]
            clf = cls(docs["spec"], seed=cfg["seed"], init=cfg.get("init", "default"))
            mine = clf._tensors()
            if set(mine) != set(tensors):
                raise _ckpt.CheckpointError(f"{path}: tensors {sorted(tensors)} do not match "
                                            f"the classifier's {sorted(mine)}")
            for k, a in mine.items():
                if tensors[k].shape != a.shape or tensors[k].dtype != a.dtype:
                    raise _ckpt.CheckpointError(
                        f"{path}: tensor {k} is {tensors[k].shape} {tensors[k].dtype}, the "
                        f"spec needs {a.shape} {a.dtype}")
                a[...] = tensors[k]
            st = docs["state"]
            clf.step_count, clf.epoch_count = int(st["step"]), int(st["epoch"])
            clf.opt.t, clf.opt.lr = int(st["opt_t"]), float(st["opt_lr"])
            clf.opt.weight_decay = float(st["weight_decay"])
            clf.info = dict(docs.get("info") or {})
            hist = docs.get("history") or {}
            clf.history = {k: list(hist.get(k, [])) for k in clf.history}
        return clf

    def __repr__(self):
        net = self.network
        acc = self.info.get("test_accuracy")
        extra = f", test accuracy {acc:.4f}" if isinstance(acc, float) else ""
        return (f"Classifier({self.spec.get('name', 'custom')}, {net.num_params:,} params, "
                f"{net.macs:,} MACs, {self.num_classes} classes, step {self.step_count}{extra})")


def distill_classifier(teacher, student, T=2.0, data=None, steps=None, epochs=None,
                       batch_size=64, seed=0, progress=True, weights=None, lr=1e-3,
                       weight_decay=5e-4, log_every=10):
    """Hinton distillation of one classifier into another.

    Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network",
    https://arxiv.org/abs/1503.02531. The student minimises

    ``w_kd T^2 KL(softmax(t/T) || softmax(s/T)) + w_ce CE(s, y)``

    with ``t`` the frozen teacher's logits (eval mode), ``s`` the student's
    (train mode) on the same batch and ``y`` the data's labels. Both terms and
    their gradients run in the core (``_distill_kl_*``: student-logit gradient
    ``T (Q - P)``, the ``T^2`` factor applied; ``_cross_entropy_*``). AdamW with
    the warm-up + cosine learning rate of :meth:`Classifier.fit`.

    Parameters
    ----------
    teacher, student : Classifier
        Same image shape and number of classes; the student is trained in place.
    T : float
        Temperature (> 0).
    data : Dataset, ndarray or (images, labels)
        The transfer set; labels are needed only when ``weights["ce"] > 0``.
    steps, epochs : int
        Length of the run (``steps`` wins); default one epoch.
    batch_size : int
    seed : int
        Data order.
    progress : bool
    weights : dict, optional
        ``kd`` and ``ce`` (missing keys take :data:`DISTILL_WEIGHTS`).
    lr, weight_decay : float
        Peak learning rate and decoupled weight decay of the student's Adam.
    log_every : int

    Returns
    -------
    distgan.distill.DistillResult
        ``(student, history)`` with history lists ``step``, ``kd``, ``ce``,
        ``loss``, ``time``.
    """
    from .distill import DistillResult

    if not (isinstance(teacher, Classifier) and isinstance(student, Classifier)):
        raise TypeError("distill_classifier expects two Classifier objects")
    if teacher.image_shape != student.image_shape or teacher.num_classes != student.num_classes:
        raise ValueError(f"teacher and student must share image shape and classes: "
                         f"{teacher.image_shape}/{teacher.num_classes} vs "
                         f"{student.image_shape}/{student.num_classes}")
    if isinstance(T, bool) or not isinstance(T, numbers.Real) or not (math.isfinite(T) and T > 0):
        raise ValueError(f"T must be a positive finite number, got {T!r}")
    w = dict(DISTILL_WEIGHTS)
    if weights:
        unknown = set(weights) - set(DISTILL_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)} for classifier "
                             f"distillation; known: {sorted(DISTILL_WEIGHTS)}")
        w.update({k: float(v) for k, v in weights.items()})
    if any(not (math.isfinite(v) and v >= 0) for v in w.values()) or not any(w.values()):
        raise ValueError(f"weights must be finite, >= 0 and not all 0, got {w}")
    if data is None:
        raise ValueError("classifier distillation needs data (the transfer set)")
    if w["ce"] > 0:
        images, labels = _as_labelled(data, student.image_shape, student.num_classes)
    else:
        if hasattr(data, "images"):
            images = data.images
        elif isinstance(data, tuple) and len(data) == 2:
            images = data[0]
        else:
            images = data
        images = _as_images(np.asarray(images), student.image_shape, "data images")
        labels = None
    n = images.shape[0]
    if steps is None and epochs is None:
        epochs = 1
    steps = _run_length(n, batch_size, epochs, steps)
    log_every = _check_count(log_every, "log_every")
    opt = student.opt
    opt.weight_decay = float(weight_decay)
    warmup = min(200, int(0.03 * steps))
    history = {"step": [], "kd": [], "ce": [], "loss": [], "time": []}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc="distill classifier", unit="it", leave=True)
    t0 = time.perf_counter()
    done, epoch = 0, 0
    try:
        while done < steps:
            for idx in _epoch_batches(n, batch_size, int(seed), epoch):
                if done >= steps:
                    break
                x = images[idx]
                t = teacher.network.forward(x, train=False)
                net = student.network
                net.zero_grad()
                s = net.forward(x, train=True)
                ds = np.zeros_like(s)
                kd = ce = 0.0
                if w["kd"] > 0:
                    kd = float(_core._distill_kl_forward(s, t, float(T), 0))
                    _core._distill_kl_backward(ds, s, t, float(T), 0, w["kd"])
                if w["ce"] > 0:
                    y = labels[idx]
                    ce = float(_core._cross_entropy_forward(s, y))
                    _core._cross_entropy_backward(ds, s, y, w["ce"])
                loss = w["kd"] * kd + w["ce"] * ce
                if not math.isfinite(loss):
                    from .gan import DivergenceError
                    raise DivergenceError(student.step_count + 1, "distillation loss", loss)
                net.backward(ds, need_dx=False)
                opt.lr = cosine_lr(done, steps, float(lr), warmup)
                opt.step()
                student.step_count += 1
                done += 1
                if done % log_every == 0 or done == steps:
                    for k, v in (("step", student.step_count), ("kd", kd), ("ce", ce),
                                 ("loss", loss), ("time", time.perf_counter() - t0)):
                        history[k].append(v)
                    if bar is not None:
                        bar.set_postfix(kd=f"{kd:.4f}", ce=f"{ce:.3f}")
                if bar is not None:
                    bar.update(1)
            epoch += 1
    finally:
        if bar is not None:
            bar.close()
    return DistillResult(student, history)
