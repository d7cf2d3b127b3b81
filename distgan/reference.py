"""Plain NumPy reference of every op in :mod:`distgan.ops` -- the test oracle and the readable spec.

This module plays the role of ``bottleneck/slow``: each function has the same name and
signature as its counterpart in ``distgan.ops`` (see ``notes/ops_api.md``) and states the
formula as plainly as NumPy allows, with a link to where the formula comes from. It is
slow on purpose; nothing here is used on a hot path.

Numerics: every computation runs in float64. Arrays come back in the input's float dtype
(float32 in -> float32 out, float64 in -> float64 out), so the same functions serve the
float32 comparisons against the C core and the float64 finite-difference gradient checks.
Losses return a Python float. Unlike ``distgan.ops``, float64 inputs are accepted.

Contract mirrored from the C core (``csrc/distgan.h``):

* weight layouts follow PyTorch: linear ``(OUT, IN)``, conv2d ``(OC, C, KH, KW)``,
  conv_transpose2d ``(C, OC, KH, KW)``;
* a ``*_backward`` function returns the gradients of the forward's inputs and parameters in
  the forward's argument order, each holding the true dL/d(that argument) given the upstream
  gradient ``dy``;
* ``adam_step``, ``ema_update`` and the running statistics of ``batch_norm`` update their
  arrays in place.

The RNG functions (``normal``, ``uniform``) are not mirrored: the C core's Philox stream is
specified by its counter contract, tested directly in ``tests/test_contract.py``.

Dimension letters: N = batch, C = input channels / features, OC = output channels,
H, W = input height/width, OH, OW = output height/width, KH, KW = kernel size,
SH, SW = stride, PH, PW = padding, K = number of classes, D = embedding dimension.
"""
import numpy as np

__all__ = [
    "linear", "linear_backward",
    "conv2d", "conv2d_backward",
    "conv_transpose2d", "conv_transpose2d_backward",
    "batch_norm", "batch_norm_backward",
    "relu", "relu_backward", "leaky_relu", "leaky_relu_backward",
    "tanh", "tanh_backward", "sigmoid", "sigmoid_backward",
    "embedding", "embedding_backward",
    "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward",
    "hinge_d", "hinge_d_backward", "hinge_g", "hinge_g_backward",
    "least_squares", "least_squares_backward",
    "l1_loss", "l1_loss_backward", "mse_loss", "mse_loss_backward",
    "cross_entropy", "cross_entropy_backward",
    "tempered_kl", "tempered_kl_backward",
    "adam_step", "ema_update",
]


# ----------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------

def _f64(a):
    """The array as float64 (a copy when it is not float64 already; inputs stay untouched)."""
    return np.asarray(a, dtype=np.float64)


def _dtype(*arrays):
    """Result dtype: float64 if any input is float64, else float32."""
    for a in arrays:
        if a is not None and np.asarray(a).dtype == np.float64:
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def _pair(v, name):
    """An int or an (h, w) pair, as a tuple of two ints."""
    if np.ndim(v) == 0:
        return int(v), int(v)
    if len(v) != 2:
        raise ValueError(f"{name} must be an int or a pair (h, w), got {v!r}")
    return int(v[0]), int(v[1])


def _check_shape(name, a, shape):
    if tuple(np.shape(a)) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(np.shape(a))}")


def _labels(labels, K, name="labels"):
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must be an integer array, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= K):
        raise ValueError(f"{name} must lie in [0, {K}), got range "
                         f"[{labels.min()}, {labels.max()}]")
    return labels.astype(np.int64)


def _softplus(x):
    """log(1 + exp(x)), computed without overflow."""
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    """1 / (1 + exp(-x)), computed without overflow for either sign of x."""
    return np.exp(-_softplus(-x))


def _log_softmax(x):
    """log softmax along axis 1; the row max is subtracted only for stability."""
    z = x - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# ----------------------------------------------------------------------------------------
# linear: https://pytorch.org/docs/stable/generated/torch.nn.functional.linear.html
# ----------------------------------------------------------------------------------------

def linear(x, weight, bias=None):
    """y = x @ weight^T + bias.  x (N, IN), weight (OUT, IN), bias (OUT) -> y (N, OUT)."""
    N, IN = np.shape(x)
    OUT = np.shape(weight)[0]
    _check_shape("linear: weight", weight, (OUT, IN))
    y = _f64(x) @ _f64(weight).T
    if bias is not None:
        _check_shape("linear: bias", bias, (OUT,))
        y = y + _f64(bias)
    return y.astype(_dtype(x, weight, bias))


def linear_backward(dy, x, weight):
    """Gradients of ``y = x @ weight^T + bias``.

    dx = dy @ weight, dweight = dy^T @ x, dbias = sum_n dy.  Returns (dx, dweight, dbias).
    """
    dt = _dtype(dy, x, weight)
    dy, x, w = _f64(dy), _f64(x), _f64(weight)
    _check_shape("linear_backward: dy", dy, (x.shape[0], w.shape[0]))
    dx = dy @ w
    dweight = dy.T @ x
    dbias = dy.sum(axis=0)
    return dx.astype(dt), dweight.astype(dt), dbias.astype(dt)


# ----------------------------------------------------------------------------------------
# im2col / col2im over kernel offsets (the conv kernels of dg_conv.c do the same with sgemm)
# ----------------------------------------------------------------------------------------

def _im2col(xp, KH, KW, SH, SW, OH, OW):
    """Patches of a padded input: cols[n, c, i, j, oh, ow] = xp[n, c, oh*SH + i, ow*SW + j].

    xp is (N, C, Hp, Wp) -> cols is (N, C, KH, KW, OH, OW).
    """
    N, C = xp.shape[:2]
    cols = np.empty((N, C, KH, KW, OH, OW), dtype=xp.dtype)
    for i in range(KH):
        for j in range(KW):
            cols[:, :, i, j] = xp[:, :, i:i + SH * (OH - 1) + 1:SH, j:j + SW * (OW - 1) + 1:SW]
    return cols


def _col2im(cols, Hp, Wp, SH, SW):
    """Adjoint of :func:`_im2col`: xp[n, c, oh*SH + i, ow*SW + j] += cols[n, c, i, j, oh, ow].

    cols is (N, C, KH, KW, OH, OW) -> xp is (N, C, Hp, Wp) (scatter-add over kernel offsets).
    """
    N, C, KH, KW, OH, OW = cols.shape
    xp = np.zeros((N, C, Hp, Wp), dtype=cols.dtype)
    for i in range(KH):
        for j in range(KW):
            xp[:, :, i:i + SH * (OH - 1) + 1:SH, j:j + SW * (OW - 1) + 1:SW] += cols[:, :, i, j]
    return xp


def _pad(x, PH, PW):
    return np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)))


# ----------------------------------------------------------------------------------------
# conv2d: https://pytorch.org/docs/stable/generated/torch.nn.Conv2d.html
# (cross-correlation, groups=1, dilation=1, zero padding)
# ----------------------------------------------------------------------------------------

def _conv2d_sizes(x, weight, stride, padding, fn):
    if np.ndim(x) != 4 or np.ndim(weight) != 4:
        raise ValueError(f"{fn}: x must be (N, C, H, W) and weight (OC, C, KH, KW)")
    N, C, H, W = np.shape(x)
    OC, C2, KH, KW = np.shape(weight)
    if C2 != C:
        raise ValueError(f"{fn}: weight must have shape (OC, {C}, KH, KW), got {np.shape(weight)}")
    SH, SW = _pair(stride, "stride")
    PH, PW = _pair(padding, "padding")
    if SH < 1 or SW < 1 or PH < 0 or PW < 0:
        raise ValueError(f"{fn}: stride must be >= 1 and padding >= 0")
    # output size along one axis: floor((H + 2P - K) / S) + 1
    OH = (H + 2 * PH - KH) // SH + 1
    OW = (W + 2 * PW - KW) // SW + 1
    if OH < 1 or OW < 1:
        raise ValueError(f"{fn}: kernel larger than the padded input")
    return N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """out[n, o, oh, ow] = bias[o] + sum_{c,i,j} xpad[n, c, oh*SH+i, ow*SW+j] * weight[o, c, i, j].

    x (N, C, H, W), weight (OC, C, KH, KW), bias (OC) -> out (N, OC, OH, OW) with
    OH = (H + 2*PH - KH) // SH + 1.
    """
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = _conv2d_sizes(x, weight, stride, padding,
                                                                   "conv2d")
    cols = _im2col(_pad(_f64(x), PH, PW), KH, KW, SH, SW, OH, OW)
    out = np.einsum("ncijyx,ocij->noyx", cols, _f64(weight), optimize=True)
    if bias is not None:
        _check_shape("conv2d: bias", bias, (OC,))
        out = out + _f64(bias)[None, :, None, None]
    return out.astype(_dtype(x, weight, bias))


def conv2d_backward(dy, x, weight, stride=1, padding=0):
    """Gradients of :func:`conv2d`; returns (dx, dweight, dbias).

    Differentiating ``out[n,o,oh,ow] = sum cols[n,c,i,j,oh,ow] * weight[o,c,i,j]``:
    dweight[o,c,i,j] = sum_{n,oh,ow} dy[n,o,oh,ow] * cols[n,c,i,j,oh,ow],
    dcols[n,c,i,j,oh,ow] = sum_o dy[n,o,oh,ow] * weight[o,c,i,j], scattered back (col2im)
    and cropped to the unpadded input; dbias[o] = sum_{n,oh,ow} dy[n,o,oh,ow].
    """
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = _conv2d_sizes(x, weight, stride, padding,
                                                                   "conv2d_backward")
    _check_shape("conv2d_backward: dy", dy, (N, OC, OH, OW))
    dt = _dtype(dy, x, weight)
    dy, w = _f64(dy), _f64(weight)
    cols = _im2col(_pad(_f64(x), PH, PW), KH, KW, SH, SW, OH, OW)
    dweight = np.einsum("noyx,ncijyx->ocij", dy, cols, optimize=True)
    dcols = np.einsum("noyx,ocij->ncijyx", dy, w, optimize=True)
    dx = _col2im(dcols, H + 2 * PH, W + 2 * PW, SH, SW)[:, :, PH:PH + H, PW:PW + W]
    dbias = dy.sum(axis=(0, 2, 3))
    return dx.astype(dt), dweight.astype(dt), dbias.astype(dt)


# ----------------------------------------------------------------------------------------
# conv_transpose2d: https://pytorch.org/docs/stable/generated/torch.nn.ConvTranspose2d.html
# It is the adjoint of conv2d with the same weight array: weight (C, OC, KH, KW) of the
# transpose is the weight (OC_conv, C_conv, KH, KW) of the conv it transposes.
# ----------------------------------------------------------------------------------------

def _conv_transpose2d_sizes(x, weight, stride, padding, output_padding, fn):
    if np.ndim(x) != 4 or np.ndim(weight) != 4:
        raise ValueError(f"{fn}: x must be (N, C, H, W) and weight (C, OC, KH, KW)")
    N, C, H, W = np.shape(x)
    C2, OC, KH, KW = np.shape(weight)
    if C2 != C:
        raise ValueError(f"{fn}: weight must have shape ({C}, OC, KH, KW), got {np.shape(weight)}")
    SH, SW = _pair(stride, "stride")
    PH, PW = _pair(padding, "padding")
    OPH, OPW = _pair(output_padding, "output_padding")
    if SH < 1 or SW < 1 or PH < 0 or PW < 0:
        raise ValueError(f"{fn}: stride must be >= 1 and padding >= 0")
    # PyTorch (dilation 1): 0 <= output_padding < stride
    if not (0 <= OPH < SH and 0 <= OPW < SW):
        raise ValueError(f"{fn}: output_padding must satisfy 0 <= output_padding < stride")
    # output size along one axis: (H - 1) * S - 2P + K + output_padding
    OH = (H - 1) * SH - 2 * PH + KH + OPH
    OW = (W - 1) * SW - 2 * PW + KW + OPW
    if OH < 1 or OW < 1:
        raise ValueError(f"{fn}: padding too large for the output")
    return N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """Transposed convolution (the input gradient of conv2d, applied to x).

    outpad[n, o, h*SH + i, w*SW + j] += x[n, c, h, w] * weight[c, o, i, j] summed over c, h, w,
    i, j; out = outpad[:, :, PH:PH+OH, PW:PW+OW] + bias.
    x (N, C, H, W), weight (C, OC, KH, KW), bias (OC) -> out (N, OC, OH, OW) with
    OH = (H - 1)*SH - 2*PH + KH + output_padding.
    """
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = _conv_transpose2d_sizes(
        x, weight, stride, padding, output_padding, "conv_transpose2d")
    cols = np.einsum("ncyx,coij->noijyx", _f64(x), _f64(weight), optimize=True)
    out = _col2im(cols, OH + 2 * PH, OW + 2 * PW, SH, SW)[:, :, PH:PH + OH, PW:PW + OW]
    if bias is not None:
        _check_shape("conv_transpose2d: bias", bias, (OC,))
        out = out + _f64(bias)[None, :, None, None]
    return out.astype(_dtype(x, weight, bias))


def conv_transpose2d_backward(dy, x, weight, stride=1, padding=0, output_padding=0):
    """Gradients of :func:`conv_transpose2d`; returns (dx, dweight, dbias).

    Differentiating ``outpad[n,o,h*SH+i,w*SW+j] += x[n,c,h,w] * weight[c,o,i,j]``: with
    dcols[n,o,i,j,h,w] = dypad[n,o,h*SH+i,w*SW+j] (im2col of the zero-padded dy),
    dx[n,c,h,w] = sum_{o,i,j} dcols * weight[c,o,i,j]  (that is conv2d(dy, weight)),
    dweight[c,o,i,j] = sum_{n,h,w} x[n,c,h,w] * dcols[n,o,i,j,h,w], dbias = sum dy.
    """
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = _conv_transpose2d_sizes(
        x, weight, stride, padding, output_padding, "conv_transpose2d_backward")
    _check_shape("conv_transpose2d_backward: dy", dy, (N, OC, OH, OW))
    dt = _dtype(dy, x, weight)
    dy = _f64(dy)
    dcols = _im2col(_pad(dy, PH, PW), KH, KW, SH, SW, H, W)
    dx = np.einsum("noijyx,coij->ncyx", dcols, _f64(weight), optimize=True)
    dweight = np.einsum("ncyx,noijyx->coij", _f64(x), dcols, optimize=True)
    dbias = dy.sum(axis=(0, 2, 3))
    return dx.astype(dt), dweight.astype(dt), dbias.astype(dt)


# ----------------------------------------------------------------------------------------
# batch norm: https://pytorch.org/docs/stable/generated/torch.nn.BatchNorm2d.html
# Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167 (Algorithm 1).
# Statistics per channel over (N) for (N, C) and over (N, H, W) for (N, C, H, W).
# ----------------------------------------------------------------------------------------

def _bn_view(x, fn):
    """x as float64 (N, C, HW) -- HW = 1 for a flat (N, C) batch."""
    if np.ndim(x) not in (2, 4):
        raise ValueError(f"{fn}: x must be (N, C) or (N, C, H, W), got shape {np.shape(x)}")
    N, C = np.shape(x)[:2]
    return _f64(x).reshape(N, C, -1)


def _bn_stats(x3, eps, running_mean, running_var, training, fn):
    """(mean, var) used to normalise: batch statistics (biased var) or running statistics."""
    N, C, HW = x3.shape
    if training:
        if N * HW < 2:
            raise ValueError(f"{fn}: training needs more than 1 value per channel, got {N * HW}")
        mean = x3.mean(axis=(0, 2))
        var = ((x3 - mean[None, :, None]) ** 2).mean(axis=(0, 2))  # biased (divides by N*HW)
        return mean, var
    if running_mean is None or running_var is None:
        raise ValueError(f"{fn}: training=False needs running_mean and running_var")
    _check_shape(f"{fn}: running_mean", running_mean, (C,))
    _check_shape(f"{fn}: running_var", running_var, (C,))
    return _f64(running_mean), _f64(running_var)


def batch_norm(x, weight=None, bias=None, eps=1e-5, running_mean=None, running_var=None,
               training=True, momentum=0.1):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel.

    training=True: mean/var are the batch statistics (biased variance) and, when given,
    running_mean/running_var are updated IN PLACE as PyTorch does:
    ``r = (1 - momentum) * r + momentum * stat`` with the UNBIASED variance
    ``var * m / (m - 1)``, m = N*H*W, in running_var.
    training=False: mean/var are running_mean/running_var (required).
    weight/bias of None mean ones/zeros.
    """
    x3 = _bn_view(x, "batch_norm")
    N, C, HW = x3.shape
    mean, var = _bn_stats(x3, eps, running_mean, running_var, training, "batch_norm")
    gamma = np.ones(C) if weight is None else _f64(weight)
    beta = np.zeros(C) if bias is None else _f64(bias)
    _check_shape("batch_norm: weight", gamma, (C,))
    _check_shape("batch_norm: bias", beta, (C,))
    if training:
        m = N * HW
        if running_mean is not None:
            _check_shape("batch_norm: running_mean", running_mean, (C,))
            running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * mean
        if running_var is not None:
            _check_shape("batch_norm: running_var", running_var, (C,))
            running_var[...] = (1 - momentum) * _f64(running_var) + momentum * var * m / (m - 1)
    xhat = (x3 - mean[None, :, None]) / np.sqrt(var + eps)[None, :, None]
    y = xhat * gamma[None, :, None] + beta[None, :, None]
    return y.reshape(np.shape(x)).astype(_dtype(x, weight, bias))


def batch_norm_backward(dy, x, weight=None, eps=1e-5, running_mean=None, running_var=None,
                        training=True):
    """Gradients of :func:`batch_norm`; returns (dx, dweight, dbias).

    With xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps) and g = dy * weight:
    training (mean, var depend on x):
        dx = rstd * (g - mean(g) - xhat * mean(g * xhat))     [means over N*H*W per channel]
    eval (mean, var constants): dx = g * rstd.
    dweight = sum dy * xhat, dbias = sum dy (returned even when weight is None).
    """
    x3 = _bn_view(x, "batch_norm_backward")
    N, C, HW = x3.shape
    _check_shape("batch_norm_backward: dy", dy, np.shape(x))
    dt = _dtype(dy, x, weight)
    dy3 = _f64(dy).reshape(N, C, HW)
    mean, var = _bn_stats(x3, eps, running_mean, running_var, training, "batch_norm_backward")
    gamma = np.ones(C) if weight is None else _f64(weight)
    _check_shape("batch_norm_backward: weight", gamma, (C,))
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x3 - mean[None, :, None]) * rstd[None, :, None]
    g = dy3 * gamma[None, :, None]
    if training:
        g_mean = g.mean(axis=(0, 2), keepdims=True)
        gx_mean = (g * xhat).mean(axis=(0, 2), keepdims=True)
        dx = rstd[None, :, None] * (g - g_mean - xhat * gx_mean)
    else:
        dx = g * rstd[None, :, None]
    dweight = (dy3 * xhat).sum(axis=(0, 2))
    dbias = dy3.sum(axis=(0, 2))
    return dx.reshape(np.shape(x)).astype(dt), dweight.astype(dt), dbias.astype(dt)


# ----------------------------------------------------------------------------------------
# activations: https://pytorch.org/docs/stable/nn.html#non-linear-activations-weighted-sum-nonlinearity
# ----------------------------------------------------------------------------------------

def relu(x):
    """max(x, 0)."""
    return np.maximum(_f64(x), 0.0).astype(_dtype(x))


def relu_backward(dy, x):
    """dx = dy * [x > 0]  (derivative 0 at x = 0, as PyTorch)."""
    return (_f64(dy) * (_f64(x) > 0)).astype(_dtype(dy, x))


def leaky_relu(x, negative_slope=0.2):
    """x if x > 0 else negative_slope * x  (LeakyReLU; DCGAN uses slope 0.2)."""
    x64 = _f64(x)
    return np.where(x64 > 0, x64, negative_slope * x64).astype(_dtype(x))


def leaky_relu_backward(dy, x, negative_slope=0.2):
    """dx = dy * (1 if x > 0 else negative_slope)  (slope at x = 0, as PyTorch)."""
    return (_f64(dy) * np.where(_f64(x) > 0, 1.0, negative_slope)).astype(_dtype(dy, x))


def tanh(x):
    return np.tanh(_f64(x)).astype(_dtype(x))


def tanh_backward(dy, x):
    """dx = dy * (1 - tanh(x)^2); x is the forward INPUT."""
    return (_f64(dy) * (1.0 - np.tanh(_f64(x)) ** 2)).astype(_dtype(dy, x))


def sigmoid(x):
    """1 / (1 + exp(-x))."""
    return _sigmoid(_f64(x)).astype(_dtype(x))


def sigmoid_backward(dy, x):
    """dx = dy * s * (1 - s), s = sigmoid(x); x is the forward INPUT."""
    s = _sigmoid(_f64(x))
    return (_f64(dy) * s * (1.0 - s)).astype(_dtype(dy, x))


# ----------------------------------------------------------------------------------------
# embedding: https://pytorch.org/docs/stable/generated/torch.nn.functional.embedding.html
# ----------------------------------------------------------------------------------------

def embedding(labels, weight):
    """y[n, :] = weight[labels[n], :].  labels (N,) ints in [0, K), weight (K, D) -> y (N, D)."""
    if np.ndim(weight) != 2:
        raise ValueError(f"embedding: weight must be (K, D), got shape {np.shape(weight)}")
    labels = _labels(labels, np.shape(weight)[0])
    return _f64(weight)[labels].astype(_dtype(weight))


def embedding_backward(dy, labels, weight):
    """dweight[labels[n], :] += dy[n, :] (a label seen twice receives both rows)."""
    K, D = np.shape(weight)
    labels = _labels(labels, K)
    _check_shape("embedding_backward: dy", dy, (labels.shape[0], D))
    dweight = np.zeros((K, D))
    np.add.at(dweight, labels, _f64(dy))
    return dweight.astype(_dtype(dy, weight))


# ----------------------------------------------------------------------------------------
# losses (mean reductions); backward functions take the upstream scalar dy first
# ----------------------------------------------------------------------------------------

def binary_cross_entropy_with_logits(x, target):
    """mean[softplus(x) - target * x]: the stable form of -y log s(x) - (1-y) log(1 - s(x)).

    https://pytorch.org/docs/stable/generated/torch.nn.BCEWithLogitsLoss.html
    """
    _check_shape("binary_cross_entropy_with_logits: target", target, np.shape(x))
    x, y = _f64(x), _f64(target)
    return float(np.mean(_softplus(x) - y * x))


def binary_cross_entropy_with_logits_backward(dy, x, target):
    """dx = dy * (sigmoid(x) - target) / n."""
    _check_shape("binary_cross_entropy_with_logits_backward: target", target, np.shape(x))
    x64 = _f64(x)
    return (dy * (_sigmoid(x64) - _f64(target)) / x64.size).astype(_dtype(x))


def hinge_d(real, fake):
    """Discriminator hinge loss, mean(relu(1 - real)) + mean(relu(1 + fake)).

    Lim & Ye 2017, https://arxiv.org/abs/1705.02894; Miyato et al. 2018 (SN-GAN).
    """
    real, fake = _f64(real), _f64(fake)
    return float(np.mean(np.maximum(1.0 - real, 0.0)) + np.mean(np.maximum(1.0 + fake, 0.0)))


def hinge_d_backward(dy, real, fake):
    """dreal = -dy * [1 - real > 0] / n_real, dfake = dy * [1 + fake > 0] / n_fake."""
    r, f = _f64(real), _f64(fake)
    dreal = -dy * (1.0 - r > 0) / r.size
    dfake = dy * (1.0 + f > 0) / f.size
    return dreal.astype(_dtype(real)), dfake.astype(_dtype(fake))


def hinge_g(fake):
    """Generator hinge loss, -mean(fake)."""
    return float(-np.mean(_f64(fake)))


def hinge_g_backward(dy, fake):
    """dfake = -dy / n."""
    f = _f64(fake)
    return np.full(f.shape, -dy / f.size).astype(_dtype(fake))


def least_squares(x, target):
    """LSGAN loss 0.5 * mean((x - target)^2), target a float (Mao et al. 2017,
    https://arxiv.org/abs/1611.04076)."""
    return float(0.5 * np.mean((_f64(x) - target) ** 2))


def least_squares_backward(dy, x, target):
    """dx = dy * (x - target) / n."""
    x64 = _f64(x)
    return (dy * (x64 - target) / x64.size).astype(_dtype(x))


def l1_loss(x, y):
    """mean|x - y|  (https://pytorch.org/docs/stable/generated/torch.nn.L1Loss.html)."""
    _check_shape("l1_loss: y", y, np.shape(x))
    return float(np.mean(np.abs(_f64(x) - _f64(y))))


def l1_loss_backward(dy, x, y):
    """dx = dy * sign(x - y) / n (sign(0) = 0, as PyTorch), dy_ = -dx.  Returns (dx, dy_)."""
    _check_shape("l1_loss_backward: y", y, np.shape(x))
    d = _f64(x) - _f64(y)
    dx = dy * np.sign(d) / d.size
    return dx.astype(_dtype(x)), (-dx).astype(_dtype(y))


def mse_loss(x, y):
    """mean (x - y)^2  (https://pytorch.org/docs/stable/generated/torch.nn.MSELoss.html)."""
    _check_shape("mse_loss: y", y, np.shape(x))
    return float(np.mean((_f64(x) - _f64(y)) ** 2))


def mse_loss_backward(dy, x, y):
    """dx = 2 * dy * (x - y) / n, dy_ = -dx.  Returns (dx, dy_)."""
    _check_shape("mse_loss_backward: y", y, np.shape(x))
    d = _f64(x) - _f64(y)
    dx = 2.0 * dy * d / d.size
    return dx.astype(_dtype(x)), (-dx).astype(_dtype(y))


def cross_entropy(logits, labels):
    """mean_n -log softmax(logits[n])[labels[n]].  logits (N, K), labels (N,) ints.

    https://pytorch.org/docs/stable/generated/torch.nn.CrossEntropyLoss.html
    """
    if np.ndim(logits) != 2:
        raise ValueError(f"cross_entropy: logits must be (N, K), got shape {np.shape(logits)}")
    N, K = np.shape(logits)
    labels = _labels(labels, K)
    _check_shape("cross_entropy: labels", labels, (N,))
    logp = _log_softmax(_f64(logits))
    return float(-np.mean(logp[np.arange(N), labels]))


def cross_entropy_backward(dy, logits, labels):
    """Fused softmax + NLL backward: dlogits = dy * (softmax(logits) - onehot(labels)) / N."""
    N, K = np.shape(logits)
    labels = _labels(labels, K)
    _check_shape("cross_entropy_backward: labels", labels, (N,))
    p = np.exp(_log_softmax(_f64(logits)))
    p[np.arange(N), labels] -= 1.0
    return (dy * p / N).astype(_dtype(logits))


# ----------------------------------------------------------------------------------------
# tempered KL of distillation: Hinton, Vinyals & Dean 2015, https://arxiv.org/abs/1503.02531
# The T^2 factor keeps the gradient size comparable across temperatures (section 2 there).
# ----------------------------------------------------------------------------------------

def tempered_kl(student_logits, teacher_logits, T, binary=False):
    """T^2 * KL(teacher || student) of the temperature-softened distributions, batch mean.

    binary=True (logits of any shape, N = size): p = sigmoid(t/T), q = sigmoid(s/T),
        T^2 * mean[p log(p/q) + (1-p) log((1-p)/(1-q))].
    binary=False (logits (N, K)): P = softmax(t/T), Q = softmax(s/T),
        T^2 * mean_n sum_k P log(P/Q).
    Log-probabilities are formed from the logits directly (log sigmoid(z) = -softplus(-z),
    log softmax) so saturated probabilities lose no precision.
    """
    if T <= 0:
        raise ValueError(f"tempered_kl: T must be > 0, got {T}")
    _check_shape("tempered_kl: teacher_logits", teacher_logits, np.shape(student_logits))
    s, t = _f64(student_logits) / T, _f64(teacher_logits) / T
    if binary:
        log_p, log_1mp = -_softplus(-t), -_softplus(t)      # log p, log(1 - p)
        log_q, log_1mq = -_softplus(-s), -_softplus(s)      # log q, log(1 - q)
        p = np.exp(log_p)
        kl = p * (log_p - log_q) + (1.0 - p) * (log_1mp - log_1mq)
        return float(T * T * np.mean(kl))
    if s.ndim != 2:
        raise ValueError(f"tempered_kl: logits must be (N, K) when binary=False, got {s.shape}")
    log_P, log_Q = _log_softmax(t), _log_softmax(s)
    kl = (np.exp(log_P) * (log_P - log_Q)).sum(axis=1)
    return float(T * T * np.mean(kl))


def tempered_kl_backward(dy, student_logits, teacher_logits, T, binary=False):
    """Gradient with respect to the STUDENT logits only (T^2 applied), closed form:
    dstudent = dy * T * (q - p) / N  (binary, N = size) or dy * T * (Q - P) / N (N = rows).
    """
    if T <= 0:
        raise ValueError(f"tempered_kl_backward: T must be > 0, got {T}")
    _check_shape("tempered_kl_backward: teacher_logits", teacher_logits, np.shape(student_logits))
    s, t = _f64(student_logits) / T, _f64(teacher_logits) / T
    if binary:
        ds = dy * T * (_sigmoid(s) - _sigmoid(t)) / s.size
    else:
        if s.ndim != 2:
            raise ValueError("tempered_kl_backward: logits must be (N, K) when binary=False")
        ds = dy * T * (np.exp(_log_softmax(s)) - np.exp(_log_softmax(t))) / s.shape[0]
    return ds.astype(_dtype(student_logits))


# ----------------------------------------------------------------------------------------
# optimiser and weight averaging (in place)
# ----------------------------------------------------------------------------------------

def adam_step(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0):
    """One Adam step in place, weight decay decoupled (AdamW); returns None.

    Follows torch.optim.AdamW (https://pytorch.org/docs/stable/generated/torch.optim.AdamW.html,
    Loshchilov & Hutter 2019, https://arxiv.org/abs/1711.05101; Kingma & Ba 2015):
        param *= 1 - lr * weight_decay
        m = beta1 * m + (1 - beta1) * grad
        v = beta2 * v + (1 - beta2) * grad^2
        param -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
    step >= 1 is 1-based. With weight_decay = 0 this is torch.optim.Adam.
    """
    if step < 1:
        raise ValueError(f"adam_step: step must be >= 1, got {step}")
    for name, a in (("param", param), ("m", m), ("v", v)):
        _check_shape(f"adam_step: {name}", a, np.shape(grad))
    g = _f64(grad)
    p = _f64(param) * (1.0 - lr * weight_decay)
    m_new = beta1 * _f64(m) + (1.0 - beta1) * g
    v_new = beta2 * _f64(v) + (1.0 - beta2) * g * g
    bias_correction1 = 1.0 - beta1 ** step
    bias_correction2 = 1.0 - beta2 ** step
    p -= (lr / bias_correction1) * m_new / (np.sqrt(v_new) / np.sqrt(bias_correction2) + eps)
    param[...] = p
    m[...] = m_new
    v[...] = v_new


def ema_update(ema, param, decay):
    """ema = decay * ema + (1 - decay) * param, in place; returns None."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"ema_update: decay must lie in [0, 1], got {decay}")
    _check_shape("ema_update: param", param, np.shape(ema))
    ema[...] = decay * _f64(ema) + (1.0 - decay) * _f64(param)
