"""Networks built from specs, running on the C core.

A :class:`Network` turns a list of layer dicts (see :mod:`distgan.models`) into
layers whose parameters are *views* into one flat float32 array ``params``
(and gradients into one flat ``grads``; running statistics and spectral-norm
vectors into one flat ``buffers``), as llm.c's ``malloc_and_point_parameters``
does. Zeroing the gradients is one memset of ``grads``, one Adam update is one C call,
and a checkpoint is three arrays.

Each layer's forward/backward is one call into ``distgan._core`` with the GIL
released. Activations and scratch buffers are cached per batch size, so a
forward pass invalidates the arrays returned by the previous one: copy what you
keep (``GAN.sample`` does).
"""
from __future__ import annotations

import contextlib
import functools
import math
import mmap

import numpy as np

from . import _core

__all__ = ["Network", "build_layer"]

_F32 = np.float32
# Most floats of the im2col matrix a training conv2d keeps for its backward (64 MiB;
# 12.8 MB for DCGAN's 64 -> 128 convolution at batch 64); a larger one is rebuilt.
_COL_KEEP_MAX = 1 << 24

# activation layer type -> the core's code for it fused after a batch norm (or a
# conv2d the core fuses it into: _core._conv2d_act_fits)
_ACT_CODES = {"relu": _core.ACT_RELU, "leaky_relu": _core.ACT_LEAKY_RELU}
# False runs every batch norm, conv2d and activation as ops of their own (for comparisons)
_FUSE = True
# False runs a generator's head (linear, batch norm, activation, reshape, transposed
# convolution) in eval mode as layers of their own instead of one _core call (for
# comparisons; Network._head_fits)
_FUSE_HEAD = True
# Flat arrays from this many bytes on (Network's params and grads) are laid in
# 2 MiB pages (_huge_zeros); None lays them as np.zeros does (for comparisons)
_HUGE_MIN = 1 << 20
_HUGE = 1 << 21


def _huge_zeros(n):
    """n float32 zeros that the kernel may back with 2 MiB pages: from ``_HUGE_MIN``
    bytes on, an anonymous mapping marked ``MADV_HUGEPAGE`` and the array 2 MiB
    aligned in it, so that with transparent huge pages on ("madvise" or "always") a
    page-table entry covers 2 MiB. Sampling's kernels read the transposed
    convolution's weights 256 bytes from each 8 KiB row, a 4 KiB page per cache
    line, and on a virtual machine each miss of the TLB walks two page tables: a
    one-image sample took 0.965 of the time for the teacher, 0.985 for the student
    (PERFORMANCE.md, log 103). NumPy marks arrays from 4 MiB on too, but only the
    whole 2 MiB pages inside them, so the teacher's last 2 MB of weights may lie
    in 4 KiB pages. Elsewhere (small arrays, no ``madvise``), ``_aligned``'s zeros.
    The array keeps its mapping alive (its base)."""
    nbytes = 4 * int(n)
    if _HUGE_MIN is None or nbytes < _HUGE_MIN or not hasattr(mmap, "MADV_HUGEPAGE"):
        return _aligned(n, True)
    m = mmap.mmap(-1, -(-nbytes // _HUGE) * _HUGE + _HUGE,   # zeros; room to align
                  flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        m.madvise(mmap.MADV_HUGEPAGE)
    except OSError:   # a kernel without transparent huge pages: 4 KiB pages
        pass
    return _start_on(np.frombuffer(m, np.uint8), nbytes, _HUGE)


def _start_on(buf, nbytes, align):
    """The float32 view of ``nbytes`` bytes of the byte array ``buf`` from its first
    ``align``-byte boundary (``buf`` holds ``align - 1`` bytes to spare)."""
    at = -buf.ctypes.data % align
    return buf[at:at + nbytes].view(_F32)


def _aligned(shape, zero=False):
    """A float32 array of ``shape`` (zeros when ``zero``) starting on a 64-byte cache
    line, where NumPy's allocator gives 16 bytes: the core's 64-byte vectors then
    load and store within a line. The one-image teacher sample, whose transposed
    kernel adds its patches onto padded planes at the workspace's start, took
    0.985-0.989 of the time with its workspace aligned (PERFORMANCE.md, log 117)."""
    nbytes = 4 * int(np.prod(shape, dtype=np.int64))
    buf = (np.zeros if zero else np.empty)(nbytes + 63, np.uint8)
    return _start_on(buf, nbytes, 64).reshape(shape)


def _act_args(act):
    """The ``_core`` keywords (act, slope) of the activation layer ``act`` fused
    into the op before it, or none when ``act`` is None."""
    return dict(act=_ACT_CODES[act.type], slope=act.slope) if act is not None else {}


class _Layer:
    """Base layer: per-sample shape logic, parameter and buffer declarations."""

    type = "layer"
    needs_labels = False

    def __init__(self, d):
        self.spec = dict(d)
        self.param_shapes = {}   # name -> shape, in declaration order
        self.buffer_shapes = {}
        self.p = {}              # name -> view into Network.params
        self.g = {}              # name -> view into Network.grads
        self.b = {}              # name -> view into Network.buffers

    def out_shape(self, s):
        return s

    def macs(self, s):
        return 0

    def workspace(self, n, s):
        return 0

    def init(self, rng, scheme):
        pass

    # Layers whose forward is one ``_core`` call (or a view) also define
    # ``_call(net, x, train) -> (out, fn, args, kwargs)``: the call ``fn(*args, **kwargs)``
    # that writes ``out`` (``fn`` None: ``out`` is a view of ``x``), without the state a
    # backward reads, which ``forward`` keeps. :meth:`Network.predict` replays these.
    _call = None


def _run(call):
    """Makes the call of a layer's ``_call`` and returns its output."""
    out, fn, args, kwargs = call
    if fn is not None:
        fn(*args, **kwargs)
    return out


def _normal_init(rng, arr, std):
    arr[...] = rng.normal(0.0, std, size=arr.shape).astype(_F32)


def _kaiming_uniform(rng, arr, fan_in):
    # PyTorch's default for Linear/Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(max(1, fan_in))
    arr[...] = rng.uniform(-bound, bound, size=arr.shape).astype(_F32)


class _Weighted(_Layer):
    """Linear / conv / conv-transpose: a weight, an optional bias, optional
    spectral normalisation (Miyato et al. 2018) with one power iteration per
    training forward, gradients through W/sigma with u, v held constant as
    in torch.nn.utils.spectral_norm."""

    def __init__(self, d, spectral_norm=False):
        super().__init__(d)
        self.sn = spectral_norm
        self.param_shapes["weight"] = self.weight_shape()
        if d.get("bias", True):
            self.param_shapes["bias"] = (self.bias_len(),)
        if self.sn:
            rows = self.param_shapes["weight"][0]
            cols = int(np.prod(self.param_shapes["weight"][1:]))
            self.buffer_shapes["sn_u"] = (rows,)
            self.buffer_shapes["sn_v"] = (cols,)
        self._w_eff = None
        self._dw_eff = None
        self._sigma = 1.0
        self._geom_memo = {}     # per-sample input shape -> geometry (conv layers)
        self._query_memo = {}   # (core question, batch input shape) -> answer (Conv2d._query)

    def _geom(self, s):
        """The layer's geometry for a per-sample input shape, computed once per shape
        (a batch of one spends more time in Python than in its small GEMMs)."""
        key = tuple(s)
        g = self._geom_memo.get(key)
        if g is None:
            g = self._geom_memo[key] = self._compute_geom(key)
        return g

    def init(self, rng, scheme):
        w = self.p["weight"]
        fan_in = self.fan_in()
        if scheme == "dcgan":
            _normal_init(rng, w, 0.02)
            if "bias" in self.p:
                self.p["bias"][...] = 0
        else:
            _kaiming_uniform(rng, w, fan_in)
            if "bias" in self.p:
                _kaiming_uniform(rng, self.p["bias"], fan_in)
        if self.sn:
            u = rng.normal(size=self.buffer_shapes["sn_u"])
            v = rng.normal(size=self.buffer_shapes["sn_v"])
            self.b["sn_u"][...] = u / np.linalg.norm(u)
            self.b["sn_v"][...] = v / np.linalg.norm(v)

    def weight(self, train):
        """The weight the op uses: W, or W / sigma(W) with spectral norm."""
        if not self.sn:
            return self.p["weight"]
        W = self.p["weight"].reshape(self.param_shapes["weight"][0], -1)
        u, v = self.b["sn_u"], self.b["sn_v"]
        if train:
            v_new = W.T @ u
            v[...] = v_new / max(float(np.linalg.norm(v_new)), 1e-12)
            u_new = W @ v
            u[...] = u_new / max(float(np.linalg.norm(u_new)), 1e-12)
        self._sigma = float(u @ (W @ v))
        if self._w_eff is None:
            self._w_eff = np.empty_like(self.p["weight"])
            self._dw_eff = np.zeros_like(self.p["weight"])
        np.divide(self.p["weight"], _F32(self._sigma), out=self._w_eff)
        return self._w_eff

    def weight_grad(self, param_grads):
        if not param_grads:
            return None
        if not self.sn:
            return self.g["weight"]
        self._dw_eff.fill(0)
        return self._dw_eff

    def finish_weight_grad(self, param_grads):
        """Maps dL/d(W/sigma) to dL/dW: (G - <G, W_sn> u v^T) / sigma."""
        if not (self.sn and param_grads):
            return
        G = self._dw_eff.reshape(self.param_shapes["weight"][0], -1)
        Wsn = self._w_eff.reshape(G.shape)
        u, v = self.b["sn_u"], self.b["sn_v"]
        coef = float(np.vdot(G, Wsn))
        dW = (G - coef * np.outer(u, v)) / self._sigma
        self.g["weight"] += dW.reshape(self.g["weight"].shape).astype(_F32)


class Linear(_Weighted):
    type = "linear"

    def weight_shape(self):
        return (self.spec["out_features"], self.spec["in_features"])

    def bias_len(self):
        return self.spec["out_features"]

    def fan_in(self):
        return self.spec["in_features"]

    def out_shape(self, s):
        if tuple(s) != (self.spec["in_features"],):
            raise ValueError(f"linear expects ({self.spec['in_features']},) per sample, got {tuple(s)}")
        return (self.spec["out_features"],)

    def macs(self, s):
        return self.spec["in_features"] * self.spec["out_features"]

    def _call(self, net, x, train):
        out = net.buf(self, "out", (x.shape[0], self.spec["out_features"]))
        return out, _core._linear_forward, (out, x, self.weight(train), self.p.get("bias")), {}

    def forward(self, net, x, train):
        out = _run(self._call(net, x, train))
        self._x = x
        return out

    def backward(self, net, dy, need_dx, param_grads):
        dx = net.buf(self, "dx", self._x.shape, zero=True) if need_dx else None
        _core._linear_backward(dx, self.weight_grad(param_grads),
                               self.g.get("bias") if param_grads else None,
                               dy, self._x, self._w_eff if self.sn else self.p["weight"])
        self.finish_weight_grad(param_grads)
        return dx


def _pair(v):
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


class Conv2d(_Weighted):
    type = "conv2d"

    def weight_shape(self):
        kh, kw = _pair(self.spec["kernel_size"])
        return (self.spec["out_channels"], self.spec["in_channels"], kh, kw)

    def bias_len(self):
        return self.spec["out_channels"]

    def fan_in(self):
        kh, kw = _pair(self.spec["kernel_size"])
        return self.spec["in_channels"] * kh * kw

    def _compute_geom(self, s):
        C, H, W = s
        if C != self.spec["in_channels"]:
            raise ValueError(f"conv2d expects {self.spec['in_channels']} input channels, got {C}")
        kh, kw = _pair(self.spec["kernel_size"])
        sh, sw = _pair(self.spec.get("stride", 1))
        ph, pw = _pair(self.spec.get("padding", 0))
        oh = (H + 2 * ph - kh) // sh + 1
        ow = (W + 2 * pw - kw) // sw + 1
        return C, H, W, kh, kw, sh, sw, ph, pw, oh, ow

    def out_shape(self, s):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(s)
        if oh < 1 or ow < 1:
            raise ValueError(f"conv2d input {tuple(s)} too small for kernel {kh}x{kw}")
        return (self.spec["out_channels"], oh, ow)

    def macs(self, s):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(s)
        return self.spec["out_channels"] * oh * ow * C * kh * kw

    def workspace(self, n, s):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(s)
        return _core._conv2d_workspace_size(n, C, H, W, self.spec["out_channels"],
                                            kh, kw, sh, sw, ph, pw, oh, ow)

    # the activation fused after this layer in the last forward (Network.forward sets
    # it, where act_fits): None, or the ReLU / LeakyReLU layer whose work the core did
    _act = None

    def _call(self, net, x, train):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(x.shape[1:])
        out = net.buf(self, "out", (x.shape[0], self.spec["out_channels"], oh, ow))
        # in training, the im2col matrix is kept for the weight gradient of the
        # backward (which would otherwise rebuild it), up to _COL_KEEP_MAX floats,
        # unless the core computes both without one (a direct kernel on this CPU)
        rows, cols = C * kh * kw, x.shape[0] * oh * ow
        keep = train and rows * cols <= _COL_KEEP_MAX and not self._direct(x.shape)
        col = net.buf(self, "col", (rows, cols)) if keep else None
        return out, _core._conv2d_forward, (out, net.workspace, x, self.weight(train),
                                            self.p.get("bias"), sh, sw, ph, pw), \
            dict(col=col, **_act_args(self._act))

    def forward(self, net, x, train):
        call = self._call(net, x, train)
        out = _run(call)
        self._fused_args = {k: v for k, v in call[3].items() if k != "col"}
        self._x, self._col, self._out = x, call[3]["col"], out
        return out

    def act_fits(self, shape):
        """Whether the core fuses a ReLU / LeakyReLU into this layer for a batch of
        input shape ``shape`` (``_core._conv2d_act_fits``: one input channel, the
        kernels of a DCGAN critic's first layer), memoised per shape."""
        return self._query(_core._conv2d_act_fits, shape)

    def _direct(self, shape):
        """Whether the core runs this batch's forward and weight gradient directly
        (``_core._conv2d_direct``), memoised per input shape."""
        return self._query(_core._conv2d_direct, shape)

    def _query(self, fn, shape):
        """``fn`` (a ``_core`` question about a conv2d geometry) for a batch of input
        shape ``shape``, memoised per question and shape."""
        d = self._query_memo.get((fn.__name__, shape))
        if d is None:
            C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(shape[1:])
            d = self._query_memo[(fn.__name__, shape)] = fn(
                shape[0], C, H, W, self.spec["out_channels"], kh, kw, sh, sw, ph, pw, oh, ow)
        return d

    def backward(self, net, dy, need_dx, param_grads):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(self._x.shape[1:])
        dx = net.buf(self, "dx", self._x.shape, zero=True) if need_dx else None
        # dy is the gradient of the fused activation's output when there was one
        fused = dict(self._fused_args, out=self._out) if self._fused_args else {}
        _core._conv2d_backward(dx, self.weight_grad(param_grads),
                               self.g.get("bias") if param_grads else None, net.workspace,
                               dy, self._x, self._w_eff if self.sn else self.p["weight"],
                               sh, sw, ph, pw, col=self._col if param_grads else None,
                               **fused)
        self.finish_weight_grad(param_grads)
        return dx


class ConvTranspose2d(_Weighted):
    type = "conv_transpose2d"

    def weight_shape(self):
        kh, kw = _pair(self.spec["kernel_size"])
        return (self.spec["in_channels"], self.spec["out_channels"], kh, kw)

    def bias_len(self):
        return self.spec["out_channels"]

    def fan_in(self):
        # PyTorch computes fan_in of a transposed conv from weight.shape[1]
        kh, kw = _pair(self.spec["kernel_size"])
        return self.spec["out_channels"] * kh * kw

    def _compute_geom(self, s):
        C, H, W = s
        if C != self.spec["in_channels"]:
            raise ValueError(f"conv_transpose2d expects {self.spec['in_channels']} input channels, got {C}")
        kh, kw = _pair(self.spec["kernel_size"])
        sh, sw = _pair(self.spec.get("stride", 1))
        ph, pw = _pair(self.spec.get("padding", 0))
        oph, opw = _pair(self.spec.get("output_padding", 0))
        oh = (H - 1) * sh - 2 * ph + kh + oph
        ow = (W - 1) * sw - 2 * pw + kw + opw
        return C, H, W, kh, kw, sh, sw, ph, pw, oh, ow

    def out_shape(self, s):
        g = self._geom(s)
        return (self.spec["out_channels"], g[-2], g[-1])

    def macs(self, s):
        C, H, W, kh, kw, *_ = self._geom(s)
        return C * H * W * self.spec["out_channels"] * kh * kw

    def workspace(self, n, s):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(s)
        return _core._conv_transpose2d_workspace_size(n, C, H, W, self.spec["out_channels"],
                                                      kh, kw, sh, sw, ph, pw, oh, ow)

    def _call(self, net, x, train):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(x.shape[1:])
        out = net.buf(self, "out", (x.shape[0], self.spec["out_channels"], oh, ow))
        return out, _core._conv_transpose2d_forward, (out, net.workspace, x, self.weight(train),
                                                      self.p.get("bias"), sh, sw, ph, pw), {}

    def forward(self, net, x, train):
        out = _run(self._call(net, x, train))
        self._x = x
        return out

    def backward(self, net, dy, need_dx, param_grads):
        C, H, W, kh, kw, sh, sw, ph, pw, oh, ow = self._geom(self._x.shape[1:])
        dx = net.buf(self, "dx", self._x.shape, zero=True) if need_dx else None
        _core._conv_transpose2d_backward(dx, self.weight_grad(param_grads),
                                         self.g.get("bias") if param_grads else None,
                                         net.workspace, dy, self._x,
                                         self._w_eff if self.sn else self.p["weight"],
                                         sh, sw, ph, pw)
        self.finish_weight_grad(param_grads)
        return dx


class BatchNorm(_Layer):
    """Batch norm over N (2-D input) or N, H, W (4-D input), PyTorch semantics:
    eps 1e-5, momentum 0.1, running variance unbiased."""

    type = "batch_norm"

    def __init__(self, d):
        super().__init__(d)
        c = d["num_features"]
        self.eps = float(d.get("eps", 1e-5))
        self.momentum = float(d.get("momentum", 0.1))
        self.param_shapes["weight"] = (c,)
        self.param_shapes["bias"] = (c,)
        self.buffer_shapes["running_mean"] = (c,)
        self.buffer_shapes["running_var"] = (c,)

    def out_shape(self, s):
        if s[0] != self.spec["num_features"]:
            raise ValueError(f"batch_norm expects {self.spec['num_features']} features, got {s[0]}")
        return s

    def init(self, rng, scheme):
        if scheme == "dcgan":
            _normal_init(rng, self.p["weight"], 0.02)
            self.p["weight"] += 1.0
        else:
            self.p["weight"][...] = 1.0
        self.p["bias"][...] = 0.0
        self.b["running_mean"][...] = 0.0
        self.b["running_var"][...] = 1.0

    # the activation fused after this layer in the last forward (Network.forward sets
    # it): None, or the ReLU / LeakyReLU layer whose work the core did here
    _act = None

    def _call(self, net, x, train):
        out = net.buf(self, "out", x.shape)
        fused = _act_args(self._act)
        if train:
            c = self.spec["num_features"]
            self._mean = net.buf(self, "mean", (c,))
            self._rstd = net.buf(self, "rstd", (c,))
            mom = self.momentum if net.track_stats else 0.0
            return out, _core._batchnorm_forward, (
                out, self._mean, self._rstd, self.b["running_mean"], self.b["running_var"], x,
                self.p["weight"], self.p["bias"], self.eps, mom), fused
        return out, _core._batchnorm_forward_eval, (
            out, x, self.b["running_mean"], self.b["running_var"], self.p["weight"],
            self.p["bias"], self.eps), fused

    def forward(self, net, x, train):
        call = self._call(net, x, train)
        out = _run(call)
        self._x, self._train, self._out, self._fused_args = x, train, out, call[3]
        return out

    def backward(self, net, dy, need_dx, param_grads):
        dx = net.buf(self, "dx", self._x.shape, zero=True) if need_dx else None
        dg = self.g["weight"] if param_grads else None
        db = self.g["bias"] if param_grads else None
        # dy is the gradient of the fused activation's output when there was one
        fused = dict(self._fused_args, out=self._out) if self._fused_args else {}
        if self._train:
            _core._batchnorm_backward(dx, dg, db, dy, self._x, self._mean, self._rstd,
                                      self.p["weight"], **fused)
        else:
            _core._batchnorm_backward_eval(dx, dg, db, dy, self._x, self.b["running_mean"],
                                           self.b["running_var"], self.p["weight"], self.eps,
                                           **fused)
        return dx


class _Act(_Layer):
    """Elementwise activation (no multiply-accumulates counted)."""


class _PiecewiseLinear(_Act):
    """ReLU and LeakyReLU: y = x * gain(x), gain 1 for x > 0 and the slope otherwise.
    :meth:`Network.frozen_activations` holds the gains of the last forward, so that
    the network is affine in its input around that point (used by the R1 penalty)."""
    _frozen = None     # (gain, input) of the forward the gains were taken from
    _fused = False     # computed by the layer before it in the last forward
    slope = 0.0

    def forward(self, net, x, train):
        if self._frozen is not None:
            return self._forward_frozen(net, x)
        out = _run(self._call(net, x, train))
        self._x = x
        return out

    def forward_fused(self, x):
        """The forward when the layer before this one computed it (x is its
        output, already activated): nothing to do. Its sign is the input's (slope
        >= 0), which is all that :meth:`freeze` and the backward use of ``_x``."""
        self._x = x
        return x

    def freeze(self):
        self._frozen = (np.where(self._x > 0, _F32(1), _F32(self.slope)).astype(_F32),
                        self._x.copy())

    def _forward_frozen(self, net, x):
        gain, x0 = self._frozen
        out = net.buf(self, "out", x.shape)
        np.multiply(x, gain, out=out)
        self._x = x0       # the backward then takes the same gains
        return out


class ReLU(_PiecewiseLinear):
    type = "relu"

    def _call(self, net, x, train):
        out = net.buf(self, "out", x.shape)
        return out, _core._relu_forward, (out, x), {}

    def backward(self, net, dy, need_dx, param_grads):
        if self._fused:
            return dy   # the layer before it takes dy through the activation
        dx = net.buf(self, "dx", dy.shape, zero=True)
        _core._relu_backward(dx, dy, self._x)
        return dx


class LeakyReLU(_PiecewiseLinear):
    type = "leaky_relu"

    @property
    def slope(self):
        return float(self.spec.get("negative_slope", 0.2))

    def _call(self, net, x, train):
        out = net.buf(self, "out", x.shape)
        return out, _core._leaky_relu_forward, (out, x, self.slope), {}

    def backward(self, net, dy, need_dx, param_grads):
        if self._fused:
            return dy   # the layer before it takes dy through the activation
        dx = net.buf(self, "dx", dy.shape, zero=True)
        _core._leaky_relu_backward(dx, dy, self._x, self.slope)
        return dx


class Tanh(_Act):
    type = "tanh"

    def _call(self, net, x, train):
        out = net.buf(self, "out", x.shape)
        return out, _core._tanh_forward, (out, x), {}

    def forward(self, net, x, train):
        self._y = _run(self._call(net, x, train))
        return self._y

    def backward(self, net, dy, need_dx, param_grads):
        dx = net.buf(self, "dx", dy.shape, zero=True)
        _core._tanh_backward(dx, dy, self._y)
        return dx


class Sigmoid(_Act):
    type = "sigmoid"

    def _call(self, net, x, train):
        out = net.buf(self, "out", x.shape)
        return out, _core._sigmoid_forward, (out, x), {}

    def forward(self, net, x, train):
        self._y = _run(self._call(net, x, train))
        return self._y

    def backward(self, net, dy, need_dx, param_grads):
        dx = net.buf(self, "dx", dy.shape, zero=True)
        _core._sigmoid_backward(dx, dy, self._y)
        return dx


class Reshape(_Layer):
    type = "reshape"

    def out_shape(self, s):
        shape = tuple(self.spec["shape"])
        if int(np.prod(shape)) != int(np.prod(s)):
            raise ValueError(f"reshape {tuple(s)} -> {shape}: sizes differ")
        return shape

    def _call(self, net, x, train):
        return x.reshape((x.shape[0],) + tuple(self.spec["shape"])), None, (), {}

    def forward(self, net, x, train):
        self._in = x.shape
        return self._call(net, x, train)[0]

    def backward(self, net, dy, need_dx, param_grads):
        return dy.reshape(self._in)


class Flatten(_Layer):
    type = "flatten"

    def out_shape(self, s):
        return (int(np.prod(s)),)

    def _call(self, net, x, train):
        return x.reshape(x.shape[0], -1), None, (), {}

    def forward(self, net, x, train):
        self._in = x.shape
        return self._call(net, x, train)[0]

    def backward(self, net, dy, need_dx, param_grads):
        return dy.reshape(self._in)


class LabelConcat(_Layer):
    """[x, E[y]]: a learned label embedding concatenated to the input."""

    type = "label_concat"
    needs_labels = True

    def __init__(self, d):
        super().__init__(d)
        self.param_shapes["embedding"] = (d["num_classes"], d["embed_dim"])

    def out_shape(self, s):
        return (s[0] + self.spec["embed_dim"],)

    def init(self, rng, scheme):
        _normal_init(rng, self.p["embedding"], 1.0)

    def forward(self, net, x, train):
        n, f = x.shape
        e = self.spec["embed_dim"]
        emb = net.buf(self, "emb", (n, e))
        _core._embedding_forward(emb, net.labels, self.p["embedding"])
        out = net.buf(self, "out", (n, f + e))
        out[:, :f] = x
        out[:, f:] = emb
        self._f = f
        self._labels = net.labels
        return out

    def backward(self, net, dy, need_dx, param_grads):
        if param_grads:
            _core._embedding_backward(self.g["embedding"], np.ascontiguousarray(dy[:, self._f:]),
                                      self._labels)
        return np.ascontiguousarray(dy[:, :self._f]) if need_dx else None


class Projection(_Layer):
    """Projection discriminator head (Miyato & Koyama 2018):
    logit = h @ psi^T + b + <E[y], h>."""

    type = "projection"
    needs_labels = True

    def __init__(self, d):
        super().__init__(d)
        f = d["in_features"]
        self.param_shapes["weight"] = (1, f)
        self.param_shapes["bias"] = (1,)
        self.param_shapes["embedding"] = (d["num_classes"], f)

    def out_shape(self, s):
        return (1,)

    def macs(self, s):
        return 2 * self.spec["in_features"]

    def init(self, rng, scheme):
        f = self.spec["in_features"]
        if scheme == "dcgan":
            _normal_init(rng, self.p["weight"], 0.02)
            _normal_init(rng, self.p["embedding"], 0.02)
        else:
            _kaiming_uniform(rng, self.p["weight"], f)
            _kaiming_uniform(rng, self.p["embedding"], f)
        self.p["bias"][...] = 0

    def forward(self, net, h, train):
        n, f = h.shape
        out = net.buf(self, "out", (n, 1))
        _core._linear_forward(out, h, self.p["weight"], self.p["bias"])
        emb = net.buf(self, "emb", (n, f))
        _core._embedding_forward(emb, net.labels, self.p["embedding"])
        out[:, 0] += np.einsum("nf,nf->n", emb, h)
        self._h, self._emb, self._labels = h, emb, net.labels
        return out

    def backward(self, net, dy, need_dx, param_grads):
        # forward: out = h @ w^T + b + sum_f emb * h
        dx = net.buf(self, "dx", self._h.shape, zero=True) if need_dx else None
        _core._linear_backward(dx, self.g["weight"] if param_grads else None,
                               self.g["bias"] if param_grads else None, dy, self._h, self.p["weight"])
        if need_dx:
            dx += dy * self._emb
        if param_grads:
            _core._embedding_backward(self.g["embedding"],
                                      np.ascontiguousarray(dy * self._h, dtype=_F32), self._labels)
        return dx


_LAYERS = {cls.type: cls for cls in (Linear, Conv2d, ConvTranspose2d, BatchNorm, ReLU, LeakyReLU,
                                     Tanh, Sigmoid, Reshape, Flatten, LabelConcat, Projection)}


def build_layer(d, spectral_norm=False):
    """A layer object from its dict."""
    if not isinstance(d, dict) or "type" not in d:
        raise ValueError(f"a layer must be a dict with a 'type', got {d!r}")
    cls = _LAYERS.get(d["type"])
    if cls is None:
        raise ValueError(f"unknown layer type {d['type']!r}; known: {sorted(_LAYERS)}")
    if issubclass(cls, _Weighted):
        return cls(d, spectral_norm=spectral_norm)
    return cls(d)


class Network:
    """A sequential network over flat parameter, gradient and buffer arrays.

    Parameters
    ----------
    layers : list of dict
        The layer specs.
    input_shape : tuple of int
        Per-sample input shape.
    spectral_norm : bool
        Spectral normalisation of every weighted layer; batch-norm layers are
        then dropped (a spectrally normalised critic needs no batch norm).
    init : {"dcgan", "default"}
        N(0, 0.02) weights (Radford et al. 2016) or PyTorch's default.
    seed : int
        Seed of the initialisation.

    Attributes
    ----------
    keep_packed : bool
        Off by default. When set, :meth:`predict` of one sample keeps each head's
        transposed-convolution weights packed as the core's one-image kernel reads
        them (``_core._convt_few_pack``), and the scales of the batch norm before it
        (``_core._bn_eval_scale``), made again on the first call after
        :meth:`weights_changed` or a training-mode :meth:`forward`, instead of the
        kernel copying the weights block by block and computing the scales on every
        call: the same bits, ~5 % and ~1 % less time for a width-1.0 DCGAN's
        one-image sample (PERFORMANCE.md, logs 127 and 129). ``GAN`` sets it on its
        EMA generator, whose weights change only through distgan's own calls.
    """

    def __init__(self, layers, input_shape, spectral_norm=False, init="dcgan", seed=0):
        specs = [dict(d) for d in layers]
        if spectral_norm:
            # the layer before a dropped batch norm gets back the bias the norm made redundant
            for i, d in enumerate(specs[1:], 1):
                if d.get("type") == "batch_norm" and "bias" in specs[i - 1]:
                    specs[i - 1]["bias"] = True
            specs = [d for d in specs if d.get("type") != "batch_norm"]
        self.spec = specs
        self.spectral_norm = bool(spectral_norm)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.layers = [build_layer(d, spectral_norm) for d in specs]
        self.needs_labels = any(l.needs_labels for l in self.layers)
        shapes = [self.input_shape]
        for l in self.layers:
            shapes.append(tuple(l.out_shape(shapes[-1])))
        self.shapes = shapes
        self.output_shape = shapes[-1]
        # where a head starts (:meth:`_head_fits`): linear, batch norm, ReLU or leaky
        # ReLU, reshape to (C, H, W), transposed convolution
        kinds = (Linear, BatchNorm, _PiecewiseLinear, Reshape, ConvTranspose2d)
        self._heads = frozenset(
            i for i in range(len(self.layers) - 4)
            if all(isinstance(l, k) for l, k in zip(self.layers[i:i + 5], kinds))
            and len(shapes[i + 4]) == 3)

        p_total = sum(int(np.prod(s)) for l in self.layers for s in l.param_shapes.values())
        b_total = sum(int(np.prod(s)) for l in self.layers for s in l.buffer_shapes.values())
        self.params = _huge_zeros(p_total)
        self.grads = _huge_zeros(p_total)
        self.buffers = np.zeros(b_total, _F32)
        self.param_index = []   # (layer index, name, offset, shape)
        po = bo = 0
        for i, l in enumerate(self.layers):
            for name, s in l.param_shapes.items():
                n = int(np.prod(s))
                l.p[name] = self.params[po:po + n].reshape(s)
                l.g[name] = self.grads[po:po + n].reshape(s)
                self.param_index.append((i, name, po, tuple(s)))
                po += n
            for name, s in l.buffer_shapes.items():
                n = int(np.prod(s))
                l.b[name] = self.buffers[bo:bo + n].reshape(s)
                bo += n
        self.track_stats = True
        self.labels = None
        self._bufs = {}
        self._fused = set()   # layers fused with their activation (_fusions)
        self.workspace = np.zeros(0, _F32)
        self._ws_batch = None
        self._plan = None          # predict's plan: (key, input, calls, output, packs)
        self.keep_packed = False   # predict keeps heads' weights packed (keep_packed)
        self._wversion = 0         # weights_changed() calls and training-mode forwards
        self._packed_at = -1       # the _wversion the plan's packs were made at
        self._frozen_blocks = 0    # frozen_activations blocks that are open
        self._backward_ok = True   # False after predict, until the next forward
        self.reset_parameters(init, seed)

    # -- set-up ------------------------------------------------------------------
    def remove_spectral_norm(self, fold=True):
        """Switch spectral normalisation off in every weighted layer.

        With ``fold`` (default) each ``W`` becomes the normalised weight an eval-mode
        forward uses (``weight(train=False)``: ``W / sigma`` with sigma from the current
        power-iteration vectors), so the network computes the same function, from here
        on unconstrained. ``fold=False`` only
        flips the switch (weights already folded, e.g. restored from a checkpoint).
        The ``sn_u``/``sn_v`` buffers stay (unused) so checkpoints keep their layout.
        """
        for l in self.layers:
            if isinstance(l, _Weighted) and l.sn:
                if fold:
                    l.p["weight"][...] = l.weight(False)
                l.sn = False
        self.spectral_norm = False

    def reset_parameters(self, init="dcgan", seed=0):
        """Re-initialise every parameter and buffer from ``seed``."""
        if init not in ("dcgan", "default"):
            raise ValueError(f"init must be 'dcgan' or 'default', got {init!r}")
        rng = np.random.default_rng(seed)
        for l in self.layers:
            l.init(rng, init)
        self.weights_changed()

    def weights_changed(self):
        """Tell the network that its parameters or buffers changed, so that
        :meth:`predict` packs what it keeps packed again (:attr:`keep_packed`) before
        its next call. distgan's own writes call it (:meth:`copy_from`,
        :meth:`reset_parameters`, ``GAN.update_ema``, ``GAN.load``), and a
        training-mode :meth:`forward`, which updates the batch norms' running
        statistics, counts as one; call it after writing into ``params`` or
        ``buffers`` yourself while ``keep_packed`` is set."""
        self._wversion += 1

    @property
    def num_params(self) -> int:
        """Number of trainable parameters."""
        return int(self.params.size)

    @property
    def macs(self) -> int:
        """Multiply-accumulates per sample of one forward pass, counted as is
        usual over the linear, convolution and projection layers (batch norm and
        activations, about 0.4% of a DCGAN's work, are not counted)."""
        return int(sum(l.macs(s) for l, s in zip(self.layers, self.shapes)))

    def named_parameters(self):
        """(qualified name, view) pairs, e.g. ``("3.weight", array)``."""
        return [(f"{i}.{name}", self.layers[i].p[name]) for i, name, _, _ in self.param_index]

    def buf(self, layer, name, shape, zero=False):
        """A cached scratch array for (layer, name, shape)."""
        key = (id(layer), name)
        a = self._bufs.get(key)
        if a is None or a.shape != tuple(shape):
            a = _aligned(shape, zero)
            self._bufs[key] = a
        elif zero:
            _core._zero(a)   # a.fill(0), on the core's threads
        return a

    def _ensure_workspace(self, n):
        if self._ws_batch == n:
            return
        need = max([0] + [l.workspace(n, s) for l, s in zip(self.layers, self.shapes)])
        if need > self.workspace.size:
            self.workspace = _huge_zeros(need)
        self._ws_batch = n

    # -- compute -----------------------------------------------------------------
    def forward(self, x, labels=None, train=True, taps=None):
        """Forward pass of a batch.

        Parameters
        ----------
        x : ndarray, float32, (N, *input_shape)
        labels : ndarray of int, (N,), needed by conditional layers
        train : bool
            Batch statistics (and running-statistics update) in batch norm, and
            a power iteration in spectral norm, when True.
        taps : sequence of int, optional
            Layer indices whose outputs are also returned (features).

        Returns
        -------
        ndarray, or (ndarray, list of ndarray) when ``taps`` is given. The
        arrays are the network's cached buffers: copy what you keep past the
        next forward.
        """
        if x.dtype != _F32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=_F32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"input must be (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if self.needs_labels:
            if labels is None:
                raise ValueError("this network is conditional: labels are required")
            labels = np.ascontiguousarray(labels, dtype=np.int64)
            if labels.shape != (x.shape[0],):
                raise ValueError(f"labels must have shape ({x.shape[0]},), got {labels.shape}")
        self.labels = labels
        self._backward_ok = True
        if train:
            self._wversion += 1   # batch norms' running statistics (predict's scales)
        self._ensure_workspace(x.shape[0])
        fused = self._fusions(taps, x.shape[0])
        feats = []
        skip = -1   # layers up to this one were computed by _forward_head
        for i, l in enumerate(self.layers):
            if i <= skip:
                continue
            if not train and self._head_fits(i, fused, taps):
                x = self._forward_head(i, x)
                i = skip = i + 4
            elif i - 1 in fused:
                x = l.forward_fused(x)
            else:
                x = l.forward(self, x, train)
            if taps is not None and i in taps:
                feats.append(x)
        return (x, feats) if taps is not None else x

    def predict(self, x, labels=None):
        """Eval-mode forward for inference: ``forward(x, labels, train=False)``, the
        same bits, with less Python per call. The first call for a batch size records
        the forward's ``_core`` calls with their arrays (the layers' ``_call``; each
        checked once as a prepared call where the core can, ``_core._prepare``); later
        calls of that size copy ``x`` into the recorded input and replay them. Sampling
        one image spent 66-72 µs in Python otherwise, 8 % of a width-1.0 generator's
        sample and a third of a width-0.25 one's (PERFORMANCE.md, log 74). The plan
        holds views of the parameters, so it follows writes into them, except the
        heads' weights and batch-norm scales that :attr:`keep_packed` keeps: those
        follow :meth:`weights_changed` and training-mode forwards.

        Keeps none of the state a backward needs: :meth:`backward` after it raises
        until the next :meth:`forward`. Conditional and spectral-norm networks, and
        calls inside :meth:`frozen_activations`, take :meth:`forward`. Returns the
        network's cached output buffer, as :meth:`forward` does: copy what you keep.
        """
        if labels is None and isinstance(x, np.ndarray) and x.ndim == len(self.input_shape) + 1:
            plan = self._ready_plan(x.shape[0])
            if plan is not None and plan[1].shape == x.shape:
                np.copyto(plan[1], x)    # casts a float64 input as forward does
                return self._run_plan(plan)
        return self.forward(x, labels, train=False)

    def _predict_from(self, n, src, at):
        """:meth:`predict` of the n inputs at ``src[at:]`` (a flat float32 array), as a
        new array: the copy in, the plan's calls and the copy out in one
        ``_core._run_plan`` call. None where predict takes :meth:`forward`."""
        plan = self._ready_plan(n)
        if plan is None:
            return None
        self._prime_plan(plan)
        return _core._run_plan(plan[2], plan[1], src, at, plan[3])

    def _ready_plan(self, n):
        """:meth:`predict`'s plan for batches of n (made on first use), or None where
        predict takes :meth:`forward`. Its input is ``plan[1]``; :meth:`_run_plan`
        runs it."""
        if self._frozen_blocks:
            return None
        plan = self._plan
        if plan is None or plan[0] != (n, _FUSE, _FUSE_HEAD, self.keep_packed):
            plan = self._plan = self._make_plan(n)
        return plan

    def _run_plan(self, plan):
        """Runs a plan of :meth:`_ready_plan` on what its input holds; returns its
        output buffer."""
        self._prime_plan(plan)
        for call in plan[2]:
            call()
        return plan[3]

    def _prime_plan(self, plan):
        """Before a plan runs: its kept packs remade if the weights changed, and
        :meth:`backward` told that the state it needs is gone."""
        if plan[4] and self._packed_at != self._wversion:
            for pack in plan[4]:
                pack()
            self._packed_at = self._wversion
        self._backward_ok = False

    def _make_plan(self, n):
        """:meth:`predict`'s plan for batches of n, or None where it takes forward."""
        if n < 1 or self.needs_labels or any(
                l._call is None or getattr(l, "sn", False) for l in self.layers):
            return None
        self._ensure_workspace(n)
        fused = self._fusions(None, n)
        x = inp = np.zeros((n,) + self.input_shape, _F32)
        calls, packs = [], []
        self._packed_at = -1
        skip = -1
        for i, l in enumerate(self.layers):
            if i <= skip or i - 1 in fused:
                continue   # computed by a head, or an activation fused into the op before
            if self._head_fits(i, fused, None):
                # with the batch norm after it, where there is one (its activation,
                # if fused into it, is skipped as the layer after a fused one)
                tail = i + 5 < len(self.layers) and isinstance(self.layers[i + 5], BatchNorm)
                x, fn, args, kwargs = self._head_call(i, x, tail)
                skip = i + 4 + tail
                weight = self.layers[i + 4].weight(False)
                if self.keep_packed and n == 1:
                    if weight.shape[1] % 4 == 0 and weight.shape[2:] == (4, 4):
                        kwargs["packed"] = _huge_zeros(weight.size + 16)
                        packs.append(functools.partial(_core._convt_few_pack,
                                                       kwargs["packed"], weight))
                    bn = self.layers[i + 1]   # its scales, whatever the weights' shape
                    kwargs["scale"] = _aligned(bn.b["running_var"].size, zero=True)
                    packs.append(functools.partial(_core._bn_eval_scale, kwargs["scale"],
                                                   bn.b["running_var"], bn.p["weight"],
                                                   bn.eps))
            else:
                x, fn, args, kwargs = l._call(self, x, False)
            if fn is not None:
                # checked once here where the core can (a prepared call), not per call
                calls.append(_core._prepare(fn, *args, **kwargs)
                             or functools.partial(fn, *args, **kwargs))
        return (n, _FUSE, _FUSE_HEAD, self.keep_packed), inp, tuple(calls), x, tuple(packs)

    def _head_fits(self, i, fused, taps):
        """Whether layers i .. i + 4 are a head that :meth:`_forward_head` computes
        in one call in this eval-mode forward: linear, batch norm with its activation
        fused (``fused`` from :meth:`_fusions`), that activation, reshape,
        transposed convolution, and no tap among the first four's outputs."""
        if not _FUSE_HEAD or i not in self._heads or i + 1 not in fused:
            return False
        return not (taps is not None and any(k in taps for k in range(i, i + 4)))

    def _head_call(self, i, x, tail=False):
        """The ``_core._linear_bn_convt_forward`` call of the head at i (as a layer's
        ``_call``: out, fn, args, kwargs); with ``tail``, also of the batch norm at
        i + 5 and the activation fused into it, which the core applies as it stores
        the transposed layer's sums (one pass and one call less: ~1.5 % of a teacher's
        one-image sample, ~4 % of a student's; PERFORMANCE.md log 124). Its output is
        then that batch norm's."""
        lin_l, bn, act, reshape, ct = self.layers[i:i + 5]
        n = x.shape[0]
        lin = self.buf(lin_l, "out", (n, lin_l.spec["out_features"]))
        hid = self.buf(bn, "out", lin.shape)
        _, _, _, _, _, sh, sw, ph, pw, oh, ow = ct._geom(self.shapes[i + 4])
        out = self.buf(ct, "out", (n, ct.spec["out_channels"], oh, ow))
        h4 = reshape._call(self, hid, False)[0]
        kwargs = _act_args(bn._act)
        if tail:
            bn2 = self.layers[i + 5]
            out = self.buf(bn2, "out", out.shape)
            kwargs.update(running_mean2=bn2.b["running_mean"], running_var2=bn2.b["running_var"],
                          gamma2=bn2.p["weight"], beta2=bn2.p["bias"], eps2=bn2.eps)
            kwargs.update({k + "2": v for k, v in _act_args(bn2._act).items()})
        return out, _core._linear_bn_convt_forward, (
            out, lin, h4, self.workspace, x, lin_l.weight(False), lin_l.p.get("bias"),
            bn.b["running_mean"], bn.b["running_var"], bn.p["weight"], bn.p["bias"], bn.eps,
            ct.weight(False), ct.p.get("bias"), sh, sw, ph, pw), kwargs

    def _forward_head(self, i, x):
        """Layers i .. i + 4 (:meth:`_head_fits`) in eval mode in one
        ``_core._linear_bn_convt_forward`` call, which gives the layers' own results
        and, sampling one image on one thread, streams the linear layer's weights
        while the transposed convolution sums (PERFORMANCE.md, log 70). Each layer
        is left as its own forward leaves it, for a backward."""
        lin_l, bn, act, reshape, ct = self.layers[i:i + 5]
        out, _, args, kwargs = call = self._head_call(i, x)
        _run(call)
        lin, h4 = args[1], args[2]
        lin_l._x = x
        reshape._in = lin.shape
        bn._x, bn._train, bn._fused_args = lin, False, kwargs
        bn._out = self.buf(bn, "out", lin.shape)
        act.forward_fused(bn._out)
        ct._x = h4
        return out

    def _fusions(self, taps, n):
        """The indices i of batch norms, or of conv2d layers the core fuses an
        activation into (:meth:`Conv2d.act_fits`), that compute the ReLU / LeakyReLU
        at i + 1 in this forward of n samples (``_core`` fused ops: one pass, no
        intermediate tensor, forward and backward), and each layer told whether it
        is fused. Not where the layer's own output is a tap (the features before
        the activation), nor while the activations are frozen
        (:meth:`frozen_activations`)."""
        fused = set()
        for i, l in enumerate(self.layers):
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            ok = (_FUSE and isinstance(nxt, _PiecewiseLinear)
                  and nxt.type in _ACT_CODES and nxt._frozen is None and nxt.slope >= 0
                  and not (taps is not None and i in taps)
                  and (isinstance(l, BatchNorm) or
                       (isinstance(l, Conv2d) and l.act_fits((n,) + self.shapes[i]))))
            if isinstance(l, (BatchNorm, Conv2d)):
                l._act = nxt if ok else None
            if isinstance(l, _PiecewiseLinear):
                l._fused = i - 1 in fused
            if ok:
                fused.add(i)
        self._fused = fused
        return fused

    def backward(self, dout, need_dx=True, param_grads=True, tap_grads=None):
        """Backward pass after :meth:`forward`; accumulates into ``grads``.

        Parameters
        ----------
        dout : ndarray, float32, like the output
        need_dx : bool
            Compute and return the gradient of the input.
        param_grads : bool
            Accumulate parameter gradients (False skips their GEMMs: used when
            only the input gradient is needed, as in a generator step).
        tap_grads : dict {layer index: ndarray}, optional
            Extra gradients added to the output of those layers (features).
        """
        if not self._backward_ok:
            raise RuntimeError("backward needs a forward first: predict() keeps no state "
                               "for a backward")
        dy = dout
        n = len(self.layers)
        for i in range(n - 1, -1, -1):
            if tap_grads and i in tap_grads:
                if i in self._fused:
                    raise ValueError(f"tap_grads has layer {i}, a layer whose output the "
                                     f"forward did not keep (taps did not include {i})")
                dy = dy + tap_grads[i]
            dy = np.ascontiguousarray(dy, dtype=_F32)
            last = i == 0
            dy = self.layers[i].backward(self, dy, need_dx or not last, param_grads)
        return dy

    def zero_grad(self):
        """Set every parameter gradient to 0: one memset of ``grads`` on the core's
        threads (``_core._zero``, as :meth:`buf` does)."""
        _core._zero(self.grads)

    @contextlib.contextmanager
    def frozen_activations(self):
        """Within the block, ReLU and LeakyReLU layers multiply by the gains (1 or the
        slope) of their input in the last forward instead of their current input's,
        forward and backward: the network is then affine in its input between those
        layers (exactly so without batch norm), the same piece of the piecewise-linear
        function as at the last forward's input."""
        acts = [l for l in self.layers if isinstance(l, _PiecewiseLinear)]
        for l in acts:
            l.freeze()
        self._frozen_blocks += 1   # predict takes forward, the frozen gains
        try:
            yield self
        finally:
            for l in acts:
                l._frozen = None
            self._frozen_blocks -= 1

    def copy_from(self, other):
        """Copy parameters and buffers from a network of the same spec."""
        if other.spec != self.spec:
            raise ValueError("copy_from: the two networks have different specs")
        self.params[...] = other.params
        self.buffers[...] = other.buffers
        self.weights_changed()

    def __repr__(self):
        lines = [f"Network({self.num_params:,} params, {self.macs:,} MACs/sample)"]
        for i, (l, s) in enumerate(zip(self.layers, self.shapes[1:])):
            extra = {k: v for k, v in l.spec.items() if k != "type"}
            lines.append(f"  ({i}) {l.type} {extra} -> {s}")
        return "\n".join(lines)
