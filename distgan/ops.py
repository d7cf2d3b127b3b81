"""Public NumPy API of the distgan C core, in the style of ``torch.nn.functional``.

Every function here checks its user arguments first and says what is wrong and where
(``TypeError`` for a wrong type or dtype, ``ValueError`` for a wrong shape or value, each
naming the function and the argument), allocates its results with NumPy, and makes one
call into the private extension :mod:`distgan._core` (which re-checks everything and
releases the GIL while the C code runs).

Conventions (see ``notes/ops_api.md``; :mod:`distgan.reference` has the same API in plain
NumPy and is the readable spec):

* float arrays must be ``float32`` (there is no silent cast); label arrays may be any
  integer dtype and are converted to int64. Inputs may be non-contiguous views (they are
  copied), and are never modified.
* Weight layouts follow PyTorch: linear ``(OUT, IN)``, conv2d ``(OC, C, KH, KW)``,
  conv_transpose2d ``(C, OC, KH, KW)``.
* Forward functions return new arrays. A ``*_backward`` function returns the gradients of
  the forward's inputs and parameters in the forward's argument order; it allocates them
  zeroed, because the C backward accumulates (``+=``).
* Losses are means and return a Python float; a loss backward takes the scalar upstream
  gradient ``dy`` first. The loss of an empty array is defined as 0.0.
* ``stride``, ``padding`` and ``output_padding`` are an int or an ``(h, w)`` pair.
* :func:`adam_step`, :func:`ema_update` and the running statistics of :func:`batch_norm`
  update float32, C-contiguous, writeable arrays IN PLACE.

Dimension letters: N = batch, C = input channels or features, OC = output channels,
H, W = input height/width, OH, OW = output height/width, KH, KW = kernel size,
K = number of classes, D = embedding dimension.
"""
import math
import numbers

import numpy as np

from ._blas import preload as _preload_blas

_preload_blas()
try:
    from . import _core
except ImportError as e:  # pragma: no cover - depends on how the package was built
    raise ImportError(
        "distgan's C extension distgan._core is not built in this copy of the package "
        f"({__file__}). Install with `pip install .` and run outside the source folder, "
        "or build in place with `pip install -e .` or `python setup.py build_ext --inplace`."
    ) from e

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
    "normal", "uniform",
    "set_num_threads", "get_num_threads", "blas_name",
]

_F32 = np.dtype(np.float32)
_INT_MAX = 2**31 - 1          # the core takes sizes, strides and paddings as C ints
_LONG_MAX = 2**63 - 1         # the Adam step count is a C long
_U64_END = 2**64              # RNG seeds and offsets are uint64
_F32_MAX = float(np.finfo(np.float32).max)


# ----------------------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------------------

def _float32(fn, name, a):
    """``a`` itself, after checking that it is a float32 ndarray (TypeError otherwise)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of float32, "
                        f"got {type(a).__name__}")
    if a.dtype.type is not np.float32:
        raise TypeError(f"{fn}: {name} must be float32, got {a.dtype}")
    return a


def _shape(fn, name, a, expected, layout):
    """Checks a.shape against ``expected``, where None matches any size >= 1.

    ``layout`` names the dimensions for the message, e.g. ``"(N, C, H, W)"``.
    """
    if a.ndim != len(expected):
        raise ValueError(f"{fn}: {name} must be {len(expected)}-D {layout}, "
                         f"got shape {a.shape}")
    want = tuple(a.shape[i] if e is None else e for i, e in enumerate(expected))
    if a.shape != want:
        raise ValueError(f"{fn}: {name} {layout} has shape {a.shape}, expected {want}")
    if 0 in a.shape:
        raise ValueError(f"{fn}: {name} {layout} has shape {a.shape}, "
                         "every size must be >= 1")


def _array(fn, name, a, expected, layout):
    """A float32 array of the given shape (see :func:`_shape`)."""
    _float32(fn, name, a)
    _shape(fn, name, a, expected, layout)
    return a


def _same_shape(fn, name, a, ref_name, ref):
    """A float32 array with exactly the shape of ``ref``."""
    _float32(fn, name, a)
    if a.shape != ref.shape:
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected {ref.shape} "
                         f"(the shape of {ref_name})")
    return a


def _inplace(fn, name, a, shape):
    """An array updated in place: float32 in native byte order, C-contiguous, writeable.

    A copy would silently drop the update, so a wrong layout raises instead.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of float32, "
                        f"got {type(a).__name__}")
    if a.dtype != _F32:
        raise TypeError(f"{fn}: {name} must be float32 (native byte order), got {a.dtype}")
    if a.shape != tuple(shape):
        raise ValueError(f"{fn}: {name} has shape {a.shape}, expected {tuple(shape)}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{fn}: {name} must be C-contiguous: it is updated in place")
    if not a.flags.writeable:
        raise ValueError(f"{fn}: {name} must be writeable: it is updated in place")
    return a


def _labels(fn, name, labels, K, N=None):
    """Integer labels (N,) in [0, K), as an int64 array."""
    if not isinstance(labels, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy.ndarray of integers, "
                        f"got {type(labels).__name__}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{fn}: {name} must be an integer array, got {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"{fn}: {name} must be 1-D (N,), got shape {labels.shape}")
    if N is not None and labels.shape[0] != N:
        raise ValueError(f"{fn}: {name} has shape {labels.shape}, expected ({N},)")
    if labels.size:
        bad = np.flatnonzero((labels < 0) | (labels >= K))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{fn}: {name} must lie in [0, {K}), got {labels[i]} at index {i}")
    return labels.astype(np.int64, copy=False)


def _is_bool(v):
    return isinstance(v, (bool, np.bool_))


def _real(fn, name, v):
    """A real number (Python or NumPy scalar, not bool) as a Python float."""
    if _is_bool(v) or not isinstance(v, numbers.Real):
        raise TypeError(f"{fn}: {name} must be a real number, got {type(v).__name__}")
    return float(v)


def _real_in(fn, name, v, lo, hi, hi_open=False, what=None):
    """A finite real number in [lo, hi] (or [lo, hi) with hi_open)."""
    v = _real(fn, name, v)
    ok = math.isfinite(v) and lo <= v and (v < hi if hi_open else v <= hi)
    if not ok:
        rng = what or f"in [{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{fn}: {name} must be {rng}, got {v}")
    return v


def _positive(fn, name, v):
    """A finite real number > 0 that stays > 0 as a float32."""
    v = _real(fn, name, v)
    if not (math.isfinite(v) and 0.0 < v <= _F32_MAX and np.float32(v) > 0.0):
        raise ValueError(f"{fn}: {name} must be finite and > 0 (as a float32), got {v}")
    return v


def _int(fn, name, v, lo, hi=_INT_MAX):
    """An integer (Python or NumPy, not bool) in [lo, hi]."""
    if _is_bool(v) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__}")
    v = int(v)
    if not lo <= v <= hi:
        raise ValueError(f"{fn}: {name} must be in [{lo}, {hi}], got {v}")
    return v


def _pair(fn, name, v, lo):
    """An int or an (h, w) pair of ints, each in [lo, 2**31 - 1], as a tuple."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or a pair (h, w), got {v!r}")
        return _int(fn, name, v[0], lo), _int(fn, name, v[1], lo)
    v = _int(fn, name, v, lo)
    return v, v


def _dloss(fn, dy):
    """The scalar upstream gradient of a loss."""
    return _real(fn, "dy", dy)


def _conv_size(fn, size, kernel, stride, padding):
    """conv2d output size along one axis: (size + 2*padding - kernel) // stride + 1."""
    extent = size + 2 * padding
    if extent < kernel:
        raise ValueError(f"{fn}: kernel size {kernel} is larger than the padded input "
                         f"size {extent} ({size} + 2*{padding})")
    return (extent - kernel) // stride + 1


def _conv_t_size(fn, size, kernel, stride, padding, output_padding):
    """conv_transpose2d output size: (size - 1)*stride - 2*padding + kernel + output_padding."""
    out = (size - 1) * stride - 2 * padding + kernel + output_padding
    if out < 1:
        raise ValueError(f"{fn}: the output size would be {out} = ({size} - 1)*{stride} "
                         f"- 2*{padding} + {kernel} + {output_padding}; reduce the padding")
    return out


def _zeros(shape):
    return np.zeros(shape, dtype=np.float32)


def _workspace(fn, size_fn, geometry):
    """The scratch buffer of a conv op. The size call is made before any other allocation:
    the binding checks there that no size the C code holds in an int would overflow."""
    try:
        size = size_fn(*geometry)
    except ValueError as e:
        raise ValueError(f"{fn}: {e}") from e
    return np.empty(size, dtype=np.float32)


# ----------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------

def _linear_args(fn, x, weight):
    _array(fn, "x", x, (None, None), "(N, IN)")
    _array(fn, "weight", weight, (None, x.shape[1]), "(OUT, IN)")


def linear(x, weight, bias=None):
    """Fully connected layer, ``y = x @ weight.T + bias`` (as ``torch.nn.functional.linear``).

    Parameters
    ----------
    x : ndarray of float32, shape (N, IN)
        Input batch.
    weight : ndarray of float32, shape (OUT, IN)
        Weight in PyTorch's layout.
    bias : ndarray of float32, shape (OUT,), optional
        Added to every row; None means no bias.

    Returns
    -------
    y : ndarray of float32, shape (N, OUT)
    """
    fn = "linear"
    _linear_args(fn, x, weight)
    if bias is not None:
        _array(fn, "bias", bias, (weight.shape[0],), "(OUT,)")
    y = np.empty((x.shape[0], weight.shape[0]), dtype=np.float32)
    _core._linear_forward(y, x, weight, bias)
    return y


def linear_backward(dy, x, weight):
    """Gradients of :func:`linear`.

    Parameters
    ----------
    dy : ndarray of float32, shape (N, OUT)
        Gradient of the loss with respect to the output ``y``.
    x : ndarray of float32, shape (N, IN)
        The forward's input.
    weight : ndarray of float32, shape (OUT, IN)
        The forward's weight.

    Returns
    -------
    dx : ndarray of float32, shape (N, IN)
        ``dy @ weight``.
    dweight : ndarray of float32, shape (OUT, IN)
        ``dy.T @ x``.
    dbias : ndarray of float32, shape (OUT,)
        ``dy.sum(axis=0)`` (returned whether or not the forward had a bias).
    """
    fn = "linear_backward"
    _linear_args(fn, x, weight)
    _array(fn, "dy", dy, (x.shape[0], weight.shape[0]), "(N, OUT)")
    dx, dweight, dbias = _zeros(x.shape), _zeros(weight.shape), _zeros(weight.shape[0])
    _core._linear_backward(dx, dweight, dbias, dy, x, weight)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------------------
# convolution and transposed convolution
# ----------------------------------------------------------------------------------------

def _conv2d_geometry(fn, x, weight, stride, padding):
    """(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) of a conv2d, after the checks."""
    _array(fn, "x", x, (None,) * 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    _array(fn, "weight", weight, (None, C, None, None), "(OC, C, KH, KW)")
    OC, _, KH, KW = weight.shape
    SH, SW = _pair(fn, "stride", stride, 1)
    PH, PW = _pair(fn, "padding", padding, 0)
    OH = _conv_size(fn, H, KH, SH, PH)
    OW = _conv_size(fn, W, KW, SW, PW)
    return N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    groups = 1 and dilation = 1; zero padding.

    Parameters
    ----------
    x : ndarray of float32, shape (N, C, H, W)
        Input batch.
    weight : ndarray of float32, shape (OC, C, KH, KW)
        Filters.
    bias : ndarray of float32, shape (OC,), optional
        Per output channel; None means no bias.
    stride : int or (int, int), default 1
        Step of the window, >= 1.
    padding : int or (int, int), default 0
        Zeros added on both sides of each spatial axis, >= 0.

    Returns
    -------
    y : ndarray of float32, shape (N, OC, OH, OW)
        ``OH = (H + 2*padding - KH) // stride + 1``, likewise ``OW``.
    """
    fn = "conv2d"
    g = _conv2d_geometry(fn, x, weight, stride, padding)
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = g
    if bias is not None:
        _array(fn, "bias", bias, (OC,), "(OC,)")
    workspace = _workspace(fn, _core._conv2d_workspace_size, g)
    y = np.empty((N, OC, OH, OW), dtype=np.float32)
    _core._conv2d_forward(y, workspace, x, weight, bias, SH, SW, PH, PW)
    return y


def conv2d_backward(dy, x, weight, stride=1, padding=0):
    """Gradients of :func:`conv2d`.

    Parameters
    ----------
    dy : ndarray of float32, shape (N, OC, OH, OW)
        Gradient of the loss with respect to the output.
    x : ndarray of float32, shape (N, C, H, W)
        The forward's input.
    weight : ndarray of float32, shape (OC, C, KH, KW)
        The forward's filters.
    stride, padding : int or (int, int)
        As in the forward.

    Returns
    -------
    dx : ndarray of float32, shape (N, C, H, W)
    dweight : ndarray of float32, shape (OC, C, KH, KW)
    dbias : ndarray of float32, shape (OC,)
        Returned whether or not the forward had a bias.
    """
    fn = "conv2d_backward"
    g = _conv2d_geometry(fn, x, weight, stride, padding)
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = g
    _array(fn, "dy", dy, (N, OC, OH, OW), "(N, OC, OH, OW)")
    workspace = _workspace(fn, _core._conv2d_workspace_size, g)
    dx, dweight, dbias = _zeros(x.shape), _zeros(weight.shape), _zeros(OC)
    _core._conv2d_backward(dx, dweight, dbias, workspace, dy, x, weight, SH, SW, PH, PW)
    return dx, dweight, dbias


def _conv_t_geometry(fn, x, weight, stride, padding, output_padding):
    """(N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW) of a conv_transpose2d."""
    _array(fn, "x", x, (None,) * 4, "(N, C, H, W)")
    N, C, H, W = x.shape
    _array(fn, "weight", weight, (C, None, None, None), "(C, OC, KH, KW)")
    _, OC, KH, KW = weight.shape
    SH, SW = _pair(fn, "stride", stride, 1)
    PH, PW = _pair(fn, "padding", padding, 0)
    OPH, OPW = _pair(fn, "output_padding", output_padding, 0)
    if OPH >= SH or OPW >= SW:
        raise ValueError(f"{fn}: output_padding must be smaller than stride, got "
                         f"output_padding ({OPH}, {OPW}) with stride ({SH}, {SW})")
    OH = _conv_t_size(fn, H, KH, SH, PH, OPH)
    OW = _conv_t_size(fn, W, KW, SW, PW, OPW)
    return N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint of :func:`conv2d` with the same weight tensor, plus a bias; groups = 1
    and dilation = 1.

    Parameters
    ----------
    x : ndarray of float32, shape (N, C, H, W)
        Input batch.
    weight : ndarray of float32, shape (C, OC, KH, KW)
        Filters in PyTorch's conv-transpose layout.
    bias : ndarray of float32, shape (OC,), optional
        Per output channel; None means no bias.
    stride : int or (int, int), default 1
        >= 1.
    padding : int or (int, int), default 0
        Removed from both sides of the output, >= 0.
    output_padding : int or (int, int), default 0
        Added to one side of the output, ``0 <= output_padding < stride``.

    Returns
    -------
    y : ndarray of float32, shape (N, OC, OH, OW)
        ``OH = (H - 1)*stride - 2*padding + KH + output_padding``, likewise ``OW``.
    """
    fn = "conv_transpose2d"
    g = _conv_t_geometry(fn, x, weight, stride, padding, output_padding)
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = g
    if bias is not None:
        _array(fn, "bias", bias, (OC,), "(OC,)")
    workspace = _workspace(fn, _core._conv_transpose2d_workspace_size, g)
    y = np.empty((N, OC, OH, OW), dtype=np.float32)
    _core._conv_transpose2d_forward(y, workspace, x, weight, bias, SH, SW, PH, PW)
    return y


def conv_transpose2d_backward(dy, x, weight, stride=1, padding=0, output_padding=0):
    """Gradients of :func:`conv_transpose2d`.

    Parameters
    ----------
    dy : ndarray of float32, shape (N, OC, OH, OW)
        Gradient of the loss with respect to the output.
    x : ndarray of float32, shape (N, C, H, W)
        The forward's input.
    weight : ndarray of float32, shape (C, OC, KH, KW)
        The forward's filters.
    stride, padding, output_padding : int or (int, int)
        As in the forward.

    Returns
    -------
    dx : ndarray of float32, shape (N, C, H, W)
    dweight : ndarray of float32, shape (C, OC, KH, KW)
    dbias : ndarray of float32, shape (OC,)
        Returned whether or not the forward had a bias.
    """
    fn = "conv_transpose2d_backward"
    g = _conv_t_geometry(fn, x, weight, stride, padding, output_padding)
    N, C, H, W, OC, KH, KW, SH, SW, PH, PW, OH, OW = g
    _array(fn, "dy", dy, (N, OC, OH, OW), "(N, OC, OH, OW)")
    workspace = _workspace(fn, _core._conv_transpose2d_workspace_size, g)
    dx, dweight, dbias = _zeros(x.shape), _zeros(weight.shape), _zeros(OC)
    _core._conv_transpose2d_backward(dx, dweight, dbias, workspace, dy, x, weight,
                                     SH, SW, PH, PW)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------------------
# batch normalisation
# ----------------------------------------------------------------------------------------

def _bn_args(fn, x, weight, eps):
    """Checks x (N, C) or (N, C, H, W), weight (C,) or None and eps; returns C."""
    _float32(fn, "x", x)
    if x.ndim not in (2, 4):
        raise ValueError(f"{fn}: x must be 2-D (N, C) or 4-D (N, C, H, W), "
                         f"got shape {x.shape}")
    _shape(fn, "x", x, (None,) * x.ndim, "(N, C)" if x.ndim == 2 else "(N, C, H, W)")
    C = x.shape[1]
    if weight is not None:
        _array(fn, "weight", weight, (C,), "(C,)")
    _positive(fn, "eps", eps)
    return C


def _bn_running_inputs(fn, C, running_mean, running_var):
    """Eval mode: the running statistics are required float32 (C,) inputs."""
    if running_mean is None or running_var is None:
        raise ValueError(f"{fn}: training=False needs running_mean and running_var")
    _array(fn, "running_mean", running_mean, (C,), "(C,)")
    _array(fn, "running_var", running_var, (C,), "(C,)")


def _bn_values_per_channel(fn, x):
    m = x.size // x.shape[1]
    if m < 2:
        raise ValueError(f"{fn}: training needs more than 1 value per channel, got input "
                         f"of shape {x.shape}")


def batch_norm(x, weight=None, bias=None, eps=1e-5, running_mean=None, running_var=None,
               training=True, momentum=0.1):
    """Batch normalisation, as ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per channel, with the statistics
    taken over N for (N, C) and over (N, H, W) for (N, C, H, W).

    Parameters
    ----------
    x : ndarray of float32, shape (N, C) or (N, C, H, W)
        Input batch.
    weight, bias : ndarray of float32, shape (C,), optional
        Affine parameters; None means ones / zeros.
    eps : float, default 1e-5
        Added to the variance, > 0.
    running_mean, running_var : ndarray of float32, shape (C,), optional
        Training: when given, updated IN PLACE as PyTorch does,
        ``r = (1 - momentum) * r + momentum * batch_stat`` with the unbiased variance in
        ``running_var`` (they must then be C-contiguous and writeable).
        Eval: required, they are the statistics used.
    training : bool, default True
        Normalise with the batch statistics (True) or the running ones (False).
    momentum : float, default 0.1
        In [0, 1]; used in training only.

    Returns
    -------
    y : ndarray of float32, shape of x

    Raises
    ------
    ValueError
        Also when training with a single value per channel (N*H*W == 1), as PyTorch.
    """
    fn = "batch_norm"
    C = _bn_args(fn, x, weight, eps)
    if bias is not None:
        _array(fn, "bias", bias, (C,), "(C,)")
    y = np.empty(x.shape, dtype=np.float32)
    if training:
        momentum = _real_in(fn, "momentum", momentum, 0.0, 1.0)
        for name, r in (("running_mean", running_mean), ("running_var", running_var)):
            if r is not None:
                _inplace(fn, name, r, (C,))
        _bn_values_per_channel(fn, x)
        mean, rstd = np.empty(C, dtype=np.float32), np.empty(C, dtype=np.float32)
        _core._batchnorm_forward(y, mean, rstd, running_mean, running_var, x, weight, bias,
                                 eps, momentum)
    else:
        _bn_running_inputs(fn, C, running_mean, running_var)
        _core._batchnorm_forward_eval(y, x, running_mean, running_var, weight, bias, eps)
    return y


def batch_norm_backward(dy, x, weight=None, eps=1e-5, running_mean=None, running_var=None,
                        training=True):
    """Gradients of :func:`batch_norm`.

    Parameters
    ----------
    dy : ndarray of float32, shape of x
        Gradient of the loss with respect to the output.
    x : ndarray of float32, shape (N, C) or (N, C, H, W)
        The forward's input.
    weight : ndarray of float32, shape (C,), optional
        The forward's scale; None means ones.
    eps : float, default 1e-5
        As in the forward.
    running_mean, running_var : ndarray of float32, shape (C,), optional
        Eval mode: required (the statistics are constants there). Training mode: ignored
        and left untouched (the batch statistics are recomputed from x).
    training : bool, default True
        Which forward to differentiate.

    Returns
    -------
    dx : ndarray of float32, shape of x
    dweight : ndarray of float32, shape (C,)
        Gradient of the scale (also when weight is None: a scale of ones).
    dbias : ndarray of float32, shape (C,)
        Gradient of the shift (also when the forward had no bias).
    """
    fn = "batch_norm_backward"
    C = _bn_args(fn, x, weight, eps)
    _same_shape(fn, "dy", dy, "x", x)
    dx, dweight, dbias = _zeros(x.shape), _zeros(C), _zeros(C)
    if training:
        _bn_values_per_channel(fn, x)
        # the backward needs the forward's batch statistics: recompute them
        mean, rstd = np.empty(C, dtype=np.float32), np.empty(C, dtype=np.float32)
        _core._batchnorm_forward(np.empty(x.shape, dtype=np.float32), mean, rstd, None, None,
                                 x, weight, None, eps, 0.0)
        _core._batchnorm_backward(dx, dweight, dbias, dy, x, mean, rstd, weight)
    else:
        _bn_running_inputs(fn, C, running_mean, running_var)
        _core._batchnorm_backward_eval(dx, dweight, dbias, dy, x, running_mean, running_var,
                                       weight, eps)
    return dx, dweight, dbias


# ----------------------------------------------------------------------------------------
# activations (elementwise, any shape)
# ----------------------------------------------------------------------------------------

def _unary(fn, core_fn, x, *scalars):
    _float32(fn, "x", x)
    y = np.empty(x.shape, dtype=np.float32)
    core_fn(y, x, *scalars)
    return y


def _unary_backward(fn, core_fn, dy, x, *scalars):
    _float32(fn, "x", x)
    _same_shape(fn, "dy", dy, "x", x)
    dx = _zeros(x.shape)
    core_fn(dx, dy, x, *scalars)
    return dx


def relu(x):
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : ndarray of float32, any shape

    Returns
    -------
    y : ndarray of float32, shape of x
    """
    return _unary("relu", _core._relu_forward, x)


def relu_backward(dy, x):
    """Gradient of :func:`relu`: ``dy`` where ``x > 0``, else 0 (PyTorch's relu'(0) = 0).

    Parameters
    ----------
    dy : ndarray of float32, shape of x
        Gradient of the loss with respect to the output.
    x : ndarray of float32
        The forward's input.

    Returns
    -------
    dx : ndarray of float32, shape of x
    """
    return _unary_backward("relu_backward", _core._relu_backward, dy, x)


def leaky_relu(x, negative_slope=0.2):
    """Leaky ReLU, ``x if x > 0 else negative_slope * x``.

    Parameters
    ----------
    x : ndarray of float32, any shape
    negative_slope : float, default 0.2
        Slope on the negative side.

    Returns
    -------
    y : ndarray of float32, shape of x
    """
    fn = "leaky_relu"
    return _unary(fn, _core._leaky_relu_forward, x, _real(fn, "negative_slope", negative_slope))


def leaky_relu_backward(dy, x, negative_slope=0.2):
    """Gradient of :func:`leaky_relu`: ``dy`` where ``x > 0``, else ``negative_slope * dy``.

    Parameters
    ----------
    dy : ndarray of float32, shape of x
        Gradient of the loss with respect to the output.
    x : ndarray of float32
        The forward's input.
    negative_slope : float, default 0.2
        As in the forward.

    Returns
    -------
    dx : ndarray of float32, shape of x
    """
    fn = "leaky_relu_backward"
    return _unary_backward(fn, _core._leaky_relu_backward, dy, x,
                           _real(fn, "negative_slope", negative_slope))


def tanh(x):
    """Hyperbolic tangent.

    Parameters
    ----------
    x : ndarray of float32, any shape

    Returns
    -------
    y : ndarray of float32, shape of x
    """
    return _unary("tanh", _core._tanh_forward, x)


def _from_output(fn, forward, backward, dy, x):
    """Backward of an activation whose C backward takes the forward's OUTPUT."""
    _float32(fn, "x", x)
    _same_shape(fn, "dy", dy, "x", x)
    y = np.empty(x.shape, dtype=np.float32)
    forward(y, x)
    dx = _zeros(x.shape)
    backward(dx, dy, y)
    return dx


def tanh_backward(dy, x):
    """Gradient of :func:`tanh`, ``dy * (1 - tanh(x)**2)``.

    Parameters
    ----------
    dy : ndarray of float32, shape of x
        Gradient of the loss with respect to the output.
    x : ndarray of float32
        The forward's INPUT (the output is recomputed).

    Returns
    -------
    dx : ndarray of float32, shape of x
    """
    return _from_output("tanh_backward", _core._tanh_forward, _core._tanh_backward, dy, x)


def sigmoid(x):
    """Logistic sigmoid, ``1 / (1 + exp(-x))``, evaluated without overflow.

    Parameters
    ----------
    x : ndarray of float32, any shape

    Returns
    -------
    y : ndarray of float32, shape of x
    """
    return _unary("sigmoid", _core._sigmoid_forward, x)


def sigmoid_backward(dy, x):
    """Gradient of :func:`sigmoid`, ``dy * s * (1 - s)`` with ``s = sigmoid(x)``.

    Parameters
    ----------
    dy : ndarray of float32, shape of x
        Gradient of the loss with respect to the output.
    x : ndarray of float32
        The forward's INPUT (the output is recomputed).

    Returns
    -------
    dx : ndarray of float32, shape of x
    """
    return _from_output("sigmoid_backward", _core._sigmoid_forward, _core._sigmoid_backward,
                        dy, x)


# ----------------------------------------------------------------------------------------
# label embedding
# ----------------------------------------------------------------------------------------

def embedding(labels, weight):
    """Label embedding lookup, ``y[n] = weight[labels[n]]`` (as ``torch.nn.Embedding``).

    Parameters
    ----------
    labels : ndarray of int, shape (N,)
        Class labels in [0, K), any integer dtype.
    weight : ndarray of float32, shape (K, D)
        The table.

    Returns
    -------
    y : ndarray of float32, shape (N, D)
    """
    fn = "embedding"
    _array(fn, "weight", weight, (None, None), "(K, D)")
    labels = _labels(fn, "labels", labels, weight.shape[0])
    y = np.empty((labels.shape[0], weight.shape[1]), dtype=np.float32)
    _core._embedding_forward(y, labels, weight)
    return y


def embedding_backward(dy, labels, weight):
    """Gradient of :func:`embedding` with respect to the table.

    Parameters
    ----------
    dy : ndarray of float32, shape (N, D)
        Gradient of the loss with respect to the output.
    labels : ndarray of int, shape (N,)
        The forward's labels; a label seen twice receives both rows.
    weight : ndarray of float32, shape (K, D)
        The forward's table (only its shape is used).

    Returns
    -------
    dweight : ndarray of float32, shape (K, D)
    """
    fn = "embedding_backward"
    _array(fn, "weight", weight, (None, None), "(K, D)")
    K, D = weight.shape
    labels = _labels(fn, "labels", labels, K)
    _float32(fn, "dy", dy)
    if dy.shape != (labels.shape[0], D):
        raise ValueError(f"{fn}: dy (N, D) has shape {dy.shape}, "
                         f"expected {(labels.shape[0], D)}")
    dweight = _zeros((K, D))
    _core._embedding_backward(dweight, dy, labels)
    return dweight


# ----------------------------------------------------------------------------------------
# losses (means; a loss backward takes the scalar upstream gradient dy first)
# ----------------------------------------------------------------------------------------

def binary_cross_entropy_with_logits(x, target):
    """Mean binary cross-entropy of logits, ``mean(softplus(x) - target * x)``.

    The stable form of ``-t log sigmoid(x) - (1 - t) log(1 - sigmoid(x))``, as
    ``torch.nn.functional.binary_cross_entropy_with_logits``.

    Parameters
    ----------
    x : ndarray of float32, any shape
        Logits.
    target : ndarray of float32, shape of x
        Targets in [0, 1] (hard or soft labels).

    Returns
    -------
    loss : float
    """
    fn = "binary_cross_entropy_with_logits"
    _float32(fn, "x", x)
    _same_shape(fn, "target", target, "x", x)
    return _core._bce_logits_forward(x, target)


def binary_cross_entropy_with_logits_backward(dy, x, target):
    """Gradient of :func:`binary_cross_entropy_with_logits`, ``dy * (sigmoid(x) - target) / n``.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    x, target : ndarray of float32
        The forward's arguments.

    Returns
    -------
    dx : ndarray of float32, shape of x
    """
    fn = "binary_cross_entropy_with_logits_backward"
    dy = _dloss(fn, dy)
    _float32(fn, "x", x)
    _same_shape(fn, "target", target, "x", x)
    dx = _zeros(x.shape)
    _core._bce_logits_backward(dx, x, target, dy)
    return dx


def hinge_d(real, fake):
    """Discriminator hinge loss, ``mean(relu(1 - real)) + mean(relu(1 + fake))``.

    Parameters
    ----------
    real : ndarray of float32, any shape
        Critic outputs on real samples.
    fake : ndarray of float32, any shape
        Critic outputs on generated samples.

    Returns
    -------
    loss : float
    """
    fn = "hinge_d"
    _float32(fn, "real", real)
    _float32(fn, "fake", fake)
    return _core._hinge_forward(real, 1.0) + _core._hinge_forward(fake, -1.0)


def hinge_d_backward(dy, real, fake):
    """Gradients of :func:`hinge_d`.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    real, fake : ndarray of float32
        The forward's arguments.

    Returns
    -------
    dreal : ndarray of float32, shape of real
        ``-dy / real.size`` where ``1 - real > 0``, else 0.
    dfake : ndarray of float32, shape of fake
        ``dy / fake.size`` where ``1 + fake > 0``, else 0.
    """
    fn = "hinge_d_backward"
    dy = _dloss(fn, dy)
    _float32(fn, "real", real)
    _float32(fn, "fake", fake)
    dreal, dfake = _zeros(real.shape), _zeros(fake.shape)
    _core._hinge_backward(dreal, real, 1.0, dy)
    _core._hinge_backward(dfake, fake, -1.0, dy)
    return dreal, dfake


def hinge_g(fake):
    """Generator hinge loss, ``-mean(fake)``.

    Parameters
    ----------
    fake : ndarray of float32, any shape
        Critic outputs on generated samples.

    Returns
    -------
    loss : float
    """
    fn = "hinge_g"
    _float32(fn, "fake", fake)
    return _core._hinge_gen_forward(fake)


def hinge_g_backward(dy, fake):
    """Gradient of :func:`hinge_g`, ``-dy / fake.size`` everywhere.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    fake : ndarray of float32
        The forward's argument (only its shape is used).

    Returns
    -------
    dfake : ndarray of float32, shape of fake
    """
    fn = "hinge_g_backward"
    dy = _dloss(fn, dy)
    _float32(fn, "fake", fake)
    dfake = _zeros(fake.shape)
    _core._hinge_gen_backward(dfake, dy)
    return dfake


def least_squares(x, target):
    """Least-squares GAN loss, ``0.5 * mean((x - target)**2)`` (Mao et al. 2017).

    Parameters
    ----------
    x : ndarray of float32, any shape
        Critic outputs.
    target : float
        The label the outputs are pulled towards (a scalar, not an array).

    Returns
    -------
    loss : float
    """
    fn = "least_squares"
    _float32(fn, "x", x)
    return _core._least_squares_forward(x, _real(fn, "target", target))


def least_squares_backward(dy, x, target):
    """Gradient of :func:`least_squares`, ``dy * (x - target) / n``.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    x : ndarray of float32
        The forward's input.
    target : float
        As in the forward.

    Returns
    -------
    dx : ndarray of float32, shape of x
    """
    fn = "least_squares_backward"
    dy = _dloss(fn, dy)
    _float32(fn, "x", x)
    target = _real(fn, "target", target)
    dx = _zeros(x.shape)
    _core._least_squares_backward(dx, x, target, dy)
    return dx


def _pair_loss_args(fn, x, y):
    _float32(fn, "x", x)
    _same_shape(fn, "y", y, "x", x)


def l1_loss(x, y):
    """Mean absolute error, ``mean(|x - y|)``.

    Parameters
    ----------
    x, y : ndarray of float32, same shape

    Returns
    -------
    loss : float
    """
    _pair_loss_args("l1_loss", x, y)
    return _core._l1_forward(x, y)


def l1_loss_backward(dy, x, y):
    """Gradients of :func:`l1_loss` (``sign(0) = 0``, as PyTorch).

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    x, y : ndarray of float32, same shape
        The forward's arguments.

    Returns
    -------
    dx : ndarray of float32
        ``dy * sign(x - y) / n``.
    dy_ : ndarray of float32
        ``-dx``, the gradient with respect to ``y``.
    """
    fn = "l1_loss_backward"
    dy = _dloss(fn, dy)
    _pair_loss_args(fn, x, y)
    dx, dy_ = _zeros(x.shape), _zeros(x.shape)
    _core._l1_backward(dx, dy_, x, y, dy)
    return dx, dy_


def mse_loss(x, y):
    """Mean squared error, ``mean((x - y)**2)``.

    Parameters
    ----------
    x, y : ndarray of float32, same shape

    Returns
    -------
    loss : float
    """
    _pair_loss_args("mse_loss", x, y)
    return _core._mse_forward(x, y)


def mse_loss_backward(dy, x, y):
    """Gradients of :func:`mse_loss`.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    x, y : ndarray of float32, same shape
        The forward's arguments.

    Returns
    -------
    dx : ndarray of float32
        ``2 * dy * (x - y) / n``.
    dy_ : ndarray of float32
        ``-dx``, the gradient with respect to ``y``.
    """
    fn = "mse_loss_backward"
    dy = _dloss(fn, dy)
    _pair_loss_args(fn, x, y)
    dx, dy_ = _zeros(x.shape), _zeros(x.shape)
    _core._mse_backward(dx, dy_, x, y, dy)
    return dx, dy_


def _ce_args(fn, logits, labels):
    _float32(fn, "logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"{fn}: logits must be 2-D (N, K), got shape {logits.shape}")
    if logits.shape[1] < 1:
        raise ValueError(f"{fn}: logits (N, K) has shape {logits.shape}, K must be >= 1")
    return _labels(fn, "labels", labels, logits.shape[1], N=logits.shape[0])


def cross_entropy(logits, labels):
    """Softmax cross-entropy, ``mean_n(-log softmax(logits[n])[labels[n]])``.

    As ``torch.nn.functional.cross_entropy`` with class-index targets.

    Parameters
    ----------
    logits : ndarray of float32, shape (N, K)
    labels : ndarray of int, shape (N,)
        Class indices in [0, K), any integer dtype.

    Returns
    -------
    loss : float
    """
    labels = _ce_args("cross_entropy", logits, labels)
    return _core._cross_entropy_forward(logits, labels)


def cross_entropy_backward(dy, logits, labels):
    """Gradient of :func:`cross_entropy`, ``dy * (softmax(logits) - onehot(labels)) / N``.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    logits : ndarray of float32, shape (N, K)
    labels : ndarray of int, shape (N,)

    Returns
    -------
    dlogits : ndarray of float32, shape (N, K)
    """
    fn = "cross_entropy_backward"
    dy = _dloss(fn, dy)
    labels = _ce_args(fn, logits, labels)
    dlogits = _zeros(logits.shape)
    _core._cross_entropy_backward(dlogits, logits, labels, dy)
    return dlogits


def _kl_args(fn, student_logits, teacher_logits, T, binary):
    _float32(fn, "student_logits", student_logits)
    _same_shape(fn, "teacher_logits", teacher_logits, "student_logits", student_logits)
    T = _positive(fn, "T", T)
    binary = bool(binary)
    if not binary:
        if student_logits.ndim != 2:
            raise ValueError(f"{fn}: student_logits must be 2-D (N, K) when binary=False, "
                             f"got shape {student_logits.shape}")
        if student_logits.shape[1] < 1:
            raise ValueError(f"{fn}: student_logits (N, K) has shape "
                             f"{student_logits.shape}, K must be >= 1")
    return T, binary


def tempered_kl(student_logits, teacher_logits, T, binary=False):
    """Tempered distillation loss, ``T**2 * KL(teacher || student)`` (Hinton et al. 2015).

    The temperature-scaled distributions are the normalised ``sigmoid(logits / T)``
    (binary) or ``softmax(logits / T)`` (categorical) of the logits.

    Parameters
    ----------
    student_logits : ndarray of float32
        Any shape if binary (N = its size), else (N, K).
    teacher_logits : ndarray of float32, shape of student_logits
    T : float
        Temperature, finite and > 0.
    binary : bool, default False
        True: ``p = sigmoid(t/T)``, ``q = sigmoid(s/T)``,
        ``T**2 * mean[p log(p/q) + (1-p) log((1-p)/(1-q))]``.
        False: ``T**2 * mean_n KL(softmax(t_n/T) || softmax(s_n/T))``.

    Returns
    -------
    loss : float
    """
    T, binary = _kl_args("tempered_kl", student_logits, teacher_logits, T, binary)
    return _core._distill_kl_forward(student_logits, teacher_logits, T, binary)


def tempered_kl_backward(dy, student_logits, teacher_logits, T, binary=False):
    """Gradient of :func:`tempered_kl` with respect to the STUDENT logits (closed form).

    ``dy * T * (q - p) / N`` (binary) or ``dy * T * (Q - P) / N`` (categorical), the
    ``T**2`` factor included.

    Parameters
    ----------
    dy : float
        Upstream gradient of the loss.
    student_logits, teacher_logits, T, binary
        As in the forward.

    Returns
    -------
    dstudent : ndarray of float32, shape of student_logits
    """
    fn = "tempered_kl_backward"
    dy = _dloss(fn, dy)
    T, binary = _kl_args(fn, student_logits, teacher_logits, T, binary)
    ds = _zeros(student_logits.shape)
    _core._distill_kl_backward(ds, student_logits, teacher_logits, T, binary, dy)
    return ds


# ----------------------------------------------------------------------------------------
# optimiser and weight averaging (in place)
# ----------------------------------------------------------------------------------------

def adam_step(param, grad, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0):
    """One Adam step in place, with decoupled weight decay (AdamW), as ``torch.optim.AdamW``.

    ``param *= 1 - lr * weight_decay``; ``m = beta1 m + (1 - beta1) grad``;
    ``v = beta2 v + (1 - beta2) grad**2``;
    ``param -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)``.
    With ``weight_decay = 0`` it is ``torch.optim.Adam``.

    Parameters
    ----------
    param, m, v : ndarray of float32, shape of grad
        Parameters and the two moment estimates, updated IN PLACE: they must be
        C-contiguous and writeable.
    grad : ndarray of float32
        Gradient of the loss with respect to ``param``.
    step : int
        1-based count of the step being taken.
    lr : float, default 1e-3
        Learning rate, >= 0.
    beta1, beta2 : float, default 0.9, 0.999
        Moment decay rates, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, >= 0.
    weight_decay : float, default 0.0
        Decoupled decay, >= 0.

    Returns
    -------
    None
    """
    fn = "adam_step"
    _float32(fn, "grad", grad)
    for name, a in (("param", param), ("m", m), ("v", v)):
        _inplace(fn, name, a, grad.shape)
    step = _int(fn, "step", step, 1, _LONG_MAX)
    lr = _real_in(fn, "lr", lr, 0.0, math.inf, hi_open=True, what="finite and >= 0")
    beta1 = _real_in(fn, "beta1", beta1, 0.0, 1.0, hi_open=True)
    beta2 = _real_in(fn, "beta2", beta2, 0.0, 1.0, hi_open=True)
    eps = _real_in(fn, "eps", eps, 0.0, math.inf, hi_open=True, what="finite and >= 0")
    weight_decay = _real_in(fn, "weight_decay", weight_decay, 0.0, math.inf, hi_open=True,
                            what="finite and >= 0")
    _core._adam_step(param, m, v, grad, step, lr, beta1, beta2, eps, weight_decay)


def ema_update(ema, param, decay):
    """Exponential moving average in place, ``ema = decay * ema + (1 - decay) * param``.

    Parameters
    ----------
    ema : ndarray of float32
        The average, updated IN PLACE: it must be C-contiguous and writeable.
    param : ndarray of float32, shape of ema
        The current values.
    decay : float
        In [0, 1].

    Returns
    -------
    None
    """
    fn = "ema_update"
    _float32(fn, "param", param)
    _inplace(fn, "ema", ema, param.shape)
    decay = _real_in(fn, "decay", decay, 0.0, 1.0)
    _core._ema_update(ema, param, decay)


# ----------------------------------------------------------------------------------------
# counter-based random numbers (Philox4x32-10) and threads
# ----------------------------------------------------------------------------------------

def _rng_args(fn, shape, seed, offset):
    if _is_bool(shape):
        raise TypeError(f"{fn}: shape must be an int or a tuple of ints, got bool")
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fn}: shape must be an int or a tuple of ints, "
                        f"got {type(shape).__name__}")
    shape = tuple(_int(fn, "shape", s, 0, 2**63 - 1) for s in shape)
    seed = _int(fn, "seed", seed, 0, _U64_END - 1)
    offset = _int(fn, "offset", offset, 0, _U64_END - 1)
    return shape, seed, offset


def normal(shape, seed, offset=0):
    """Standard normal float32 draws from the counter-based Philox4x32-10 stream.

    Element ``i`` (in C order) depends only on ``(seed, offset + i)``, so a draw split
    into pieces, each passing its own offset, equals one draw of the whole.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the result.
    seed : int
        Stream key, in [0, 2**64).
    offset : int, default 0
        Counter of the first element, in [0, 2**64) (counters wrap modulo 2**64).

    Returns
    -------
    z : ndarray of float32, shape `shape`
    """
    shape, seed, offset = _rng_args("normal", shape, seed, offset)
    z = np.empty(shape, dtype=np.float32)
    _core._rng_normal(z, seed, offset)
    return z


def uniform(shape, seed, offset=0, low=0.0, high=1.0):
    """Uniform float32 draws in ``[low, high)`` from the Philox4x32-10 stream.

    Element ``i`` depends only on ``(seed, offset + i)``, as in :func:`normal`.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the result.
    seed : int
        Stream key, in [0, 2**64).
    offset : int, default 0
        Counter of the first element, in [0, 2**64).
    low, high : float, default 0.0, 1.0
        Finite bounds with ``float32(low) < float32(high)``.

    Returns
    -------
    u : ndarray of float32, shape `shape`
    """
    fn = "uniform"
    shape, seed, offset = _rng_args(fn, shape, seed, offset)
    low, high = _real(fn, "low", low), _real(fn, "high", high)
    if not (abs(low) <= _F32_MAX and abs(high) <= _F32_MAX
            and np.float32(low) < np.float32(high)):
        raise ValueError(f"{fn}: low and high must be finite float32 values with "
                         f"low < high, got low={low}, high={high}")
    u = np.empty(shape, dtype=np.float32)
    _core._rng_uniform(u, seed, offset, low, high)
    return u


def set_num_threads(n):
    """Set the number of threads of the BLAS pool.

    Parameters
    ----------
    n : int
        >= 1.
    """
    _core._set_num_threads(_int("set_num_threads", "n", n, 1))


def get_num_threads():
    """Number of threads of the BLAS pool (1 for the reference GEMM).

    Returns
    -------
    n : int
    """
    return _core._get_num_threads()


def blas_name():
    """Name of the BLAS the core was built with.

    Returns
    -------
    name : str
        ``"scipy-openblas"``, ``"openblas"`` or ``"reference"``.
    """
    return _core._blas_name()
