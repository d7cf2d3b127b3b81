"""The Python/C boundary: bad input raises a clear exception, never crashes or leaks.

Two layers are tested:

* ``distgan._core`` directly (csrc/dg_module.c). ``CORE_CALLS`` holds one valid keyword
  call per binding function; from it every test derives its variants, for EVERY array
  argument: a float64 array (TypeError naming the argument), a non-contiguous or read-only
  OUTPUT (ValueError: outputs are never copied), a non-contiguous INPUT (copied: same result
  as the contiguous array), and the reference counts of every array passed, unchanged after
  successful and failing calls (bottleneck ``memory_test.py``).
* ``distgan.ops``, which checks user arguments first with messages naming the function.

Calls that would write out of bounds if a check were missing (arrays whose sizes overflow a
C int, undersized buffers) run in a subprocess, so a crash fails its test instead of killing
pytest.
"""
import subprocess
import sys
import textwrap
import threading
import tracemalloc

import numpy as np
import pytest

from conftest import ROOT, load_impl

F32 = np.float32


# --------------------------------------------------------------------------------------------
# one valid call of every _core function
# --------------------------------------------------------------------------------------------

def _core_calls(core):
    """{name: (kwargs of a valid call, names of its output/gradient arguments)}."""
    rng = np.random.default_rng(7)

    def r(*shape):
        return rng.standard_normal(shape).astype(F32)

    def z(*shape):
        return np.zeros(shape, F32)

    N, C, H, W, OC, K = 2, 3, 6, 5, 4, 3
    OH, OW = (H + 2 - K) // 2 + 1, (W + 2 - K) // 2 + 1        # stride 2, padding 1
    TH, TW = (H - 1) * 2 - 2 + K + 1, (W - 1) * 2 - 2 + K + 1  # transposed, output_padding 1
    ws = z(core._conv2d_workspace_size(N, C, H, W, OC, K, K, 2, 2, 1, 1, OH, OW))
    wst = z(core._conv_transpose2d_workspace_size(N, C, H, W, OC, K, K, 2, 2, 1, 1, TH, TW))
    labels = np.array([2, 0, 1, 2, 2], dtype=np.int64)
    bn = dict(inp=r(N, C, H, W), mean=r(C), rstd=np.abs(r(C)) + 0.5, gamma=r(C), beta=r(C),
              running_mean=r(C), running_var=np.abs(r(C)) + 0.5)
    calls = {
        "_sgemm": (dict(transA=True, transB=False, alpha=1.5, A=r(4, 3), B=r(4, 5), beta=0.5,
                        C=r(3, 5)), ("C",)),
        "_sgemm_ref": (dict(transA=False, transB=True, alpha=1.0, A=r(3, 4), B=r(5, 4),
                            beta=0.0, C=z(3, 5)), ("C",)),
        "_linear_forward": (dict(out=z(N, OC), inp=r(N, C), weight=r(OC, C), bias=r(OC)),
                            ("out",)),
        "_linear_backward": (dict(dinp=z(N, C), dweight=z(OC, C), dbias=z(OC), dout=r(N, OC),
                                  inp=r(N, C), weight=r(OC, C)),
                             ("dinp", "dweight", "dbias")),
        "_conv2d_forward": (dict(out=z(N, OC, OH, OW), workspace=ws, inp=r(N, C, H, W),
                                 weight=r(OC, C, K, K), bias=r(OC), SH=2, SW=2, PH=1, PW=1),
                            ("out", "workspace")),
        "_conv2d_backward": (dict(dinp=z(N, C, H, W), dweight=z(OC, C, K, K), dbias=z(OC),
                                  workspace=ws.copy(), dout=r(N, OC, OH, OW),
                                  inp=r(N, C, H, W), weight=r(OC, C, K, K),
                                  SH=2, SW=2, PH=1, PW=1),
                             ("dinp", "dweight", "dbias", "workspace")),
        "_conv_transpose2d_forward": (dict(out=z(N, OC, TH, TW), workspace=wst,
                                           inp=r(N, C, H, W), weight=r(C, OC, K, K),
                                           bias=r(OC), SH=2, SW=2, PH=1, PW=1),
                                      ("out", "workspace")),
        "_conv_transpose2d_backward": (dict(dinp=z(N, C, H, W), dweight=z(C, OC, K, K),
                                            dbias=z(OC), workspace=wst.copy(),
                                            dout=r(N, OC, TH, TW), inp=r(N, C, H, W),
                                            weight=r(C, OC, K, K), SH=2, SW=2, PH=1, PW=1),
                                       ("dinp", "dweight", "dbias", "workspace")),
        "_batchnorm_forward": (dict(out=z(N, C, H, W), mean=z(C), rstd=z(C),
                                    running_mean=bn["running_mean"].copy(),
                                    running_var=bn["running_var"].copy(), inp=bn["inp"],
                                    gamma=bn["gamma"], beta=bn["beta"], eps=1e-5,
                                    momentum=0.1),
                               ("out", "mean", "rstd", "running_mean", "running_var")),
        "_batchnorm_forward_eval": (dict(out=z(N, C, H, W), inp=bn["inp"],
                                         running_mean=bn["running_mean"],
                                         running_var=bn["running_var"], gamma=bn["gamma"],
                                         beta=bn["beta"], eps=1e-5), ("out",)),
        "_batchnorm_backward": (dict(dinp=z(N, C, H, W), dgamma=z(C), dbeta=z(C),
                                     dout=r(N, C, H, W), inp=bn["inp"], mean=bn["mean"],
                                     rstd=bn["rstd"], gamma=bn["gamma"]),
                                ("dinp", "dgamma", "dbeta")),
        "_batchnorm_backward_eval": (dict(dinp=z(N, C, H, W), dgamma=z(C), dbeta=z(C),
                                          dout=r(N, C, H, W), inp=bn["inp"],
                                          running_mean=bn["running_mean"],
                                          running_var=bn["running_var"], gamma=bn["gamma"],
                                          eps=1e-5), ("dinp", "dgamma", "dbeta")),
        "_embedding_forward": (dict(out=z(5, 4), labels=labels, table=r(3, 4)), ("out",)),
        "_embedding_backward": (dict(dtable=z(3, 4), dout=r(5, 4), labels=labels),
                                ("dtable",)),
        "_bce_logits_forward": (dict(x=r(3, 4), y=np.abs(r(3, 4)) % 1), ()),
        "_bce_logits_backward": (dict(dx=z(3, 4), x=r(3, 4), y=np.abs(r(3, 4)) % 1,
                                      dloss=1.5), ("dx",)),
        "_hinge_forward": (dict(x=r(7), sign=-1.0), ()),
        "_hinge_backward": (dict(dx=z(7), x=r(7), sign=1.0, dloss=1.5), ("dx",)),
        "_hinge_gen_forward": (dict(x=r(7)), ()),
        "_hinge_gen_backward": (dict(dx=z(7), dloss=1.5), ("dx",)),
        "_least_squares_forward": (dict(x=r(7), target=1.0), ()),
        "_least_squares_backward": (dict(dx=z(7), x=r(7), target=-1.0, dloss=1.5), ("dx",)),
        "_l1_forward": (dict(x=r(3, 4), y=r(3, 4)), ()),
        "_l1_backward": (dict(dx=z(3, 4), dy=z(3, 4), x=r(3, 4), y=r(3, 4), dloss=1.5),
                         ("dx", "dy")),
        "_mse_forward": (dict(x=r(3, 4), y=r(3, 4)), ()),
        "_mse_backward": (dict(dx=z(3, 4), dy=z(3, 4), x=r(3, 4), y=r(3, 4), dloss=1.5),
                          ("dx", "dy")),
        "_cross_entropy_forward": (dict(x=r(5, 3), labels=labels), ()),
        "_cross_entropy_backward": (dict(dx=z(5, 3), x=r(5, 3), labels=labels, dloss=1.5),
                                    ("dx",)),
        "_distill_kl_forward": (dict(s=r(5, 3), t=r(5, 3), T=2.0, binary=False), ()),
        "_distill_kl_backward": (dict(ds=z(2, 4), s=r(2, 4), t=r(2, 4), T=3.0, binary=True,
                                      dloss=1.5), ("ds",)),
        "_adam_step": (dict(param=r(6, 2), m=r(6, 2), v=np.abs(r(6, 2)), grad=r(6, 2), step=3,
                            lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01),
                       ("param", "m", "v")),
        "_ema_update": (dict(ema=r(6, 2), param=r(6, 2), decay=0.9), ("ema",)),
        "_rng_normal": (dict(out=z(3, 5), seed=42, offset=7), ("out",)),
        "_rng_uniform": (dict(out=z(3, 5), seed=42, offset=7, lo=-1.0, hi=2.0), ("out",)),
    }
    for name in ("relu", "tanh", "sigmoid", "leaky_relu"):
        slope = dict(slope=0.2) if name == "leaky_relu" else {}
        cache = "out" if name in ("tanh", "sigmoid") else "inp"
        calls[f"_{name}_forward"] = (dict(out=z(2, 3, 4), inp=r(2, 3, 4), **slope), ("out",))
        calls[f"_{name}_backward"] = (dict(dinp=z(2, 3, 4), dout=r(2, 3, 4),
                                           **{cache: r(2, 3, 4)}, **slope), ("dinp",))
    return calls


OP_FUNCTIONS = ["_sgemm", "_sgemm_ref", "_linear_forward", "_linear_backward",
                "_conv2d_forward", "_conv2d_backward", "_conv_transpose2d_forward",
                "_conv_transpose2d_backward", "_batchnorm_forward", "_batchnorm_forward_eval",
                "_batchnorm_backward", "_batchnorm_backward_eval",
                "_relu_forward", "_relu_backward", "_leaky_relu_forward",
                "_leaky_relu_backward", "_tanh_forward", "_tanh_backward",
                "_sigmoid_forward", "_sigmoid_backward", "_embedding_forward",
                "_embedding_backward", "_bce_logits_forward", "_bce_logits_backward",
                "_hinge_forward", "_hinge_backward", "_hinge_gen_forward",
                "_hinge_gen_backward", "_least_squares_forward", "_least_squares_backward",
                "_l1_forward", "_l1_backward", "_mse_forward", "_mse_backward",
                "_cross_entropy_forward", "_cross_entropy_backward", "_distill_kl_forward",
                "_distill_kl_backward", "_adam_step", "_ema_update", "_rng_normal",
                "_rng_uniform"]


@pytest.fixture
def calls(core):
    return _core_calls(core)


def _fresh(kwargs, outputs):
    """kwargs with every output copied, so repeated calls start from the same state."""
    return {k: v.copy() if k in outputs else v for k, v in kwargs.items()}


def _run(core, name, kwargs):
    """(return value, {output name: array}) of one call."""
    ret = getattr(core, name)(**kwargs)
    return ret, kwargs


def _arrays(kwargs):
    return {k: v for k, v in kwargs.items() if isinstance(v, np.ndarray)}


def _refcounts(kwargs):
    return {k: sys.getrefcount(v) for k, v in _arrays(kwargs).items()}


def _strided(a):
    """A non-contiguous view holding the values of ``a``."""
    big = np.zeros(a.shape + (2,), dtype=a.dtype)
    big[..., 0] = a
    view = big[..., 0]
    assert a.size <= 1 or not view.flags.c_contiguous
    return view


def _unaligned(a):
    """A C-contiguous copy of ``a`` whose data is NOT aligned to its itemsize."""
    buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
    view = buf[1:].view(a.dtype).reshape(a.shape)
    view[...] = a
    assert not view.flags.aligned and view.flags.c_contiguous
    return view


def test_every_c_op_is_bound(core, calls):
    """One binding per C op of distgan.h, and each of them is exercised here."""
    public = {n for n in dir(core) if n.startswith("_") and not n.startswith("__")}
    assert set(OP_FUNCTIONS) <= public
    assert set(OP_FUNCTIONS) == set(calls)
    assert {"_conv2d_workspace_size", "_conv_transpose2d_workspace_size", "_status_str",
            "_set_num_threads", "_get_num_threads", "_blas_name"} <= public


@pytest.mark.parametrize("name", OP_FUNCTIONS)
def test_core_valid_call(core, calls, name):
    """The valid call works, returns None (a float for a loss forward), keeps refcounts."""
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    before = _refcounts(kwargs)
    for _ in range(3):
        ret, _ = _run(core, name, kwargs)
    assert _refcounts(kwargs) == before
    if name.endswith("_forward") and not outputs:
        assert isinstance(ret, float) and np.isfinite(ret)
    else:
        assert ret is None


# --------------------------------------------------------------------------------------------
# _core: dtype, layout and writeability of every array argument
# --------------------------------------------------------------------------------------------

def _variants(kind):
    """(name, array argument) pairs of every call, for parametrisation."""
    from distgan import _core as core            # imported lazily: collection must not fail
    out = []
    for name, (kwargs, outputs) in _core_calls(core).items():
        for arg, v in kwargs.items():
            if isinstance(v, np.ndarray) and (kind == "all" or (arg in outputs) == (kind == "out")):
                out.append((name, arg))
    return out


def _param_variants(kind):
    try:
        return _variants(kind)
    except ImportError:                           # _core not built: the core fixture skips
        return [("_relu_forward", "out" if kind == "out" else "inp")]


@pytest.mark.parametrize("name,arg", _param_variants("all"))
def test_core_wrong_dtype_raises_type_error(core, calls, name, arg):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    bad = kwargs[arg].astype(np.float64)
    kwargs[arg] = bad
    before = _refcounts(kwargs)
    with pytest.raises(TypeError, match=rf"^{name}: {arg} must be (float32|an integer array)"):
        getattr(core, name)(**kwargs)
    assert _refcounts(kwargs) == before


@pytest.mark.parametrize("name,arg", _param_variants("all"))
def test_core_non_array_raises_type_error(core, calls, name, arg):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs[arg] = kwargs[arg].tolist()
    with pytest.raises(TypeError, match=rf"^{name}: {arg} must be a numpy.ndarray"):
        getattr(core, name)(**kwargs)


@pytest.mark.parametrize("name,arg", _param_variants("out"))
def test_core_noncontiguous_output_raises(core, calls, name, arg):
    """An output or gradient is never copied: a non-contiguous one is refused."""
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    view = _strided(kwargs[arg])
    snapshot = view.copy()
    kwargs[arg] = view
    before = _refcounts(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}: {arg} must be C-contiguous"):
        getattr(core, name)(**kwargs)
    assert _refcounts(kwargs) == before
    assert np.array_equal(view, snapshot)         # nothing was written


@pytest.mark.parametrize("name,arg", _param_variants("out"))
def test_core_readonly_output_raises(core, calls, name, arg):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs[arg].flags.writeable = False
    before = _refcounts(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}: {arg} must be writeable"):
        getattr(core, name)(**kwargs)
    assert _refcounts(kwargs) == before


@pytest.mark.parametrize("name,arg", _param_variants("out"))
def test_core_unaligned_output_raises(core, calls, name, arg):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs[arg] = _unaligned(kwargs[arg])
    with pytest.raises(ValueError, match=rf"^{name}: {arg} must be aligned"):
        getattr(core, name)(**kwargs)


@pytest.mark.parametrize("name,arg", _param_variants("out"))
def test_core_byteswapped_output_raises(core, calls, name, arg):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs[arg] = kwargs[arg].astype(kwargs[arg].dtype.newbyteorder())
    with pytest.raises(TypeError, match=rf"^{name}: {arg} must be float32 in native byte order"):
        getattr(core, name)(**kwargs)


@pytest.mark.parametrize("name,arg", _param_variants("in"))
def test_core_noncontiguous_input_same_result(core, calls, name, arg):
    """A strided, Fortran-ordered, misaligned or byte-swapped input is copied: the result
    is the same."""
    kwargs, outputs = calls[name]
    want_ret, want = _run(core, name, _fresh(kwargs, outputs))
    a = kwargs[arg]
    variants = [_strided(a), np.asfortranarray(a), _unaligned(a)]
    if a.dtype == F32:
        variants.append(a.astype(a.dtype.newbyteorder()))
    else:                                         # labels: any integer dtype
        variants.append(a.astype(np.int32))
    for v in variants:
        kw = _fresh(kwargs, outputs)
        kw[arg] = v
        before = sys.getrefcount(v)
        got_ret, got = _run(core, name, kw)
        assert sys.getrefcount(v) == before
        assert got_ret == want_ret or (got_ret is None and want_ret is None)
        for o in outputs:
            assert np.array_equal(got[o], want[o]), (name, arg, o)


# --------------------------------------------------------------------------------------------
# _core: shapes, values, aliasing, sizes
# --------------------------------------------------------------------------------------------

def _call_with(core, calls, name, **changes):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs.update(changes)
    return getattr(core, name)(**kwargs)


def z(*shape):
    return np.zeros(shape, F32)


BAD_SHAPES = [  # (function, changes, message regex)
    ("_linear_forward", dict(inp=z(2, 3, 1)), r"inp \(N, C\) must be 2-D"),
    ("_linear_forward", dict(weight=z(4, 2)),
     r"weight \(OC, C\) has shape \(4, 2\), expected \(4, 3\)"),
    ("_linear_forward", dict(bias=z(3)), r"bias \(OC,\) has shape \(3,\), expected \(4,\)"),
    ("_linear_forward", dict(out=z(2, 5)), r"out \(N, OC\) has shape \(2, 5\), expected \(2, 4\)"),
    ("_linear_forward", dict(inp=z(0, 3), out=z(0, 4)), r"every size must be >= 1"),
    ("_linear_backward", dict(dbias=z(5)), r"dbias \(OC,\) has shape \(5,\), expected \(4,\)"),
    ("_linear_backward", dict(dinp=z(3, 2)), r"dinp has shape \(3, 2\), expected \(2, 3\)"),
    ("_linear_backward", dict(dout=z(2, 3)), r"dout \(N, OC\) has shape"),
    ("_conv2d_forward", dict(inp=z(2, 3, 6)), r"inp \(N, C, H, W\) must be 4-D"),
    ("_conv2d_forward", dict(weight=z(4, 2, 3, 3)),
     r"weight \(OC, C, KH, KW\) has shape \(4, 2, 3, 3\), expected \(4, 3, 3, 3\)"),
    ("_conv2d_forward", dict(bias=z(3)), r"bias \(OC,\) has shape \(3,\), expected \(4,\)"),
    ("_conv2d_forward", dict(out=z(2, 4, 4, 3)),
     r"out has \(OH, OW\) = \(4, 3\), expected \(3, 3\)"),
    ("_conv2d_forward", dict(workspace=z(3)), r"workspace has 3 floats, expected at least"),
    ("_conv2d_forward", dict(SH=0), r"stride must be >= 1"),
    ("_conv2d_forward", dict(PW=-1), r"padding must be >= 0"),
    ("_conv2d_forward", dict(weight=z(4, 3, 9, 3), PH=0, PW=0),
     r"kernel \(9, 3\) is larger than the padded input"),
    ("_conv2d_backward", dict(dweight=z(4, 3, 3, 2)), r"dweight has shape"),
    ("_conv2d_backward", dict(dout=z(2, 4, 3, 4)), r"dout has \(OH, OW\) = \(3, 4\)"),
    ("_conv_transpose2d_forward", dict(weight=z(4, 4, 3, 3)),
     r"weight \(C, OC, KH, KW\) has shape \(4, 4, 3, 3\), expected \(3, 4, 3, 3\)"),
    ("_conv_transpose2d_forward", dict(out=z(2, 4, 13, 10)),
     r"expected OH in \[11, 12\] and OW in \[9, 10\]"),
    ("_batchnorm_forward", dict(mean=z(4)), r"mean \(C,\) has shape \(4,\), expected \(3,\)"),
    ("_batchnorm_forward", dict(inp=z(2)),
     r"inp \(N, C, \*\) has shape \(2,\), expected at least 2 dimensions"),
    ("_batchnorm_forward", dict(out=z(2, 3, 6, 4)),
     r"out has shape \(2, 3, 6, 4\), expected \(2, 3, 6, 5\)"),
    ("_batchnorm_forward", dict(inp=z(1, 3), out=z(1, 3)), r"more than 1 value per channel"),
    ("_batchnorm_backward_eval", dict(running_var=z(2)), r"running_var \(C,\) has shape"),
    ("_relu_forward", dict(out=z(2, 3, 5)),
     r"out has shape \(2, 3, 5\), expected \(2, 3, 4\) \(the shape of inp\)"),
    ("_tanh_backward", dict(dout=z(24)),
     r"dout has shape \(24,\), expected \(2, 3, 4\) \(the shape of out\)"),
    ("_embedding_forward", dict(out=z(5, 3)),
     r"out \(N, D\) has shape \(5, 3\), expected \(5, 4\)"),
    ("_embedding_forward", dict(labels=np.zeros((5, 1), np.int64)), r"labels \(N,\) must be 1-D"),
    ("_embedding_backward", dict(dout=z(4, 4)),
     r"dout \(N, D\) has shape \(4, 4\), expected \(5, 4\)"),
    ("_bce_logits_forward", dict(y=z(4, 3)), r"y has shape \(4, 3\), expected \(3, 4\)"),
    ("_l1_backward", dict(dy=z(12)), r"dy has shape \(12,\), expected \(3, 4\)"),
    ("_cross_entropy_forward", dict(labels=np.zeros(4, np.int64)),
     r"labels \(N,\) has shape \(4,\), expected \(5,\)"),
    ("_distill_kl_forward", dict(t=z(5, 4)), r"t has shape \(5, 4\), expected \(5, 3\)"),
    ("_distill_kl_forward", dict(s=z(15), t=z(15)), r"s \(N, K\) must be 2-D"),
    ("_adam_step", dict(v=z(12)), r"v has shape \(12,\), expected \(6, 2\) \(the shape of param\)"),
    ("_ema_update", dict(param=z(2, 6)), r"param has shape \(2, 6\), expected \(6, 2\)"),
    ("_sgemm", dict(B=z(3, 5)), r"B \(K, N\) has shape \(3, 5\), expected \(4, 5\)"),
    ("_sgemm", dict(C=z(5, 3)), r"C \(M, N\) has shape \(5, 3\), expected \(3, 5\)"),
]


@pytest.mark.parametrize("name,changes,match", BAD_SHAPES,
                         ids=[f"{n}-{'-'.join(c)}" for n, c, _ in BAD_SHAPES])
def test_core_bad_shape_raises(core, calls, name, changes, match):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs.update(changes)
    before = _refcounts(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}: .*{match}"):
        getattr(core, name)(**kwargs)
    assert _refcounts(kwargs) == before


BAD_VALUES = [  # (function, changes, exception, message regex)
    ("_embedding_forward", dict(labels=np.array([0, 3, 1, 2, 2])), ValueError,
     r"labels\[1\] = 3 is out of range \[0, 3\)"),
    ("_embedding_backward", dict(labels=np.array([0, 1, -1, 2, 2])), ValueError,
     r"labels\[2\] = -1 is out of range"),
    ("_cross_entropy_backward", dict(labels=np.array([0, 1, 2, 2**63, 0], dtype=np.uint64)),
     ValueError, r"labels\[3\] = -9223372036854775808 is out of range"),
    ("_cross_entropy_forward", dict(labels=np.array([0., 1, 2, 0, 0])), TypeError,
     r"labels must be an integer array, got float64"),
    ("_cross_entropy_forward", dict(labels=np.ones(5, bool)), TypeError,
     r"labels must be an integer array, got bool"),
    ("_distill_kl_forward", dict(T=0.0), ValueError, r"T must be finite and > 0, got 0.0"),
    ("_distill_kl_forward", dict(T=-1.0), ValueError, r"T must be finite and > 0"),
    ("_distill_kl_backward", dict(T=float("nan")), ValueError,
     r"T must be finite and > 0, got nan"),
    ("_distill_kl_backward", dict(T=float("inf")), ValueError,
     r"T must be finite and > 0, got inf"),
    ("_distill_kl_backward", dict(T=1e-60), ValueError, r"T must be finite and > 0, got 0.0"),
    ("_batchnorm_forward", dict(eps=0.0), ValueError, r"eps must be finite and > 0"),
    ("_batchnorm_forward_eval", dict(eps=-1e-5), ValueError, r"eps must be finite and > 0"),
    ("_batchnorm_forward", dict(momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
    ("_batchnorm_forward", dict(momentum=float("nan")), ValueError, r"momentum must be in"),
    ("_hinge_forward", dict(sign=0.5), ValueError, r"sign must be \+1.0 or -1.0, got 0.5"),
    ("_adam_step", dict(step=0), ValueError, r"step must be >= 1"),
    ("_adam_step", dict(beta1=1.0), ValueError, r"beta1 must be in \[0, 1\)"),
    ("_adam_step", dict(lr=float("nan")), ValueError, r"lr must be finite and >= 0"),
    ("_adam_step", dict(eps=-1.0), ValueError, r"eps must be finite and >= 0"),
    ("_adam_step", dict(weight_decay=float("inf")), ValueError, r"weight_decay must be finite"),
    ("_ema_update", dict(decay=1.5), ValueError, r"decay must be in \[0, 1\]"),
    ("_rng_normal", dict(seed=-1), ValueError, r"seed must be in \[0, 2\*\*64\), got -1"),
    ("_rng_normal", dict(offset=2**64), ValueError, r"offset must be in \[0, 2\*\*64\)"),
    ("_rng_normal", dict(seed=1.5), TypeError, r"seed must be an int, got float"),
    ("_rng_uniform", dict(lo=2.0, hi=2.0), ValueError, r"lo < hi"),
    ("_rng_uniform", dict(hi=float("inf")), ValueError, r"must be finite"),
]


@pytest.mark.parametrize("name,changes,exc,match", BAD_VALUES,
                         ids=[f"{n}-{'-'.join(c)}-{i}"
                              for i, (n, c, _, _) in enumerate(BAD_VALUES)])
def test_core_bad_value_raises(core, calls, name, changes, exc, match):
    kwargs, outputs = calls[name]
    kwargs = _fresh(kwargs, outputs)
    kwargs.update(changes)
    snapshot = {k: v.copy() for k, v in _arrays(kwargs).items()}
    before = _refcounts(kwargs)
    with pytest.raises(exc, match=rf"^{name}: .*{match}"):
        getattr(core, name)(**kwargs)
    assert _refcounts(kwargs) == before
    for k, v in snapshot.items():                 # refused before anything was written
        assert np.array_equal(kwargs[k], v, equal_nan=True), k


def test_core_parse_errors_are_not_overwritten(core, calls):
    """Exceptions raised by PyArg_ParseTupleAndKeywords itself come through unchanged."""
    kwargs, outputs = calls["_conv2d_forward"]
    kw = _fresh(kwargs, outputs)
    del kw["PW"]
    with pytest.raises(TypeError, match=r"missing required argument 'PW'"):
        core._conv2d_forward(**kw)
    with pytest.raises(TypeError, match=r"integer"):
        _call_with(core, calls, "_conv2d_forward", SH=1.5)
    with pytest.raises(OverflowError):
        _call_with(core, calls, "_conv2d_forward", PH=2**40)
    with pytest.raises(TypeError, match=r"keyword argument"):
        _call_with(core, calls, "_relu_forward", slope=0.2)
    with pytest.raises(TypeError, match=r"must be real number"):
        _call_with(core, calls, "_ema_update", decay="0.5")


def test_core_size_overflow(core):
    """Sizes the C code holds in an int are refused before anything is allocated."""
    with pytest.raises(ValueError, match=r"OH\*OW \(columns of the im2col matrix\) would overflow"):
        core._conv2d_workspace_size(1, 1, 65536, 65536, 1, 1, 1, 1, 1, 0, 0, 65536, 65536)
    with pytest.raises(ValueError,
                       match=r"OC\*KH\*KW \(rows of the im2col matrix\) would overflow"):
        core._conv_transpose2d_workspace_size(1, 1, 1, 1, 65536, 256, 256, 1, 1, 0, 0, 256, 256)
    with pytest.raises(ValueError, match=r"the padded height would overflow"):
        core._conv2d_workspace_size(1, 1, 2, 2, 1, 1, 1, 2**30, 2**30, 2**31 - 1, 0, 4, 1)
    with pytest.raises(ValueError, match=r"must be >= 1"):
        core._conv2d_workspace_size(0, 1, 2, 2, 1, 1, 1, 1, 1, 0, 0, 2, 2)
    with pytest.raises(ValueError,
                       match=r"the geometry has \(OH, OW\) = \(2, 3\), expected \(2, 2\)"):
        core._conv2d_workspace_size(1, 1, 2, 2, 1, 1, 1, 1, 1, 0, 0, 2, 3)
    assert core._conv2d_workspace_size(2, 3, 6, 5, 4, 3, 3, 2, 2, 1, 1, 3, 3) > 0


def test_core_overlapping_buffers_raise(core, calls):
    """An output may not share memory with another argument (exact in-place aliasing of an
    elementwise forward excepted)."""
    shared = np.zeros(14, F32)
    with pytest.raises(ValueError, match=r"^_linear_forward: out and inp overlap in memory"):
        _call_with(core, calls, "_linear_forward", out=shared[:8].reshape(2, 4),
                   inp=shared[6:12].reshape(2, 3))
    buf = np.zeros(9, F32)
    with pytest.raises(ValueError, match=r"mean and rstd overlap"):
        _call_with(core, calls, "_batchnorm_forward", mean=buf[:3], rstd=buf[2:5])
    with pytest.raises(ValueError, match=r"dx and dy overlap"):
        flat = np.zeros(24, F32)
        _call_with(core, calls, "_l1_backward", dx=flat[:12].reshape(3, 4),
                   dy=flat[6:18].reshape(3, 4))
    a = np.arange(8, dtype=F32) - 3
    with pytest.raises(ValueError, match=r"out and inp overlap"):
        core._relu_forward(a[1:], a[:-1])         # shifted: would read what it wrote
    core._relu_forward(a, a)                      # exactly in place: allowed
    assert np.array_equal(a, np.maximum(np.arange(8, dtype=F32) - 3, 0))
    p = np.ones(4, F32)
    with pytest.raises(ValueError, match=r"param and m overlap"):
        core._adam_step(p, p, np.ones(4, F32), np.ones(4, F32), 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)


def test_core_empty_losses_and_elementwise(core):
    """n == 0 is defined by the core: a loss of 0.0, an elementwise op that does nothing."""
    e = np.zeros((0, 3), F32)
    assert core._l1_forward(e, e) == 0.0
    assert core._bce_logits_forward(e, e) == 0.0
    assert core._cross_entropy_forward(e, np.zeros(0, np.int64)) == 0.0
    assert core._distill_kl_forward(e, e, 2.0, False) == 0.0
    core._relu_forward(e, e)
    core._rng_normal(np.zeros(0, F32), 1, 0)


def test_core_status_and_info(core):
    assert core._status_str(0) == "ok"
    assert core._status_str(3) == "out of memory"
    assert core._blas_name() in ("scipy-openblas", "openblas", "reference")
    n = core._get_num_threads()
    assert n >= 1
    with pytest.raises(ValueError, match=r"^_set_num_threads: n must be >= 1, got 0"):
        core._set_num_threads(0)
    core._set_num_threads(n)
    assert core._get_num_threads() == n


# --------------------------------------------------------------------------------------------
# leaks and threads
# --------------------------------------------------------------------------------------------

def test_no_memory_leak_on_copies_and_errors(core):
    """Input copies (non-contiguous inputs) and error paths release what they allocated."""
    x = np.zeros((256, 512), F32)[:, ::2]        # non-contiguous: copied at every call
    w = np.zeros((16, 256), F32)
    out = np.zeros((256, 16), F32)
    bad_bias = np.zeros(3, F32)

    def calls_once():
        core._linear_forward(out, x, w, None)
        with pytest.raises(ValueError):
            core._linear_forward(out, x, w, bad_bias)     # fails after copying x
        with pytest.raises(TypeError):
            core._linear_forward(out, x, w.astype(np.float64), None)

    calls_once()
    tracemalloc.start()
    try:
        calls_once()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(50):
            calls_once()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 256 * 256 * 4, f"{grown} bytes kept after 50 calls copying 256 KiB each"


def test_calls_from_threads_agree(core):
    """The GIL is released around the C calls; concurrent calls give the serial results."""
    ops = load_impl("ops")
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal((4, 3, 12, 12)).astype(F32) for _ in range(4)]
    w = rng.standard_normal((8, 3, 3, 3)).astype(F32)
    want = [ops.conv2d(x, w, stride=1, padding=1) for x in xs]
    got = [None] * len(xs)

    def work(i):
        for _ in range(5):
            got[i] = ops.conv2d(xs[i], w, stride=1, padding=1)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g, want_i in zip(got, want):
        assert np.array_equal(g, want_i)


# --------------------------------------------------------------------------------------------
# crash-prone calls, in a subprocess
# --------------------------------------------------------------------------------------------

CRASH_SCRIPT = textwrap.dedent(r"""
    import sys
    sys.path.insert(0, ROOT)
    import numpy as np
    from numpy.lib.stride_tricks import as_strided
    from distgan import _core as core

    F32 = np.float32

    def huge(shape):
        # A C-contiguous, writeable float32 array CLAIMING `shape` over 64 bytes of memory:
        # if a size check were missing, the core would read and write far out of bounds.
        base = np.zeros(16, F32)
        strides, step = [], 4
        for n in reversed(shape):
            strides.insert(0, step)
            step *= n
        a = as_strided(base, shape=shape, strides=strides, writeable=True)
        assert a.flags.c_contiguous and a.flags.writeable
        return a

    def z(*shape):
        return np.zeros(shape, F32)

    def expect(exc, text, fn, *args):
        try:
            fn(*args)
        except exc as e:
            assert text in str(e), (text, str(e))
        else:
            raise AssertionError(f"{fn.__name__}: no {exc.__name__} ({text})")

    big = huge((1, 1, 65536, 65536))              # 2**32 floats
    expect(ValueError, "OH*OW (columns of the im2col matrix) would overflow",
           core._conv2d_forward, huge((1, 1, 65536, 65536)), z(64), big,
           np.ones((1, 1, 1, 1), F32), None, 1, 1, 0, 0)
    expect(ValueError, "would overflow", core._conv2d_backward, None, z(1, 1, 1, 1), None,
           z(64), huge((1, 1, 65536, 65536)), big, np.ones((1, 1, 1, 1), F32), 1, 1, 0, 0)
    expect(ValueError, "H*W (columns of the im2col matrix) would overflow",
           core._conv_transpose2d_forward, huge((1, 1, 65536, 65536)), z(64), big,
           np.ones((1, 1, 1, 1), F32), None, 1, 1, 0, 0)
    expect(ValueError, "a size would overflow a C int", core._linear_forward,
           huge((2**31, 1)), huge((2**31, 1)), np.ones((1, 1), F32), None)
    expect(ValueError, "a size would overflow a C int", core._sgemm, False, False, 1.0,
           huge((2**31, 1)), np.ones((1, 1), F32), 0.0, huge((2**31, 1)))
    expect(ValueError, "HW (the product of the sizes after N, C) would overflow",
           core._batchnorm_forward, huge((2, 1, 65536, 65536)), z(1), z(1), None, None,
           huge((2, 1, 65536, 65536)), None, None, 1e-5, 0.1)
    expect(ValueError, "N (the number of logits) would overflow", core._distill_kl_forward,
           huge((2**31,)), huge((2**31,)), 1.0, True)
    expect(ValueError, "a size would overflow a C int", core._embedding_forward,
           huge((1, 2**31)), np.zeros(1, np.int64), huge((1, 2**31)))

    # undersized or oversized buffers that an unchecked core would overrun
    x = np.ones((2, 3, 8, 8), F32)
    w = np.ones((4, 3, 3, 3), F32)
    ws = z(core._conv2d_workspace_size(2, 3, 8, 8, 4, 3, 3, 1, 1, 0, 0, 6, 6))
    expect(ValueError, "workspace has 1 floats", core._conv2d_forward, z(2, 4, 6, 6), z(1),
           x, w, None, 1, 1, 0, 0)
    expect(ValueError, "expected (6, 6)", core._conv2d_forward, z(2, 4, 5, 5), ws, x, w, None,
           1, 1, 0, 0)
    expect(ValueError, "expected (2, 4, 6, 6)", core._conv2d_forward, z(1, 4, 6, 6), ws, x, w,
           None, 1, 1, 0, 0)
    expect(ValueError, "dinp has shape", core._conv2d_backward, z(2, 3, 8, 7), None, None, ws,
           z(2, 4, 6, 6), x, w, 1, 1, 0, 0)
    expect(ValueError, "labels[0] = 1000000 is out of range", core._embedding_forward,
           z(1, 4), np.array([10**6]), z(3, 4))
    expect(ValueError, "labels[0] = -5 is out of range", core._embedding_backward,
           z(3, 4), z(1, 4), np.array([-5]))
    expect(ValueError, "expected (5, 4)", core._embedding_forward, z(4, 4),
           np.zeros(5, np.int64), z(3, 4))
    expect(ValueError, "dx has shape (3,)", core._mse_backward, z(3), None, z(4), z(4), 1.0)
    expect(ValueError, "v has shape (3,)", core._adam_step, z(4), z(4), z(3), z(4), 1, 1e-3,
           0.9, 0.999, 1e-8, 0.0)
    expect(ValueError, "expected (2, 3)", core._sgemm, False, False, 1.0, z(2, 4), z(4, 3), 0.0,
           z(2, 2))
    expect(ValueError, "every size must be >= 1", core._conv2d_forward, z(0, 4, 6, 6), ws,
           z(0, 3, 8, 8), w, None, 1, 1, 0, 0)
    print("ok")
""")


def test_crash_prone_calls_in_subprocess(core):
    proc = subprocess.run([sys.executable, "-c", f"ROOT = {ROOT!r}\n" + CRASH_SCRIPT],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\n"
                                  f"stderr:\n{proc.stderr}")
    assert proc.stdout.strip().endswith("ok")


# --------------------------------------------------------------------------------------------
# distgan.ops: user arguments are checked first, with the function's name
# --------------------------------------------------------------------------------------------

@pytest.fixture
def ops(core):
    return load_impl("ops")


def _r(*shape):
    return np.random.default_rng(3).standard_normal(shape).astype(F32)


def _ops_bad_calls():
    """(id, call(ops), exception, message regex)."""
    x4, w4 = _r(2, 3, 6, 5), _r(4, 3, 3, 3)
    x2, w2 = _r(5, 3), _r(4, 3)
    f64 = np.float64
    lab = np.array([0, 1, 2, 1, 0])
    return [
        ("linear-x-f64", lambda o: o.linear(x2.astype(f64), w2), TypeError,
         r"^linear: x must be float32, got float64"),
        ("linear-weight-list", lambda o: o.linear(x2, w2.tolist()), TypeError,
         r"^linear: weight must be a numpy.ndarray of float32, got list"),
        ("linear-bias-f64", lambda o: o.linear(x2, w2, np.zeros(4)), TypeError,
         r"^linear: bias must be float32, got float64"),
        ("linear-x-ndim", lambda o: o.linear(x2[None], w2), ValueError,
         r"^linear: x must be 2-D \(N, IN\), got shape \(1, 5, 3\)"),
        ("linear-weight-shape", lambda o: o.linear(x2, _r(4, 2)), ValueError,
         r"^linear: weight \(OUT, IN\) has shape \(4, 2\), expected \(4, 3\)"),
        ("linear-bias-length", lambda o: o.linear(x2, w2, _r(5)), ValueError,
         r"^linear: bias \(OUT,\) has shape \(5,\), expected \(4,\)"),
        ("linear_backward-dy-shape", lambda o: o.linear_backward(_r(5, 3), x2, w2), ValueError,
         r"^linear_backward: dy \(N, OUT\) has shape \(5, 3\), expected \(5, 4\)"),
        ("linear-empty", lambda o: o.linear(_r(0, 3), w2), ValueError,
         r"every size must be >= 1"),
        ("conv2d-x-ndim", lambda o: o.conv2d(x4[0], w4), ValueError,
         r"^conv2d: x must be 4-D \(N, C, H, W\), got shape \(3, 6, 5\)"),
        ("conv2d-weight-channels", lambda o: o.conv2d(x4, _r(4, 2, 3, 3)), ValueError,
         r"^conv2d: weight \(OC, C, KH, KW\) has shape \(4, 2, 3, 3\), expected \(4, 3, 3, 3\)"),
        ("conv2d-bias-length", lambda o: o.conv2d(x4, w4, _r(3)), ValueError,
         r"^conv2d: bias \(OC,\) has shape \(3,\), expected \(4,\)"),
        ("conv2d-stride-0", lambda o: o.conv2d(x4, w4, stride=0), ValueError,
         r"^conv2d: stride must be in \[1, 2147483647\], got 0"),
        ("conv2d-stride-float", lambda o: o.conv2d(x4, w4, stride=1.5), TypeError,
         r"^conv2d: stride must be an int, got float"),
        ("conv2d-padding-triple", lambda o: o.conv2d(x4, w4, padding=(1, 1, 1)), ValueError,
         r"^conv2d: padding must be an int or a pair"),
        ("conv2d-padding-neg", lambda o: o.conv2d(x4, w4, padding=(0, -1)), ValueError,
         r"^conv2d: padding must be in \[0, 2147483647\], got -1"),
        ("conv2d-padding-overflow", lambda o: o.conv2d(x4, w4, padding=2**31), ValueError,
         r"^conv2d: padding must be in \[0, 2147483647\]"),
        ("conv2d-kernel-too-big", lambda o: o.conv2d(x4, _r(4, 3, 9, 1)), ValueError,
         r"^conv2d: kernel size 9 is larger than the padded input size 6"),
        ("conv2d-im2col-overflow",
         lambda o: o.conv2d(np.zeros((1, 1, 1, 1), F32), np.zeros((1, 1, 1, 1), F32),
                            padding=40000), ValueError,
         r"^conv2d: _conv2d_workspace_size: OH\*OW \(columns of the im2col matrix\) would "
         r"overflow a C int"),
        ("conv2d_backward-dy-shape", lambda o: o.conv2d_backward(_r(2, 4, 4, 4), x4, w4),
         ValueError, r"^conv2d_backward: dy \(N, OC, OH, OW\) has shape \(2, 4, 4, 4\), "
                     r"expected \(2, 4, 4, 3\)"),
        ("conv_transpose2d-weight", lambda o: o.conv_transpose2d(x4, w4), ValueError,
         r"^conv_transpose2d: weight \(C, OC, KH, KW\) has shape \(4, 3, 3, 3\), "
         r"expected \(3, 3, 3, 3\)"),
        ("conv_transpose2d-output_padding",
         lambda o: o.conv_transpose2d(x4, _r(3, 4, 3, 3), stride=2, output_padding=2),
         ValueError, r"^conv_transpose2d: output_padding must be smaller than stride"),
        ("conv_transpose2d-no-output",
         lambda o: o.conv_transpose2d(_r(1, 3, 1, 1), _r(3, 4, 1, 1), padding=1), ValueError,
         r"^conv_transpose2d: the output size would be -1"),
        ("batch_norm-x-ndim", lambda o: o.batch_norm(_r(2, 3, 4)), ValueError,
         r"^batch_norm: x must be 2-D \(N, C\) or 4-D \(N, C, H, W\)"),
        ("batch_norm-weight-length", lambda o: o.batch_norm(x4, _r(4)), ValueError,
         r"^batch_norm: weight \(C,\) has shape \(4,\), expected \(3,\)"),
        ("batch_norm-bias-f64", lambda o: o.batch_norm(x4, None, np.zeros(3)), TypeError,
         r"^batch_norm: bias must be float32, got float64"),
        ("batch_norm-eps", lambda o: o.batch_norm(x4, eps=0.0), ValueError,
         r"^batch_norm: eps must be finite and > 0"),
        ("batch_norm-eps-underflow", lambda o: o.batch_norm(x4, eps=1e-50), ValueError,
         r"^batch_norm: eps must be finite and > 0 \(as a float32\)"),
        ("batch_norm-momentum", lambda o: o.batch_norm(x4, momentum=2.0), ValueError,
         r"^batch_norm: momentum must be in \[0.0, 1.0\], got 2.0"),
        ("batch_norm-one-value", lambda o: o.batch_norm(_r(1, 3)), ValueError,
         r"^batch_norm: training needs more than 1 value per channel"),
        ("batch_norm-eval-no-stats", lambda o: o.batch_norm(x4, training=False), ValueError,
         r"^batch_norm: training=False needs running_mean and running_var"),
        ("batch_norm-running-readonly",
         lambda o: o.batch_norm(x4, running_mean=np.broadcast_to(F32(0), (3,)),
                                running_var=np.ones(3, F32)), ValueError,
         r"^batch_norm: running_mean must be (C-contiguous|writeable)"),
        ("batch_norm-running-noncontig",
         lambda o: o.batch_norm(x4, running_mean=np.zeros(6, F32)[::2],
                                running_var=np.ones(3, F32)), ValueError,
         r"^batch_norm: running_mean must be C-contiguous"),
        ("batch_norm_backward-dy", lambda o: o.batch_norm_backward(x4[:1], x4), ValueError,
         r"^batch_norm_backward: dy has shape \(1, 3, 6, 5\), expected \(2, 3, 6, 5\)"),
        ("relu-f64", lambda o: o.relu(np.zeros(3)), TypeError, r"^relu: x must be float32"),
        ("relu-int", lambda o: o.relu(np.zeros(3, int)), TypeError,
         r"^relu: x must be float32, got int64"),
        ("relu_backward-dy", lambda o: o.relu_backward(_r(3), _r(4)), ValueError,
         r"^relu_backward: dy has shape \(3,\), expected \(4,\) \(the shape of x\)"),
        ("leaky_relu-slope", lambda o: o.leaky_relu(_r(3), negative_slope="0.2"), TypeError,
         r"^leaky_relu: negative_slope must be a real number, got str"),
        ("tanh_backward-dy-f16", lambda o: o.tanh_backward(_r(3).astype(np.float16), _r(3)),
         TypeError, r"^tanh_backward: dy must be float32, got float16"),
        ("embedding-labels-float", lambda o: o.embedding(lab.astype(F32), _r(3, 4)), TypeError,
         r"^embedding: labels must be an integer array, got float32"),
        ("embedding-labels-range", lambda o: o.embedding(np.array([0, 3]), _r(3, 4)),
         ValueError, r"^embedding: labels must lie in \[0, 3\), got 3 at index 1"),
        ("embedding-labels-negative", lambda o: o.embedding(np.array([-1]), _r(3, 4)),
         ValueError, r"^embedding: labels must lie in \[0, 3\), got -1 at index 0"),
        ("embedding_backward-dy", lambda o: o.embedding_backward(_r(5, 3), lab, _r(3, 4)),
         ValueError, r"^embedding_backward: dy \(N, D\) has shape \(5, 3\), expected \(5, 4\)"),
        ("bce-target-shape", lambda o: o.binary_cross_entropy_with_logits(_r(4), _r(5)),
         ValueError, r"^binary_cross_entropy_with_logits: target has shape \(5,\), "
                     r"expected \(4,\)"),
        ("bce_backward-dy-array",
         lambda o: o.binary_cross_entropy_with_logits_backward(_r(1), _r(4), _r(4)),
         TypeError, r"dy must be a real number, got ndarray"),
        ("hinge_d-fake-f64", lambda o: o.hinge_d(_r(3), np.zeros(3)), TypeError,
         r"^hinge_d: fake must be float32"),
        ("least_squares-target-array", lambda o: o.least_squares(_r(3), _r(3)), TypeError,
         r"^least_squares: target must be a real number, got ndarray"),
        ("l1_loss-shape", lambda o: o.l1_loss(_r(3, 4), _r(4, 3)), ValueError,
         r"^l1_loss: y has shape \(4, 3\), expected \(3, 4\)"),
        ("mse_loss_backward-f64", lambda o: o.mse_loss_backward(1.0, _r(3), np.zeros(3)),
         TypeError, r"^mse_loss_backward: y must be float32"),
        ("cross_entropy-labels-range", lambda o: o.cross_entropy(_r(5, 3), lab + 1),
         ValueError, r"^cross_entropy: labels must lie in \[0, 3\), got 3 at index 2"),
        ("cross_entropy-labels-count", lambda o: o.cross_entropy(_r(4, 3), lab), ValueError,
         r"^cross_entropy: labels has shape \(5,\), expected \(4,\)"),
        ("cross_entropy-logits-ndim", lambda o: o.cross_entropy(_r(5), lab), ValueError,
         r"^cross_entropy: logits must be 2-D \(N, K\)"),
        ("tempered_kl-T-zero", lambda o: o.tempered_kl(_r(4, 3), _r(4, 3), 0.0), ValueError,
         r"^tempered_kl: T must be finite and > 0"),
        ("tempered_kl-T-negative", lambda o: o.tempered_kl(_r(4, 3), _r(4, 3), -2.0),
         ValueError, r"^tempered_kl: T must be finite and > 0"),
        ("tempered_kl-T-nan", lambda o: o.tempered_kl(_r(4), _r(4), float("nan"), binary=True),
         ValueError, r"^tempered_kl: T must be finite and > 0"),
        ("tempered_kl-T-str", lambda o: o.tempered_kl(_r(4, 3), _r(4, 3), "2"), TypeError,
         r"^tempered_kl: T must be a real number, got str"),
        ("tempered_kl-teacher-shape", lambda o: o.tempered_kl(_r(4, 3), _r(4, 2), 2.0),
         ValueError, r"^tempered_kl: teacher_logits has shape \(4, 2\), expected \(4, 3\)"),
        ("tempered_kl-categorical-1d", lambda o: o.tempered_kl(_r(4), _r(4), 2.0), ValueError,
         r"^tempered_kl: student_logits must be 2-D \(N, K\) when binary=False"),
        ("tempered_kl_backward-T", lambda o: o.tempered_kl_backward(1.0, _r(4), _r(4), 0,
                                                                     binary=True),
         ValueError, r"^tempered_kl_backward: T must be finite and > 0"),
        ("adam_step-param-f64",
         lambda o: o.adam_step(np.zeros(3), _r(3), _r(3), _r(3), 1), TypeError,
         r"^adam_step: param must be float32 \(native byte order\), got float64"),
        ("adam_step-m-readonly",
         lambda o: o.adam_step(_r(3), _r(3), np.broadcast_to(F32(0), (3,)), _r(3), 1),
         ValueError, r"^adam_step: m must be (C-contiguous|writeable)"),
        ("adam_step-v-noncontig",
         lambda o: o.adam_step(_r(3), _r(3), _r(3), _r(6)[::2], 1), ValueError,
         r"^adam_step: v must be C-contiguous"),
        ("adam_step-shape", lambda o: o.adam_step(_r(4), _r(3), _r(3), _r(3), 1), ValueError,
         r"^adam_step: param has shape \(4,\), expected \(3,\)"),
        ("adam_step-step-0", lambda o: o.adam_step(_r(3), _r(3), _r(3), _r(3), 0), ValueError,
         r"^adam_step: step must be in \[1, "),
        ("adam_step-beta2", lambda o: o.adam_step(_r(3), _r(3), _r(3), _r(3), 1, beta2=1.0),
         ValueError, r"^adam_step: beta2 must be in \[0.0, 1.0\), got 1.0"),
        ("adam_step-lr", lambda o: o.adam_step(_r(3), _r(3), _r(3), _r(3), 1, lr=-1e-3),
         ValueError, r"^adam_step: lr must be finite and >= 0, got -0.001"),
        ("ema_update-decay", lambda o: o.ema_update(_r(3), _r(3), 1.5), ValueError,
         r"^ema_update: decay must be in \[0.0, 1.0\], got 1.5"),
        ("ema_update-ema-list", lambda o: o.ema_update([0.0, 0.0, 0.0], _r(3), 0.5),
         TypeError, r"^ema_update: ema must be a numpy.ndarray of float32, got list"),
        ("normal-seed-negative", lambda o: o.normal(3, -1), ValueError,
         r"^normal: seed must be in \[0, 18446744073709551615\], got -1"),
        ("normal-seed-too-big", lambda o: o.normal(3, 2**64), ValueError,
         r"^normal: seed must be in \[0, "),
        ("normal-seed-float", lambda o: o.normal(3, 1.0), TypeError,
         r"^normal: seed must be an int, got float"),
        ("normal-shape-negative", lambda o: o.normal((2, -1), 0), ValueError,
         r"^normal: shape must be in \[0, "),
        ("normal-shape-str", lambda o: o.normal("3", 0), TypeError,
         r"^normal: shape must be an int or a tuple of ints, got str"),
        ("uniform-offset-negative", lambda o: o.uniform(3, 0, offset=-5), ValueError,
         r"^uniform: offset must be in \[0, "),
        ("uniform-empty-interval", lambda o: o.uniform(3, 0, low=1.0, high=1.0), ValueError,
         r"^uniform: low and high must be finite float32 values with low < high"),
        ("uniform-float32-equal", lambda o: o.uniform(3, 0, low=1.0, high=1.0 + 1e-12),
         ValueError, r"^uniform: low and high must be finite"),
        ("uniform-inf", lambda o: o.uniform(3, 0, high=float("inf")), ValueError,
         r"^uniform: low and high must be finite"),
        ("set_num_threads-0", lambda o: o.set_num_threads(0), ValueError,
         r"^set_num_threads: n must be in \[1, "),
        ("set_num_threads-bool", lambda o: o.set_num_threads(True), TypeError,
         r"^set_num_threads: n must be an int, got bool"),
    ]


OPS_BAD = _ops_bad_calls()


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in OPS_BAD], ids=[c[0] for c in OPS_BAD])
def test_ops_bad_arguments_raise(ops, call, exc, match):
    with pytest.raises(exc, match=match):
        call(ops)


def test_ops_noncontiguous_inputs_same_result(ops):
    """Strided, Fortran-ordered and byte-swapped inputs give the contiguous result."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 6)).astype(F32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(F32)
    b = rng.standard_normal(4).astype(F32)
    y = ops.conv2d(x, w, b, stride=2, padding=1)
    assert np.array_equal(ops.conv2d(_strided(x), np.asfortranarray(w),
                                     b.astype(b.dtype.newbyteorder()), stride=2, padding=1), y)
    dy = rng.standard_normal(y.shape).astype(F32)
    for g, g_ref in zip(ops.conv2d_backward(_strided(dy), x.transpose(1, 0, 2, 3).copy()
                                            .transpose(1, 0, 2, 3), w, 2, 1),
                        ops.conv2d_backward(dy, x, w, 2, 1)):
        assert np.array_equal(g, g_ref)
    bx = rng.standard_normal((5, 3)).astype(F32)
    assert np.array_equal(ops.batch_norm(_strided(bx), _strided(b[:3])),
                          ops.batch_norm(bx, b[:3].copy()))
    logits = rng.standard_normal((5, 4)).astype(F32)
    labels = np.array([3, 0, 1, 1, 2], dtype=np.uint8)
    assert ops.cross_entropy(np.asfortranarray(logits), _strided(labels)) == \
        ops.cross_entropy(logits, labels.astype(np.int64))
    p1, p2 = np.ones(6, F32), np.ones(6, F32)
    m1, m2, v1, v2 = (np.zeros(6, F32) for _ in range(4))
    g = rng.standard_normal(6).astype(F32)
    ops.adam_step(p1, _strided(g), m1, v1, 1)
    ops.adam_step(p2, g, m2, v2, 1)
    assert np.array_equal(p1, p2) and np.array_equal(m1, m2) and np.array_equal(v1, v2)


def test_ops_inputs_untouched_and_refcounts(ops):
    """ops never modifies its inputs and holds no reference to them afterwards."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 5, 5)).astype(F32)
    w = rng.standard_normal((2, 4, 3, 3)).astype(F32)
    snap = (x.copy(), w.copy())
    before = (sys.getrefcount(x), sys.getrefcount(w))
    for _ in range(3):
        ops.conv2d(x, w, padding=1)
        ops.conv2d_backward(ops.conv2d(x, w), x, w)
        with pytest.raises(ValueError):
            ops.conv2d(x, w, _r(5))
    assert (sys.getrefcount(x), sys.getrefcount(w)) == before
    assert np.array_equal(x, snap[0]) and np.array_equal(w, snap[1])


def test_ops_empty_and_scalars(ops):
    """Losses of empty arrays are 0.0 (the core's definition); losses are Python floats."""
    e = np.zeros((0,), F32)
    assert ops.l1_loss(e, e) == 0.0 and ops.hinge_g(e) == 0.0
    assert ops.relu(np.zeros((0, 3), F32)).shape == (0, 3)
    assert ops.embedding(np.zeros(0, np.int64), _r(3, 4)).shape == (0, 4)
    assert ops.normal((2, 0), 1).shape == (2, 0)
    loss = ops.tempered_kl(_r(4, 3), _r(4, 3), np.float32(2.0))
    assert type(loss) is float
    dx = ops.least_squares_backward(np.float64(1.5), _r(3), np.int64(1))
    assert dx.dtype == F32 and dx.shape == (3,)
