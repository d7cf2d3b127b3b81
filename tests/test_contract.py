"""Contract tests of distgan.ops, distgan.reference and the private distgan._core.

* inputs come out unchanged (bottleneck ``input_modification_test``), for every case of
  tests/cases.py on both implementations and for every _core function;
* a _core backward ACCUMULATES: called twice into the same buffers it leaves twice the
  gradient (distgan.h: "backward ACCUMULATES (+=)"), and a None gradient is skipped;
* the adjoint identity <conv2d(x, w), y> = <x, conv_transpose2d(y, w)>: the conv-transpose
  weight (C_in_of_transpose, OC, K, K) IS the conv2d weight (OC_conv, C_conv, K, K);
* exact small-integer conv / conv-transpose cases worked out by hand (ggml
  test-conv-transpose habit), and small-integer random cases where float32 is exact, so
  distgan.ops must equal the float64 reference bit for bit;
* the Philox RNG: uniform within [low, high), normal moments, split independence,
  determinism by seed;
* _sgemm (BLAS) vs _sgemm_ref (plain loops) vs NumPy for the 4 transpose combinations.
"""
import numpy as np
import pytest

from cases import CASES
from conftest import load_impl, rel_err

F32 = np.float32


# --------------------------------------------------------------------------------------------
# same API: distgan.reference mirrors distgan.ops name for name, parameter for parameter
# --------------------------------------------------------------------------------------------

def test_reference_mirrors_ops_signatures():
    import inspect
    ops, ref = load_impl("ops"), load_impl("reference")
    if ops is None:
        pytest.skip("distgan.ops / distgan._core not built yet")
    for name in ref.__all__:
        assert hasattr(ops, name), f"distgan.ops has no {name}"
        p_ops = [(p.name, p.default)
                 for p in inspect.signature(getattr(ops, name)).parameters.values()]
        p_ref = [(p.name, p.default)
                 for p in inspect.signature(getattr(ref, name)).parameters.values()]
        assert p_ops == p_ref, f"{name}: ops{p_ops} != reference{p_ref}"


# --------------------------------------------------------------------------------------------
# inputs stay unchanged (ops and reference)
# --------------------------------------------------------------------------------------------

def _snapshot(d):
    return {k: [a.copy() for a in v] if isinstance(v, list) else
            (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def _assert_same(d, snap, what):
    for k, v in snap.items():
        if isinstance(v, list):
            for a, b in zip(d[k], v):
                assert np.array_equal(a, b), f"{what}: input {k} was modified"
        elif isinstance(v, np.ndarray):
            assert d[k].dtype == v.dtype and np.array_equal(d[k], v), \
                f"{what}: input {k} was modified"
        else:
            assert d[k] == v, f"{what}: input {k} was modified"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_inputs_unchanged(case, impl, rng):
    inputs = case.make(rng)
    snap = _snapshot(inputs)
    case.run(impl, inputs)
    _assert_same(inputs, snap, case.id)


def test_noncontiguous_inputs_accepted(impl, rng):
    """Non-contiguous input views give the same result as their contiguous copies."""
    x = rng.normal(size=(2, 3, 9, 8)).astype(F32)[:, :, ::2, 1::2]      # (2, 3, 5, 4) strided
    w = np.asfortranarray(rng.normal(size=(4, 3, 3, 3)).astype(F32))
    b = rng.normal(size=8).astype(F32)[::2]
    y = impl.conv2d(x, w, b, stride=1, padding=1)
    y_ref = impl.conv2d(np.ascontiguousarray(x), np.ascontiguousarray(w), b.copy(), 1, 1)
    assert np.array_equal(y, y_ref)
    dy = rng.normal(size=y.shape).astype(F32).transpose(0, 1, 3, 2).copy().transpose(0, 1, 3, 2)
    for g, g_ref in zip(impl.conv2d_backward(dy, x, w, 1, 1),
                        impl.conv2d_backward(np.ascontiguousarray(dy),
                                             np.ascontiguousarray(x),
                                             np.ascontiguousarray(w), 1, 1)):
        assert np.array_equal(g, g_ref)
    z = rng.normal(size=(6, 5)).astype(F32).T                          # (5, 6) F-ordered
    wl = rng.normal(size=(3, 6)).astype(F32)
    assert np.array_equal(impl.linear(z, wl), impl.linear(np.ascontiguousarray(z), wl))


# --------------------------------------------------------------------------------------------
# conv: adjoint identity and exact small-integer cases
# --------------------------------------------------------------------------------------------

ADJOINT_GEOMETRIES = [  # N, C, H, W, OC, K, S, P
    (1, 1, 5, 5, 1, 3, 1, 0), (2, 3, 7, 6, 4, 3, 1, 1), (2, 2, 8, 8, 3, 4, 2, 1),
    (1, 3, 9, 7, 2, 5, 2, 2), (2, 2, 7, 8, 3, 2, 3, 0), (1, 2, 6, 5, 2, (3, 2), (2, 1), (1, 0)),
]


def _adjoint_shapes(geom):
    N, C, H, W, OC, K, S, P = geom
    (KH, KW), (SH, SW), (PH, PW) = [(v, v) if np.ndim(v) == 0 else v for v in (K, S, P)]
    OH, OW = (H + 2 * PH - KH) // SH + 1, (W + 2 * PW - KW) // SW + 1
    # the output_padding that makes conv_transpose2d map (OH, OW) back onto (H, W)
    op = ((H + 2 * PH - KH) % SH, (W + 2 * PW - KW) % SW)
    return (N, C, H, W), (OC, C, KH, KW), (N, OC, OH, OW), (SH, SW), (PH, PW), op


@pytest.mark.parametrize("geom", ADJOINT_GEOMETRIES, ids=str)
@pytest.mark.parametrize("integer", [True, False], ids=["int", "float"])
def test_conv_adjoint_identity(impl, rng, geom, integer):
    """<conv2d(x, w), y> = <x, conv_transpose2d(y, w)>, the same array w for both."""
    xs, ws, ys, S, P, op = _adjoint_shapes(geom)
    draw = ((lambda s: rng.integers(-3, 4, size=s)) if integer else
            (lambda s: rng.normal(size=s)))
    x, w, y = (draw(s).astype(F32) for s in (xs, ws, ys))
    cx = impl.conv2d(x, w, stride=S, padding=P)
    ty = impl.conv_transpose2d(y, w, stride=S, padding=P, output_padding=op)
    assert cx.shape == y.shape and ty.shape == x.shape
    lhs = np.sum(cx.astype(np.float64) * y)
    rhs = np.sum(x.astype(np.float64) * ty)
    if integer:                                  # every product and sum is exact in float32
        assert lhs == rhs
    else:
        scale = np.sum(np.abs(cx.astype(np.float64) * y))
        assert abs(lhs - rhs) <= 1e-6 * scale
    # and conv_transpose2d is conv2d's input gradient, conv2d is conv_transpose2d's
    dx = impl.conv2d_backward(y, x, w, stride=S, padding=P)[0]
    dy = impl.conv_transpose2d_backward(x, y, w, stride=S, padding=P, output_padding=op)[0]
    assert rel_err(dx, ty) <= 1e-6 and rel_err(dy, cx) <= 1e-6


X33 = np.arange(1, 10, dtype=F32).reshape(1, 1, 3, 3)          # [[1,2,3],[4,5,6],[7,8,9]]
X22 = np.array([[1, 2], [3, 4]], dtype=F32).reshape(1, 1, 2, 2)

# (name, x, weight, bias, stride, padding, expected), worked out by hand
CONV2D_BY_HAND = [
    # out[i,j] = 1*x[i,j] + 2*x[i,j+1] + 3*x[i+1,j] + 4*x[i+1,j+1]: 1+4+12+20 = 37 ...
    ("k2_s1_p0", X33, X22, None, 1, 0, [[37, 47], [67, 77]]),
    # 3x3 box sums over the zero-padded input at stride 2, plus 10:
    # x[0:2,0:2] = 12, x[0:2,1:3] = 16, x[1:3,0:2] = 24, x[1:3,1:3] = 28
    ("k3_s2_p1_bias", X33, np.ones((1, 1, 3, 3), F32), np.array([10], F32), 2, 1,
     [[22, 26], [34, 38]]),
    # 1x1 conv mixing two channels: out0 = ch0 + ch1, out1 = 2*ch0 - ch1
    ("k1_2ch", np.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]], F32)[None],
     np.array([[1, 1], [2, -1]], F32).reshape(2, 2, 1, 1), None, 1, 0,
     [[[6, 8], [10, 12]], [[-3, -2], [-1, 0]]]),
]

# (name, x, weight, bias, stride, padding, output_padding, expected), worked out by hand
CONV_T_BY_HAND = [
    # each x[i,j] scatters a 2x2 block of ones; overlaps add: centre = 1+2+3+4
    ("k2_s1_ones", X22, np.ones((1, 1, 2, 2), F32), None, 1, 0, 0,
     [[1, 3, 2], [4, 10, 6], [3, 7, 4]]),
    # stride 2 = kernel: disjoint blocks x[i,j] * w
    ("k2_s2", X22, X22, None, 2, 0, 0,
     [[1, 2, 2, 4], [3, 4, 6, 8], [3, 6, 4, 8], [9, 12, 12, 16]]),
    # 3x3 ones at stride 2 give the 5x5 [[1,1,3,2,2],[1,1,3,2,2],[4,4,10,6,6],[3,3,7,4,4],
    # [3,3,7,4,4]]; padding 1 crops a border, output_padding 1 keeps one more row/col
    ("k3_s2_p1_op1", X22, np.ones((1, 1, 3, 3), F32), None, 2, 1, 1,
     [[1, 3, 2, 2], [4, 10, 6, 6], [3, 7, 4, 4], [3, 7, 4, 4]]),
    # two input channels of a 1x1 image: out = 1 * [[1,0],[0,1]] + 2 * [[0,1],[1,0]] + 0.5
    ("k2_2ch_bias", np.array([1, 2], F32).reshape(1, 2, 1, 1),
     np.array([[[1, 0], [0, 1]], [[0, 1], [1, 0]]], F32).reshape(2, 1, 2, 2),
     np.array([0.5], F32), 1, 0, 0, [[1.5, 2.5], [2.5, 1.5]]),
]


@pytest.mark.parametrize("name,x,w,b,S,P,expected", CONV2D_BY_HAND,
                         ids=[c[0] for c in CONV2D_BY_HAND])
def test_conv2d_by_hand(impl, name, x, w, b, S, P, expected):
    out = impl.conv2d(x, w, b, stride=S, padding=P)
    expected = np.array(expected, F32).reshape(out.shape)
    assert out.dtype == F32 and np.array_equal(out, expected), out


@pytest.mark.parametrize("name,x,w,b,S,P,OP,expected", CONV_T_BY_HAND,
                         ids=[c[0] for c in CONV_T_BY_HAND])
def test_conv_transpose2d_by_hand(impl, name, x, w, b, S, P, OP, expected):
    out = impl.conv_transpose2d(x, w, b, stride=S, padding=P, output_padding=OP)
    expected = np.array(expected, F32)
    expected = expected.reshape((1, 1) + expected.shape[-2:])
    assert out.dtype == F32 and np.array_equal(out, expected), out


def test_conv_backward_by_hand(impl):
    """dx of conv2d is conv_transpose2d of dy, dweight the correlation of x with dy."""
    # conv2d(X33, w 2x2) -> 2x2; with dy = ones, dx[i,j] = sum of the w taps covering (i,j)
    # and dweight[a,b] = sum of the 2x2 window of X33 at offset (a,b)
    dy = np.ones((1, 1, 2, 2), F32)
    dx, dw, db = impl.conv2d_backward(dy, X33, X22, stride=1, padding=0)
    assert np.array_equal(dx[0, 0], np.array([[1, 3, 2], [4, 10, 6], [3, 7, 4]], F32))
    assert np.array_equal(dw[0, 0], np.array([[12, 16], [24, 28]], F32))
    assert np.array_equal(db, np.array([4], F32))
    # conv_transpose2d(X22, ones 2x2, stride 2): dx[i,j] = sum of dy over block (i,j),
    # dweight[a,b] = sum_ij x[i,j] * dy[2i+a, 2j+b]
    dy = np.arange(16, dtype=F32).reshape(1, 1, 4, 4)
    dx, dw, db = impl.conv_transpose2d_backward(dy, X22, np.ones((1, 1, 2, 2), F32), stride=2)
    assert np.array_equal(dx[0, 0], np.array([[0 + 1 + 4 + 5, 2 + 3 + 6 + 7],
                                              [8 + 9 + 12 + 13, 10 + 11 + 14 + 15]], F32))
    assert np.array_equal(dw[0, 0], np.array([[1 * 0 + 2 * 2 + 3 * 8 + 4 * 10,
                                               1 * 1 + 2 * 3 + 3 * 9 + 4 * 11],
                                              [1 * 4 + 2 * 6 + 3 * 12 + 4 * 14,
                                               1 * 5 + 2 * 7 + 3 * 13 + 4 * 15]], F32))
    assert np.array_equal(db, np.array([120], F32))


SMALL_INT_CONV = [  # N, C, H, W, OC, K, S, P, OP (OP for the transposed conv only)
    (1, 1, 4, 4, 1, 1, 1, 0, 0), (2, 3, 5, 6, 2, 3, 1, 1, 0), (1, 2, 7, 5, 3, 4, 2, 1, 1),
    (2, 2, 6, 6, 2, 5, 2, 2, 1), (1, 3, 4, 5, 2, 2, 3, 0, 2), (2, 4, 1, 1, 3, 4, 1, 0, 0),
]


@pytest.mark.parametrize("geom", SMALL_INT_CONV, ids=str)
def test_small_integer_conv_exact(rng, geom):
    """With integer data every float32 product and partial sum is exact, so whatever the
    summation order of the GEMM, distgan.ops must equal the float64 reference exactly."""
    ops = load_impl("ops")
    if ops is None:
        pytest.skip("distgan.ops / distgan._core not built yet")
    ref = load_impl("reference")
    N, C, H, W, OC, K, S, P, OP = geom
    ints = lambda *s: rng.integers(-4, 5, size=s).astype(F32)  # noqa: E731
    for transposed in (False, True):
        x = ints(N, C, H, W)
        if transposed:
            w, b, kw = ints(C, OC, K, K), ints(OC), dict(stride=S, padding=P, output_padding=OP)
            fwd, bwd = "conv_transpose2d", "conv_transpose2d_backward"
        else:
            if H + 2 * P < K or W + 2 * P < K:
                continue
            w, b, kw = ints(OC, C, K, K), ints(OC), dict(stride=S, padding=P)
            fwd, bwd = "conv2d", "conv2d_backward"
        y = getattr(ops, fwd)(x, w, b, **kw)
        assert np.array_equal(y, getattr(ref, fwd)(x, w, b, **kw)), (fwd, geom)
        dy = ints(*y.shape)
        for name, got, want in zip(("dx", "dweight", "dbias"), getattr(ops, bwd)(dy, x, w, **kw),
                                   getattr(ref, bwd)(dy, x, w, **kw)):
            assert np.array_equal(got, want), (bwd, name, geom, np.max(np.abs(got - want)))


# --------------------------------------------------------------------------------------------
# RNG (Philox4x32-10): distgan.ops.normal / uniform
# --------------------------------------------------------------------------------------------

@pytest.fixture
def ops():
    mod = load_impl("ops")
    if mod is None:
        pytest.skip("distgan.ops / distgan._core not built yet")
    return mod


RNG_N = 1 << 18


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-2.0, 3.0)])
def test_uniform_in_range(ops, low, high):
    u = ops.uniform((RNG_N,), seed=123, low=low, high=high)
    assert u.dtype == F32 and u.shape == (RNG_N,)
    assert u.min() >= F32(low) and u.max() < F32(high), (u.min(), u.max())
    # mean and variance of U[low, high) to ~5 standard errors
    width = high - low
    assert abs(u.mean(dtype=np.float64) - (low + high) / 2) <= 5 * width / np.sqrt(12 * RNG_N)
    assert abs(u.var(dtype=np.float64) / width**2 - 1 / 12) <= 5 * 0.075 / np.sqrt(RNG_N)
    # roughly flat histogram: every one of 64 bins within 5 sigma of its expected count
    counts, _ = np.histogram(u, bins=64, range=(low, high))
    expected = RNG_N / 64
    assert np.all(np.abs(counts - expected) <= 5 * np.sqrt(expected))


@pytest.mark.parametrize("low,high", [(0.5, 0.5000001), (1.0, 1.0000002), (-3.0, 100.0)])
def test_uniform_never_reaches_high(ops, low, high):
    """U[low, high) is half-open even where low + (high - low) * u rounds up to high in
    float32 (a range only a few float32 values wide, or a large width)."""
    u = ops.uniform((RNG_N,), seed=5, low=low, high=high)
    assert u.min() >= F32(low) and u.max() < F32(high), (u.min(), u.max())


def test_normal_moments(ops):
    ndtr = pytest.importorskip("scipy.special").ndtr        # the N(0, 1) CDF
    z = ops.normal((RNG_N,), seed=7).astype(np.float64)
    se = 1 / np.sqrt(RNG_N)
    # standard errors of the sample moments of N(0, 1): sqrt(Var(z^k) / n)
    assert abs(z.mean()) <= 5 * se
    assert abs(z.var() - 1) <= 5 * np.sqrt(2) * se
    assert abs(np.mean(z**3)) <= 5 * np.sqrt(15) * se
    assert abs(np.mean(z**4) - 3) <= 5 * np.sqrt(96) * se
    assert np.all(np.isfinite(z))
    # Kolmogorov-Smirnov distance to the N(0, 1) CDF; 2.2 / sqrt(n) is its asymptotic
    # critical value at a significance of ~1e-4
    zs = np.sort(z)
    cdf = ndtr(zs)
    ks = max(np.max(np.arange(1, RNG_N + 1) / RNG_N - cdf), np.max(cdf - np.arange(RNG_N) / RNG_N))
    assert ks <= 2.2 / np.sqrt(RNG_N), ks


@pytest.mark.parametrize("draw", ["normal", "uniform"])
def test_rng_split_independence(ops, draw):
    """Element i depends only on (seed, offset + i): a draw split anywhere is the same."""
    fn = getattr(ops, draw)
    n = 1001
    full = fn((n,), 42)
    for k in (1, 2, 3, 4, 7, 500, 1000):
        parts = np.concatenate([fn((k,), 42), fn((n - k,), 42, offset=k)])
        assert np.array_equal(full, parts), f"{draw}: split at {k} differs"
    assert np.array_equal(fn((5, 7), 42), full[:35].reshape(5, 7))
    assert np.array_equal(fn((10,), 42, offset=991), full[991:])


@pytest.mark.parametrize("draw", ["normal", "uniform"])
def test_rng_determinism_by_seed(ops, draw):
    fn = getattr(ops, draw)
    a, b = fn((4096,), 2024), fn((4096,), 2024)
    assert np.array_equal(a, b)
    c = fn((4096,), 2025)
    assert not np.array_equal(a, c)
    # different seeds give uncorrelated streams, and a stream is uncorrelated with its shift
    assert abs(np.corrcoef(a, c)[0, 1]) < 5 / np.sqrt(4096)
    assert abs(np.corrcoef(a[1:], a[:-1])[0, 1]) < 5 / np.sqrt(4096)
    assert np.unique(a).size > 4000                         # no short cycle or stuck value
    big = fn((16,), 2**64 - 1, offset=2**64 - 16)           # extreme seed/offset accepted
    assert np.all(np.isfinite(big))


# --------------------------------------------------------------------------------------------
# distgan._core: backward accumulates, forward assigns, inputs unchanged
# --------------------------------------------------------------------------------------------

def _core_backward_specs(core, rng):
    """name -> (inputs dict, gradient buffer shapes dict, call(grads) -> None, reference grads).

    Each call passes the gradient buffers (None where absent) and fresh scratch space; the
    reference gradients come from distgan.reference for the same upstream gradient.
    """
    ref = load_impl("reference")
    f = lambda *s: rng.normal(size=s).astype(F32)  # noqa: E731
    specs = {}

    x, w, dout = f(4, 6), f(3, 6), f(4, 3)
    specs["linear"] = (dict(inp=x, weight=w, dout=dout),
                       dict(dinp=x.shape, dweight=w.shape, dbias=(3,)),
                       lambda g, i: core._linear_backward(g["dinp"], g["dweight"], g["dbias"],
                                                          i["dout"], i["inp"], i["weight"]),
                       ref.linear_backward(dout, x, w))

    def conv_spec(transposed, N, C, H, W, OC, K, S, P, OP=0):
        x = f(N, C, H, W)
        if transposed:
            w = f(C, OC, K, K)
            OH = (H - 1) * S - 2 * P + K + OP
            OW = (W - 1) * S - 2 * P + K + OP
            ws_fn, bwd = core._conv_transpose2d_workspace_size, core._conv_transpose2d_backward
            expect = ref.conv_transpose2d_backward
            kw = dict(stride=S, padding=P, output_padding=OP)
        else:
            w = f(OC, C, K, K)
            OH, OW = (H + 2 * P - K) // S + 1, (W + 2 * P - K) // S + 1
            ws_fn, bwd = core._conv2d_workspace_size, core._conv2d_backward
            expect = ref.conv2d_backward
            kw = dict(stride=S, padding=P)
        dout = f(N, OC, OH, OW)
        ws = ws_fn(N, C, H, W, OC, K, K, S, S, P, P, OH, OW)

        def call(g, i):
            workspace = np.full(ws, np.nan, F32)     # scratch: its content must not matter
            bwd(g["dinp"], g["dweight"], g["dbias"], workspace, i["dout"], i["inp"],
                i["weight"], S, S, P, P)
        return (dict(inp=x, weight=w, dout=dout), dict(dinp=x.shape, dweight=w.shape,
                                                       dbias=(OC,)),
                call, expect(dout, x, w, **kw))

    specs["conv2d"] = conv_spec(False, 2, 3, 7, 6, 4, 3, 2, 1)
    specs["conv_transpose2d"] = conv_spec(True, 2, 3, 4, 3, 2, 4, 2, 1, 1)

    x, gamma, dout = f(3, 4, 2, 5), f(4), f(3, 4, 2, 5)
    mean, rstd = np.empty(4, F32), np.empty(4, F32)
    core._batchnorm_forward(np.empty_like(x), mean, rstd, None, None, x, gamma, None, 1e-5, 0.1)
    specs["batchnorm"] = (dict(inp=x, gamma=gamma, dout=dout, mean=mean, rstd=rstd),
                          dict(dinp=x.shape, dgamma=(4,), dbeta=(4,)),
                          lambda g, i: core._batchnorm_backward(
                              g["dinp"], g["dgamma"], g["dbeta"], i["dout"], i["inp"],
                              i["mean"], i["rstd"], i["gamma"]),
                          ref.batch_norm_backward(dout, x, gamma, eps=1e-5))
    x, gamma, dout = f(5, 3), f(3), f(5, 3)
    rm, rv = f(3), rng.uniform(0.5, 2, size=3).astype(F32)
    specs["batchnorm_eval"] = (dict(inp=x, gamma=gamma, dout=dout, rm=rm, rv=rv),
                               dict(dinp=x.shape, dgamma=(3,), dbeta=(3,)),
                               lambda g, i: core._batchnorm_backward_eval(
                                   g["dinp"], g["dgamma"], g["dbeta"], i["dout"], i["inp"],
                                   i["rm"], i["rv"], i["gamma"], 1e-5),
                               ref.batch_norm_backward(dout, x, gamma, eps=1e-5,
                                                       running_mean=rm, running_var=rv,
                                                       training=False))

    x, dout = f(3, 7), f(3, 7)
    specs["relu"] = (dict(dout=dout, inp=x), dict(dinp=x.shape),
                     lambda g, i: core._relu_backward(g["dinp"], i["dout"], i["inp"]),
                     (ref.relu_backward(dout, x),))
    specs["leaky_relu"] = (dict(dout=dout, inp=x), dict(dinp=x.shape),
                           lambda g, i: core._leaky_relu_backward(g["dinp"], i["dout"],
                                                                  i["inp"], 0.2),
                           (ref.leaky_relu_backward(dout, x, 0.2),))
    specs["tanh"] = (dict(dout=dout, out=ref.tanh(x)), dict(dinp=x.shape),
                     lambda g, i: core._tanh_backward(g["dinp"], i["dout"], i["out"]),
                     (ref.tanh_backward(dout, x),))
    specs["sigmoid"] = (dict(dout=dout, out=ref.sigmoid(x)), dict(dinp=x.shape),
                        lambda g, i: core._sigmoid_backward(g["dinp"], i["dout"], i["out"]),
                        (ref.sigmoid_backward(dout, x),))

    labels, dout = np.array([1, 0, 1, 3, 1]), f(5, 2)
    specs["embedding"] = (dict(dout=dout, labels=labels), dict(dtable=(4, 2)),
                          lambda g, i: core._embedding_backward(g["dtable"], i["dout"],
                                                                i["labels"]),
                          (ref.embedding_backward(dout, labels, np.zeros((4, 2), F32)),))

    x, y = f(2, 5), rng.uniform(size=(2, 5)).astype(F32)
    specs["bce_logits"] = (dict(x=x, y=y), dict(dx=x.shape),
                           lambda g, i: core._bce_logits_backward(g["dx"], i["x"], i["y"], 1.5),
                           (ref.binary_cross_entropy_with_logits_backward(1.5, x, y),))
    real, fake = f(7), f(7)
    specs["hinge"] = (dict(real=real, fake=fake), dict(dreal=(7,), dfake=(7,)),
                      lambda g, i: (core._hinge_backward(g["dreal"], i["real"], 1.0, 1.5),
                                    core._hinge_backward(g["dfake"], i["fake"], -1.0, 1.5)),
                      ref.hinge_d_backward(1.5, real, fake))
    specs["hinge_gen"] = (dict(), dict(dx=(6,)),
                          lambda g, i: core._hinge_gen_backward(g["dx"], 1.5),
                          (ref.hinge_g_backward(1.5, np.zeros(6, F32)),))
    specs["least_squares"] = (dict(x=x), dict(dx=x.shape),
                              lambda g, i: core._least_squares_backward(g["dx"], i["x"], 1.0, 1.5),
                              (ref.least_squares_backward(1.5, x, 1.0),))
    y2 = f(2, 5)
    for name, fn, rfn in (("l1", core._l1_backward, ref.l1_loss_backward),
                          ("mse", core._mse_backward, ref.mse_loss_backward)):
        specs[name] = (dict(x=x, y=y2), dict(dx=x.shape, dy=x.shape),
                       lambda g, i, fn=fn: fn(g["dx"], g["dy"], i["x"], i["y"], 1.5),
                       rfn(1.5, x, y2))
    logits, labels = f(4, 5), np.array([0, 4, 4, 2])
    specs["cross_entropy"] = (dict(x=logits, labels=labels), dict(dx=logits.shape),
                              lambda g, i: core._cross_entropy_backward(g["dx"], i["x"],
                                                                        i["labels"], 1.5),
                              (ref.cross_entropy_backward(1.5, logits, labels),))
    for binary, shape in ((True, (9,)), (False, (4, 5))):
        s, t = f(*shape), f(*shape)
        specs["distill_kl_" + ("binary" if binary else "categorical")] = (
            dict(s=s, t=t), dict(ds=shape),
            lambda g, i, b=binary: core._distill_kl_backward(g["ds"], i["s"], i["t"], 2.0, b, 1.5),
            (ref.tempered_kl_backward(1.5, s, t, 2.0, binary=binary),))
    return specs


CORE_BACKWARDS = ["linear", "conv2d", "conv_transpose2d", "batchnorm", "batchnorm_eval", "relu",
                  "leaky_relu", "tanh", "sigmoid", "embedding", "bce_logits", "hinge",
                  "hinge_gen", "least_squares", "l1", "mse", "cross_entropy",
                  "distill_kl_binary", "distill_kl_categorical"]


@pytest.mark.parametrize("name", CORE_BACKWARDS)
def test_core_backward_accumulates(core, rng, name):
    """Twice into zeroed buffers gives twice the gradient; into a nonzero buffer g0 it
    gives g0 + gradient; every gradient equals the reference's, and a None gradient buffer
    is skipped without changing the others. Inputs come out unchanged."""
    inputs, shapes, call, expected = _core_backward_specs(core, rng)[name]
    snap = _snapshot(inputs)

    once = {k: np.zeros(s, F32) for k, s in shapes.items()}
    call(once, inputs)
    for (k, g), e in zip(once.items(), expected):
        assert np.any(g != 0), f"{name}: {k} is zero (nothing tested)"
        assert rel_err(g, e) <= 1e-4, f"{name}: {k} differs from the reference"

    twice = {k: np.zeros(s, F32) for k, s in shapes.items()}
    call(twice, inputs)
    call(twice, inputs)
    for k in shapes:
        assert rel_err(twice[k], 2 * once[k]) <= 1e-6, f"{name}: {k} did not accumulate"

    g0 = {k: rng.normal(size=s).astype(F32) for k, s in shapes.items()}
    acc = {k: v.copy() for k, v in g0.items()}
    call(acc, inputs)
    for k in shapes:
        assert rel_err(acc[k], g0[k].astype(np.float64) + once[k]) <= 1e-6, \
            f"{name}: {k} was overwritten, not accumulated"

    if len(shapes) > 1:                    # each gradient alone, the others None (NULL)
        for k in shapes:
            only = {j: (np.zeros(s, F32) if j == k else None) for j, s in shapes.items()}
            call(only, inputs)
            assert rel_err(only[k], once[k]) <= 1e-6, f"{name}: {k} changed with others None"

    _assert_same(inputs, snap, f"_core {name} backward")


def _core_forward_specs(core, rng):
    """name -> (inputs, output shape, call(out) -> loss or None)."""
    f = lambda *s: rng.normal(size=s).astype(F32)  # noqa: E731
    specs = {}
    x, w, b = f(3, 5), f(4, 5), f(4)
    specs["linear"] = (dict(x=x, w=w, b=b), (3, 4),
                       lambda o, i: core._linear_forward(o, i["x"], i["w"], i["b"]))
    x, w, b = f(2, 3, 7, 6), f(4, 3, 3, 3), f(4)
    ws = core._conv2d_workspace_size(2, 3, 7, 6, 4, 3, 3, 2, 2, 1, 1, 4, 3)
    specs["conv2d"] = (dict(x=x, w=w, b=b), (2, 4, 4, 3),
                       lambda o, i: core._conv2d_forward(o, np.full(ws, np.nan, F32), i["x"],
                                                         i["w"], i["b"], 2, 2, 1, 1))
    x, wt = f(2, 3, 4, 3), f(3, 2, 4, 4)
    wst = core._conv_transpose2d_workspace_size(2, 3, 4, 3, 2, 4, 4, 2, 2, 1, 1, 9, 7)
    specs["conv_transpose2d"] = (dict(x=x, w=wt, b=f(2)), (2, 2, 9, 7),
                                 lambda o, i: core._conv_transpose2d_forward(
                                     o, np.full(wst, np.nan, F32), i["x"], i["w"], i["b"],
                                     2, 2, 1, 1))
    x, g, b = f(4, 3, 2, 2), f(3), f(3)
    specs["batchnorm"] = (dict(x=x, g=g, b=b), (4, 3, 2, 2),
                          lambda o, i: core._batchnorm_forward(o, np.empty(3, F32),
                                                               np.empty(3, F32), None, None,
                                                               i["x"], i["g"], i["b"], 1e-5, 0.1))
    rm, rv = f(3), rng.uniform(0.5, 2, size=3).astype(F32)
    specs["batchnorm_eval"] = (dict(x=x, g=g, b=b, rm=rm, rv=rv), (4, 3, 2, 2),
                               lambda o, i: core._batchnorm_forward_eval(
                                   o, i["x"], i["rm"], i["rv"], i["g"], i["b"], 1e-5))
    x = f(3, 7)
    for act in ("relu", "tanh", "sigmoid"):
        specs[act] = (dict(x=x), (3, 7),
                      lambda o, i, fn=getattr(core, f"_{act}_forward"): fn(o, i["x"]))
    specs["leaky_relu"] = (dict(x=x), (3, 7),
                           lambda o, i: core._leaky_relu_forward(o, i["x"], 0.2))
    specs["embedding"] = (dict(labels=np.array([2, 0, 2]), table=f(3, 4)), (3, 4),
                          lambda o, i: core._embedding_forward(o, i["labels"], i["table"]))
    return specs


CORE_FORWARDS = ["linear", "conv2d", "conv_transpose2d", "batchnorm", "batchnorm_eval", "relu",
                 "tanh", "sigmoid", "leaky_relu", "embedding"]


@pytest.mark.parametrize("name", CORE_FORWARDS)
def test_core_forward_assigns(core, rng, name):
    """A forward ASSIGNS its output: the prior content of the buffer (NaN, garbage) and of
    the workspace does not matter, and inputs come out unchanged."""
    inputs, shape, call = _core_forward_specs(core, rng)[name]
    snap = _snapshot(inputs)
    a = np.zeros(shape, F32)
    call(a, inputs)
    b = np.full(shape, np.nan, F32)
    call(b, inputs)
    c = rng.normal(scale=1e3, size=shape).astype(F32)
    call(c, inputs)
    assert np.all(np.isfinite(a)) and np.any(a != 0)
    assert np.array_equal(a, b) and np.array_equal(a, c), f"{name}: forward accumulated"
    _assert_same(inputs, snap, f"_core {name} forward")


def test_core_loss_forwards_leave_inputs_unchanged(core, rng):
    x, y = rng.normal(size=(3, 4)).astype(F32), rng.uniform(size=(3, 4)).astype(F32)
    labels = np.array([0, 3, 1])
    snap = _snapshot(dict(x=x, y=y, labels=labels))
    for value in (core._bce_logits_forward(x, y), core._hinge_forward(x, 1.0),
                  core._hinge_gen_forward(x), core._least_squares_forward(x, 1.0),
                  core._l1_forward(x, y), core._mse_forward(x, y),
                  core._cross_entropy_forward(x, labels),
                  core._distill_kl_forward(x, y, 2.0, True),
                  core._distill_kl_forward(x, y, 2.0, False)):
        assert isinstance(value, float) and np.isfinite(value)
    _assert_same(dict(x=x, y=y, labels=labels), snap, "_core loss forwards")


def test_core_adam_ema_leave_inputs_unchanged(core, rng):
    p, g = rng.normal(size=50).astype(F32), rng.normal(size=50).astype(F32)
    m, v = np.zeros(50, F32), np.zeros(50, F32)
    g_snap = g.copy()
    core._adam_step(p, m, v, g, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)
    assert np.array_equal(g, g_snap)
    ema = np.zeros(50, F32)
    core._ema_update(ema, p, 0.9)
    assert rel_err(ema, 0.1 * p.astype(np.float64)) <= 1e-6


# --------------------------------------------------------------------------------------------
# GEMM: _sgemm (BLAS) vs _sgemm_ref (plain loops) vs NumPy
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transA", [0, 1])
@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("M,N,K", [(7, 5, 9), (1, 1, 1), (33, 17, 65), (3, 4, 0)])
def test_sgemm(core, rng, transA, transB, M, N, K):
    A = rng.normal(size=(K, M) if transA else (M, K)).astype(F32)
    B = rng.normal(size=(N, K) if transB else (K, N)).astype(F32)
    C0 = rng.normal(size=(M, N)).astype(F32)
    alpha, beta = 1.5, -0.5
    opA = A.T if transA else A
    opB = B.T if transB else B
    expected = alpha * (opA.astype(np.float64) @ opB) + beta * C0.astype(np.float64)
    snap = (A.copy(), B.copy())
    results = {}
    for fn in ("_sgemm", "_sgemm_ref"):
        C = C0.copy()
        getattr(core, fn)(transA, transB, alpha, A, B, beta, C)
        results[fn] = C
        assert rel_err(C, expected) <= 1e-5, fn
    assert rel_err(results["_sgemm"], results["_sgemm_ref"]) <= 1e-5
    assert np.array_equal(A, snap[0]) and np.array_equal(B, snap[1])


@pytest.mark.parametrize("fn", ["_sgemm", "_sgemm_ref"])
def test_sgemm_beta_zero_ignores_c(core, rng, fn):
    """BLAS semantics: with beta = 0, C need not be set on input (NaN in C is ignored)."""
    A, B = rng.normal(size=(4, 6)).astype(F32), rng.normal(size=(6, 3)).astype(F32)
    C = np.full((4, 3), np.nan, F32)
    getattr(core, fn)(0, 0, 1.0, A, B, 0.0, C)
    assert rel_err(C, A.astype(np.float64) @ B) <= 1e-5
