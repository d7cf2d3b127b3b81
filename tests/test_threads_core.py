"""The core's thread pool and the helpers added for speed (csrc/dg_thread.c, dg_gemm.c).

* dg_sgemm splits large products over the pool: at each thread count the result is
  the same bits run after run, and it agrees with the plain-loop reference;
* products with one row or one column go through sgemv (every transpose case);
* _zero, _cblas_sgemm (the benchmark's reference rate) and their argument checks;
* convolutions split over images, and conv2d's kept im2col matrix (col=);
* the SSE2 / AVX-512 tanh (Cephes' algorithm) against float64 tanh, and tanh and the normal
  draws split over the pool: the same bits at every thread count;
* batch norm in eval mode for one image of a flat batch: its scales are the scalar
  formula's bits, and its outputs those of the same image in a batch of two;
* a generator's head in one call (_linear_bn_convt_forward, and Network's eval-mode
  forward through it): the bits of its layers one by one, forward and backward;
* prepared calls (_prepare: a forward binding's arguments checked once) and
  _run_plan (a plan's input, calls and a copy of its output in one call): the
  bindings' bits, references held, the bindings' errors; Network.predict through them.
"""
import subprocess
import sys

import numpy as np
import pytest

import distgan
from conftest import subprocess_env
from distgan import _core
from distgan.nn import Network


@pytest.fixture
def threads():
    n = distgan.get_num_threads()
    yield
    distgan.set_num_threads(n)


def _operands(rng, tA, tB, M, N, K):
    A = rng.standard_normal((K, M) if tA else (M, K)).astype(np.float32)
    B = rng.standard_normal((N, K) if tB else (K, N)).astype(np.float32)
    return A, B


@pytest.mark.parametrize("tA", [False, True])
@pytest.mark.parametrize("tB", [False, True])
def test_split_gemm_deterministic_per_thread_count(rng, threads, tA, tB):
    M, N, K = 300, 257, 190          # big enough to be split over 2 and 3 threads
    A, B = _operands(rng, tA, tB, M, N, K)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    ref = C0.copy()
    _core._sgemm_ref(tA, tB, 0.5, A, B, -1.0, ref)
    for n in (1, 2, 3):
        distgan.set_num_threads(n)
        runs = []
        for _ in range(2):
            C = C0.copy()
            _core._sgemm(tA, tB, 0.5, A, B, -1.0, C)
            runs.append(C)
        assert np.array_equal(runs[0], runs[1]), f"{n} threads: two runs differ"
        np.testing.assert_allclose(runs[0], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("tA", [False, True])
@pytest.mark.parametrize("tB", [False, True])
@pytest.mark.parametrize("M,N", [(1, 37), (41, 1), (1, 1)])
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_gemv_cases_match_reference(rng, tA, tB, M, N, beta):
    K = 23
    A, B = _operands(rng, tA, tB, M, N, K)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    if beta == 0.0:
        C0[...] = np.nan          # beta = 0 assigns: C must not be read
    got, ref = C0.copy(), C0.copy()
    _core._sgemm(tA, tB, 1.5, A, B, beta, got)
    _core._sgemm_ref(tA, tB, 1.5, A, B, beta, ref)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tA", [False, True])
@pytest.mark.parametrize("tB", [False, True])
@pytest.mark.parametrize("M,N", [(1, 3000), (3000, 1)])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_split_gemv_deterministic_per_thread_count(rng, threads, tA, tB, M, N, beta):
    """A matrix-vector product large enough to be split over the pool (3000 x 100;
    the generator's linear layer at a batch of one is 12544 x 100) agrees with the
    reference at 1, 2 and 3 threads, the same bits run after run at each count.
    (Across counts the bits may differ, as the split sgemm's may: OpenBLAS's sgemv
    takes the elements beyond a multiple of its vector width apart, and each task's
    range has its own.)"""
    K = 100
    A, B = _operands(rng, tA, tB, M, N, K)
    C0 = rng.standard_normal((M, N)).astype(np.float32)
    ref = C0.copy()
    _core._sgemm_ref(tA, tB, 1.5, A, B, beta, ref)
    for n in (1, 2, 3):
        distgan.set_num_threads(n)
        runs = []
        for _ in range(2):
            C = C0.copy()
            _core._sgemm(tA, tB, 1.5, A, B, beta, C)
            runs.append(C)
        assert np.array_equal(runs[0], runs[1]), f"{n} threads: two runs differ"
        np.testing.assert_allclose(runs[0], ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("N,C,OC", [(64, 100, 12544), (256, 100, 3136), (50, 110, 97)])
def test_linear_forward_of_few_inputs_against_torch(rng, threads, N, C, OC):
    """A batch through a linear layer of few inputs (the generators' first layers,
    which on AVX-512 CPUs run a kernel of their own) agrees with torch's linear in
    float64, relative to the sum of the products' magnitudes, within what float32
    sums of C products give, at 1, 2 and 3 threads; with that kernel, the same bits
    at all three (elsewhere the product is OpenBLAS's, split over the pool, whose
    bits may depend on the thread count: _bits_fixed_by_threads)."""
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((N, C)).astype(np.float32)
    w = (rng.standard_normal((OC, C)) * 0.1).astype(np.float32)
    b = rng.standard_normal(OC).astype(np.float32)
    ref = torch.nn.functional.linear(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                     torch.from_numpy(b).double()).numpy()
    scale = np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64) + np.abs(b)
    outs = []
    for n in (1, 2, 3):
        distgan.set_num_threads(n)
        out = np.full((N, OC), np.nan, np.float32)
        _core._linear_forward(out, x, w, b)
        outs.append(out)
    for out in outs:
        assert np.max(np.abs(out - ref) / scale) < C * 2 ** -24
    if _bits_fixed_by_threads():
        assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])


def test_cblas_sgemm_reference_rate_helper(rng, threads):
    A, B = _operands(rng, False, False, 64, 48, 32)
    ref = np.zeros((64, 48), np.float32)
    _core._sgemm_ref(False, False, 1.0, A, B, 0.0, ref)
    for n in (1, 2):
        C = np.full((64, 48), np.nan, np.float32)
        _core._cblas_sgemm(False, False, 1.0, A, B, 0.0, C, n)
        np.testing.assert_allclose(C, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"^_cblas_sgemm: threads must be >= 1, got 0"):
        _core._cblas_sgemm(False, False, 1.0, A, B, 0.0, C, 0)
    # the pool's size is untouched by the helper
    distgan.set_num_threads(2)
    _core._cblas_sgemm(False, False, 1.0, A, B, 0.0, C, 1)
    assert distgan.get_num_threads() == 2


@pytest.mark.parametrize("n", [0, 1, 17, 100_000, 300_001])
def test_zero(threads, n):
    for t in (1, 2):
        distgan.set_num_threads(t)
        a = np.full(n, 3.0, np.float32)
        _core._zero(a)
        assert not a.any()
    b = np.ones((3, 4), np.float32)
    b.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        _core._zero(b)
    with pytest.raises(TypeError, match="float32"):
        _core._zero(np.ones(3))


def test_ops_agree_across_thread_counts(rng, threads):
    """A conv, batch norm and activation pipeline gives the same result at 1 and 2
    threads within float tolerance, and bit-identical results at each count."""
    from distgan import ops

    x = rng.standard_normal((16, 32, 14, 14)).astype(np.float32)
    w = (0.05 * rng.standard_normal((64, 32, 4, 4))).astype(np.float32)
    out = {}
    for n in (1, 2, 1, 2):
        distgan.set_num_threads(n)
        y = ops.conv2d(x, w, None, stride=2, padding=1)
        y = ops.leaky_relu(ops.batch_norm(y, training=True), 0.2)
        if n in out:
            assert np.array_equal(out[n], y)
        out[n] = y
    np.testing.assert_allclose(out[2], out[1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("N", [3, 7])
def test_convs_split_over_images_agree_across_thread_counts(rng, threads, N):
    """Convolution forwards and conv2d's input gradient run as one task per thread
    over the images of a batch (dg_conv.c "Threads over images"): at 2 and 3 threads
    (batches of 3 and 7: ranges of unequal length, and one 7x7 image per task) the
    results are the same bits run after run and agree with one thread."""
    from distgan import ops

    x = rng.standard_normal((N, 8, 28, 28)).astype(np.float32)
    w = (0.1 * rng.standard_normal((32, 8, 4, 4))).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    z = rng.standard_normal((N, 64, 7, 7)).astype(np.float32)
    wt = (0.1 * rng.standard_normal((64, 32, 4, 4))).astype(np.float32)
    g = (N, 8, 28, 28, 32, 4, 4, 2, 2, 1, 1, 14, 14)

    def run():
        y = ops.conv2d(x, w, b, stride=2, padding=1)
        dx = np.full(x.shape, 0.5, np.float32)          # the input gradient accumulates
        ws = np.empty(_core._conv2d_workspace_size(*g), np.float32)
        _core._conv2d_backward(dx, None, None, ws, y, x, w, 2, 2, 1, 1)
        grads = ops.conv2d_backward(y, x, w, stride=2, padding=1)
        up = ops.conv_transpose2d(z, wt, b, stride=2, padding=1)
        back = ops.conv_transpose2d(y, w, None, stride=2, padding=1)
        return (y, dx) + grads + (up, back)

    distgan.set_num_threads(1)
    want = run()
    for n in (2, 3):
        distgan.set_num_threads(n)
        got, again = run(), run()
        names = ("conv2d", "dinp", "dx", "dweight", "dbias", "conv_t 7x7", "conv_t 14x14")
        for name, a, a2, ref in zip(names, got, again, want):
            assert np.array_equal(a, a2), f"{name} at {n} threads: two runs differ"
            # float32 rounding of sums of up to N*196 terms, relative to their scale
            np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max(),
                                       err_msg=f"{name}, {n} threads")


def test_first_conv_call_of_a_process_gives_the_later_calls_bits():
    """The pool's size comes from OpenBLAS's default at the first call into the core;
    a convolution that is the first call of a process must already split over images
    as the later ones do (it once ran on one thread, and OpenBLAS rounded its
    larger GEMMs differently)."""
    code = (
        "import numpy as np\n"
        "from distgan import _core\n"
        "rng = np.random.default_rng(0)\n"
        "x = rng.standard_normal((7, 8, 28, 28)).astype(np.float32)\n"
        "w = (0.1 * rng.standard_normal((32, 8, 4, 4))).astype(np.float32)\n"
        "ws = np.empty(_core._conv2d_workspace_size(7, 8, 28, 28, 32, 4, 4, 2, 2, 1, 1, 14, 14),"
        " np.float32)\n"
        "ys = [np.empty((7, 32, 14, 14), np.float32) for _ in range(3)]\n"
        "for y in ys:\n"
        "    _core._conv2d_forward(y, ws, x, w, None, 2, 2, 1, 1)\n"
        "print(np.array_equal(ys[0], ys[1]), np.array_equal(ys[1], ys[2]))\n")
    out = subprocess.run([sys.executable, "-c", code], env=subprocess_env(OPENBLAS_NUM_THREADS="2"),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def _im2col(x, k, s, p):
    """(C*k*k, N*OH*OW) im2col of x (N, C, H, W) in NumPy, the layout of a kept col."""
    N, C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    # win (N, C, OH, OW, k, k) -> (C, k, k, N, OH, OW)
    return np.ascontiguousarray(win.transpose(1, 4, 5, 0, 2, 3)).reshape(C * k * k, -1)


@pytest.mark.parametrize("N", [1, 6])
def test_conv2d_kept_col_is_im2col_and_changes_no_result(rng, threads, N):
    """_conv2d_forward(..., col=) keeps the im2col matrix of its input for the
    backward's weight gradient: col is that matrix, and the forward and every
    gradient are the same bits as without it, at 1 and 2 threads."""
    x = rng.standard_normal((N, 8, 28, 28)).astype(np.float32)
    w = (0.1 * rng.standard_normal((32, 8, 4, 4))).astype(np.float32)
    b = rng.standard_normal(32).astype(np.float32)
    dy = rng.standard_normal((N, 32, 14, 14)).astype(np.float32)
    ws = np.empty(_core._conv2d_workspace_size(N, 8, 28, 28, 32, 4, 4, 2, 2, 1, 1, 14, 14),
                  np.float32)
    for n in (1, 2):
        distgan.set_num_threads(n)
        col = np.full((8 * 16, N * 196), np.nan, np.float32)
        y0, y1 = np.empty_like(dy), np.empty_like(dy)
        _core._conv2d_forward(y0, ws, x, w, b, 2, 2, 1, 1)
        _core._conv2d_forward(y1, ws, x, w, b, 2, 2, 1, 1, col=col)
        assert np.array_equal(y0, y1)
        assert np.array_equal(col, _im2col(x, 4, 2, 1))
        g0 = [np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)]
        g1 = [a.copy() for a in g0]
        _core._conv2d_backward(*g0, ws, dy, x, w, 2, 2, 1, 1)
        _core._conv2d_backward(*g1, ws, dy, x, w, 2, 2, 1, 1, col=col)
        for name, a0, a1 in zip(("dinp", "dweight", "dbias"), g0, g1):
            assert np.array_equal(a0, a1), f"{name} at {n} threads"


def test_conv2d_col_argument_errors(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    ws = np.empty(_core._conv2d_workspace_size(2, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1, 8, 8),
                  np.float32)
    y = np.empty((2, 4, 8, 8), np.float32)
    good = np.zeros((27, 128), np.float32)   # zeros: casting garbage can hit a signalling NaN
    with pytest.raises(ValueError, match=r"_conv2d_forward: col \(C\*KH\*KW, N\*OH\*OW\) "
                                         r"has shape \(27, 127\), expected \(27, 128\)"):
        _core._conv2d_forward(y, ws, x, w, None, 1, 1, 1, 1, col=np.empty((27, 127), np.float32))
    with pytest.raises(TypeError, match="_conv2d_forward: col must be float32"):
        _core._conv2d_forward(y, ws, x, w, None, 1, 1, 1, 1, col=good.astype(np.float64))
    with pytest.raises(ValueError, match="_conv2d_forward: col must be C-contiguous"):
        _core._conv2d_forward(y, ws, x, w, None, 1, 1, 1, 1,
                              col=np.empty((27, 256), np.float32)[:, ::2])
    with pytest.raises(ValueError, match=r"_conv2d_backward: col .* has shape \(128, 27\)"):
        _core._conv2d_backward(None, np.zeros_like(w), None, ws, y, x, w, 1, 1, 1, 1,
                               col=np.empty((128, 27), np.float32))
    with pytest.raises(TypeError):    # a transposed convolution keeps no col
        _core._conv_transpose2d_forward(x, ws, y, w, None, 1, 1, 1, 1, col=good)


def test_tanh_within_1_5_ulp_of_float64(rng):
    """_tanh_forward is Cephes' tanhf, 4 lanes at a time (16 with AVX-512): at most 1.5 ulp from the
    float64 tanh rounded (measured 1.30; glibc's tanhf 1.37 on the same inputs)."""
    x = np.concatenate([rng.uniform(-12, 12, 1 << 20), rng.standard_normal(1 << 19) * 0.5,
                        np.linspace(-1, 1, 1 << 19),
                        [0.625, -0.625, 9.0, 9.05, 10.0, 1e-30, -1e-38, 88.0, -1e30, 3.4e38]]
                       ).astype(np.float32)
    out = np.empty_like(x)
    _core._tanh_forward(out, x)
    ref = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    err = np.abs(out - ref) / ulp
    assert err.max() <= 1.5, f"{err.max():.2f} ulp at x = {x[np.argmax(err)]!r}"
    assert np.all(np.abs(out) <= 1.0)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], np.float32)
    got = np.empty_like(special)
    _core._tanh_forward(got, special)
    assert np.isnan(got[0]) and got[1] == 1.0 and got[2] == -1.0
    assert got[3] == 0.0 and not np.signbit(got[3]) and got[4] == 0.0 and np.signbit(got[4])


def test_tanh_and_normals_same_bits_at_any_split(rng, threads):
    """Every element takes the same operations wherever it falls: the tail of a
    length that is not a multiple of 4, and any thread count."""
    x = rng.uniform(-6, 6, 100_003).astype(np.float32)
    ref = np.empty_like(x)
    distgan.set_num_threads(1)
    _core._tanh_forward(ref, x)
    z_ref = np.empty(50_001, np.float32)
    _core._rng_normal(z_ref, 11, 5)
    for n in range(9):
        part = np.empty(n, np.float32)
        _core._tanh_forward(part, x[:n])
        assert np.array_equal(part, ref[:n])
    for nt in (2, 3):
        distgan.set_num_threads(nt)
        out = np.empty_like(x)
        _core._tanh_forward(out, x)
        assert np.array_equal(out, ref)
        z = np.empty_like(z_ref)
        _core._rng_normal(z, 11, 5)
        assert np.array_equal(z, z_ref)
        tail = np.empty(1_000, np.float32)
        _core._rng_normal(tail, 11, 5 + 49_001)
        assert np.array_equal(tail, z_ref[49_001:])


def _has_avx512f():
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:   # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__
    return bool(__cpu_features__.get("AVX512F"))


def _bits_fixed_by_threads():
    """Whether the kernels the tests below reach give the same bits at any thread
    count. The AVX-512 kernels do (each value is summed by one task in a fixed
    order). On other CPUs the products are OpenBLAS's, split over the pool in blocks
    (or in groups of images) that depend on the thread count, and OpenBLAS may round
    an element differently when the block around it has another width: on Zen 3
    (its Haswell kernels), 992 of the 12544 columns of a 64 x 12544 x 100 product
    differed between 1 and 2 threads (dg_gemm.c). There each count is checked for
    accuracy alone."""
    return _has_avx512f()


def test_conv2d_direct_query_and_training_layer(rng):
    """_core._conv2d_direct says when a conv2d's forward and weight gradient run the
    direct AVX-512 kernel (a geometry the ops refuse raises, as they would) (4x4, stride 2, padding 1, onto maps up to 8 wide, 32k
    output channels, >= 8 images and input channels): then nn.Conv2d keeps no im2col
    matrix in training, and its output and gradients agree with the GEMM path (the
    same op given a col to keep, which always takes it) to float rounding."""
    geo = (64, 14, 14, 128, 4, 4, 2, 2, 1, 1, 7, 7)
    assert _core._conv2d_direct(16, *geo) is _has_avx512f()
    assert _core._conv2d_direct(4, *geo) is False                         # too few images
    assert _core._conv2d_direct(16, 64, 14, 14, 96 + 8, 4, 4, 2, 2, 1, 1, 7, 7) is False
    assert _core._conv2d_direct(16, 64, 14, 14, 128, 3, 3, 2, 2, 1, 1, 7, 7) is False
    assert _core._conv2d_direct(16, 64, 28, 28, 128, 4, 4, 2, 2, 1, 1, 14, 14) is False
    with pytest.raises(ValueError, match=r"_conv2d_direct: the geometry has \(OH, OW\) = \(9, 9\)"):
        _core._conv2d_direct(16, 64, 14, 14, 128, 4, 4, 2, 2, 1, 1, 9, 9)
    spec = {"type": "conv2d", "in_channels": 64, "out_channels": 128, "kernel_size": 4,
            "stride": 2, "padding": 1, "bias": True}
    net = Network([spec], (64, 14, 14))
    x = rng.standard_normal((16, 64, 14, 14)).astype(np.float32)
    dy = rng.standard_normal((16, 128, 7, 7)).astype(np.float32)
    layer = net.layers[0]
    net.zero_grad()
    y = net.forward(x, train=True).copy()
    dx = net.backward(dy).copy()
    assert (layer._col is None) is _has_avx512f()
    w, b = layer.p["weight"], layer.p["bias"]
    ws = np.empty(_core._conv2d_workspace_size(16, *geo), np.float32)
    col = np.empty((64 * 16, 16 * 49), np.float32)
    y0 = np.empty_like(y)
    _core._conv2d_forward(y0, ws, x, w, b, 2, 2, 1, 1, col=col)
    g0 = [np.zeros_like(x), np.zeros_like(w), np.zeros_like(b)]
    _core._conv2d_backward(*g0, ws, dy, x, w, 2, 2, 1, 1, col=col)
    for name, got, want in (("out", y, y0), ("dinp", dx, g0[0]),
                            ("dweight", layer.g["weight"], g0[1]), ("dbias", layer.g["bias"], g0[2])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                   err_msg=name)


@pytest.mark.parametrize("threads", [1, 2])
def test_transposed_direct_kernel_accuracy(threads, rng):
    """The transposed convolution's forward (the generator's 256 -> 128, 7x7 -> 14x14)
    and conv2d's input gradient (the critic's 128 -> 64, 7x7 -> 14x14), which run the
    direct AVX-512 kernel on a CPU that has it (dg_direct_convt: 16k output channels,
    >= 8 images and input channels), and the transposed convolution's weight gradient
    (dg_direct_conv_dweight, dout and inp trading places): against a float64
    reference, as accurate as float32 convolutions are (measured: 2e-7 to 4e-7
    normwise for the first two, and for PyTorch's float32 ones; a sum over all 4C
    products in one chain, the kernel's first version, was at 6e-7; the weight
    gradient 3.6e-7, where one chain over all images' products had PyTorch's 1.2e-6)
    at 1 and 2 threads, and with the direct kernels the same bits at both
    (_bits_fixed_by_threads)."""
    torch = pytest.importorskip("torch")
    from conftest import rel_err
    N = 16
    x = rng.standard_normal((N, 256, 7, 7)).astype(np.float32)
    w = (0.05 * rng.standard_normal((256, 128, 4, 4))).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    dy = rng.standard_normal((N, 128, 7, 7)).astype(np.float32)
    w2 = (0.05 * rng.standard_normal((128, 64, 4, 4))).astype(np.float32)
    x2 = np.zeros((N, 64, 14, 14), np.float32)
    F = torch.nn.functional
    ref_out = F.conv_transpose2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                                 torch.from_numpy(b).double(), 2, 1).numpy()
    ref_dx = torch.nn.grad.conv2d_input(x2.shape, torch.from_numpy(w2).double(),
                                        torch.from_numpy(dy).double(), 2, 1).numpy()
    dyt = rng.standard_normal((N, 128, 14, 14)).astype(np.float32)
    wt = torch.from_numpy(w).double().requires_grad_()
    F.conv_transpose2d(torch.from_numpy(x).double(), wt, None, 2, 1).backward(
        torch.from_numpy(dyt).double())
    ref_dw = wt.grad.numpy()
    before = distgan.get_num_threads()
    try:
        res = {}
        for t in (1, threads):
            distgan.set_num_threads(t)
            ws = np.empty(_core._conv_transpose2d_workspace_size(N, 256, 7, 7, 128, 4, 4, 2, 2,
                                                                 1, 1, 14, 14), np.float32)
            out = np.empty((N, 128, 14, 14), np.float32)
            _core._conv_transpose2d_forward(out, ws, x, w, b, 2, 2, 1, 1)
            ws2 = np.empty(_core._conv2d_workspace_size(N, 64, 14, 14, 128, 4, 4, 2, 2, 1, 1,
                                                        7, 7), np.float32)
            dx = np.full(x2.shape, 0.5, np.float32)       # backward accumulates
            _core._conv2d_backward(dx, None, None, ws2, dy, x2, w2, 2, 2, 1, 1)
            dw = np.zeros_like(w)                          # accumulates onto zeros
            _core._conv_transpose2d_backward(None, dw, None, ws, dyt, x, w, 2, 2, 1, 1)
            res[t] = (out, dx - np.float32(0.5), dw)
    finally:
        distgan.set_num_threads(before)
    for out, dx, dw in res.values():
        assert rel_err(out, ref_out) < 1e-6, rel_err(out, ref_out)
        assert rel_err(dx, ref_dx) < 1e-6, rel_err(dx, ref_dx)
        assert rel_err(dw, ref_dw) < 1e-6, rel_err(dw, ref_dw)
    if _bits_fixed_by_threads():
        assert all(np.array_equal(a, b) for a, b in zip(res[threads], res[1]))


@pytest.mark.skipif(not _has_avx512f(), reason="the direct kernels need AVX-512F")
@pytest.mark.parametrize("N", [9, 13])
def test_direct_kernels_claim_images_in_turn_same_bits(rng, threads, N):
    """The direct kernels' tasks claim groups of images (conv2d: 2 at a time) and, in
    the transposed kernel, (part of the output channels, image) units in turn, so
    which thread computes an image changes run to run: the results must not. With
    odd batches (a last group of one image) and the transposed kernel's 2 MB of
    panels (two parts), the conv2d forward, its input gradient (the transposed
    kernel, accumulating) and the transposed convolution's forward are the same
    bits at 1, 2 and 3 threads, run after run."""
    x = rng.standard_normal((N, 64, 14, 14)).astype(np.float32)
    w = (0.05 * rng.standard_normal((128, 64, 4, 4))).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    dy = rng.standard_normal((N, 128, 7, 7)).astype(np.float32)
    z = rng.standard_normal((N, 256, 7, 7)).astype(np.float32)
    wt = (0.05 * rng.standard_normal((256, 128, 4, 4))).astype(np.float32)
    assert _core._conv2d_direct(N, 64, 14, 14, 128, 4, 4, 2, 2, 1, 1, 7, 7)

    def run():
        ws = np.empty(_core._conv2d_workspace_size(N, 64, 14, 14, 128, 4, 4, 2, 2, 1, 1, 7, 7),
                      np.float32)
        y = np.full((N, 128, 7, 7), np.nan, np.float32)  # every output is written
        _core._conv2d_forward(y, ws, x, w, b, 2, 2, 1, 1)
        dx = np.full(x.shape, 0.5, np.float32)          # the input gradient accumulates
        _core._conv2d_backward(dx, None, None, ws, dy, x, w, 2, 2, 1, 1)
        wst = np.empty(_core._conv_transpose2d_workspace_size(N, 256, 7, 7, 128, 4, 4, 2, 2,
                                                              1, 1, 14, 14), np.float32)
        up = np.full((N, 128, 14, 14), np.nan, np.float32)
        _core._conv_transpose2d_forward(up, wst, z, wt, b, 2, 2, 1, 1)
        return y, dx, up

    distgan.set_num_threads(1)
    want = run()
    assert all(np.isfinite(a).all() for a in want)
    for n in (2, 3):
        distgan.set_num_threads(n)
        for _ in range(3):
            for name, got, ref in zip(("conv2d", "dinp", "conv_t"), run(), want):
                assert np.array_equal(got, ref), f"{name} at {n} threads differs from 1"


@pytest.mark.parametrize("threads", [1, 2])
def test_few_image_transposed_kernel_sparse_inputs(threads, rng):
    """Sampling's transposed convolution (the generator's 256 -> 128, 7x7 -> 14x14 at
    1 and 3 images), which on an AVX-512 CPU runs the few-image kernel and may sum
    only the nonzero inputs (on CPUs with AVX512-FP16 and AMD's with AVX-512, when at
    most 55 % are nonzero, as after a ReLU): on a ReLU's output, all zeros, a dense
    input, a ReLU's output with a NaN, and a ReLU's output with an inf weight (NaN
    wherever that weight meets a zero), with the sparse sums forced on (their inputs
    broadcast from memory and from registers) and off: against a float64 reference
    (normwise < 1e-6; NaN and inf where it has them) at 1 and 2 threads, the same
    bits (NaN included) sparse or dense, and with the AVX-512 kernels the same bits
    at 1 and 2 threads (_bits_fixed_by_threads)."""
    torch = pytest.importorskip("torch")
    from conftest import rel_err
    w = (0.05 * rng.standard_normal((256, 128, 4, 4))).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    cases = []
    for N in (1, 3):
        relu = np.maximum(rng.standard_normal((N, 256, 7, 7)), 0).astype(np.float32)
        nan = relu.copy()
        nan[N - 1, 200, 3, 4] = np.nan
        cases += [(relu, w), (np.zeros_like(relu), w),
                  (rng.standard_normal(relu.shape).astype(np.float32), w), (nan, w)]
    winf = w.copy()
    winf[17, 5, 1, 2] = np.inf
    cases.append((relu, winf))
    assert (relu[:, 17] == 0).any() and (relu[:, 17] > 0).any()
    before = distgan.get_num_threads()
    try:
        for x, wx in cases:
            N = x.shape[0]
            with np.errstate(invalid="ignore"):
                ref = torch.nn.functional.conv_transpose2d(
                    torch.from_numpy(x).double(), torch.from_numpy(wx).double(),
                    torch.from_numpy(b).double(), 2, 1).numpy()
            res = {}
            for t, sparse, reg in ((1, 0.0, -1), (1, 1.0, 0), (1, 1.0, 1),
                                   (threads, 1.0, 0), (threads, 1.0, 1), (threads, 0.0, -1)):
                distgan.set_num_threads(t)
                _core._few_sparse_share(sparse)
                _core._few_sparse_values(reg)   # the sparse rows' inputs: loads, registers
                ws = np.empty(_core._conv_transpose2d_workspace_size(
                    N, 256, 7, 7, 128, 4, 4, 2, 2, 1, 1, 14, 14), np.float32)
                out = np.empty((N, 128, 14, 14), np.float32)
                _core._conv_transpose2d_forward(out, ws, x, wx, b, 2, 2, 1, 1)
                res[t, sparse, reg] = out
            ok = np.isfinite(ref)   # NaN and inf where the reference has them
            for key, o in res.items():
                assert np.array_equal(o[~ok], ref[~ok].astype(np.float32), equal_nan=True), key
                assert rel_err(o[ok], ref[ok]) < 1e-6, (key, rel_err(o[ok], ref[ok]))
                # against the dense sums at the same thread count, or at 1 thread
                t = 1 if _bits_fixed_by_threads() else key[0]
                assert np.array_equal(o, res[t, 0.0, -1], equal_nan=True), key
            out = res[1, 0.0, -1]
        assert np.isnan(out).any()   # the inf weight's case, last
        with pytest.raises(ValueError, match="reg must be 0, 1 or -1"):
            _core._few_sparse_values(2)
        _core._few_sparse_values(0)
        assert _core._few_sparse_values(-1) == 0   # returns the one before
    finally:
        distgan.set_num_threads(before)
        _core._few_sparse_share(-1)   # the CPU's
        _core._few_sparse_values(-1)


@pytest.mark.parametrize("threads", [1, 2])
def test_one_channel_kernels_accuracy(threads, rng):
    """The critic's first layer (1 -> 64, 28x28 -> 14x14) and the generator's last
    (128 -> 1, 14x14 -> 28x28), all six passes, which run the one-channel AVX-512
    kernels of dg_conv_thin.c on a CPU that has it: against a float64 reference, as
    accurate as float32 convolutions are (normwise < 1e-6), at 1 and 2 threads, and
    with those kernels the same bits at both (_bits_fixed_by_threads)."""
    torch = pytest.importorskip("torch")
    from conftest import rel_err
    N = 16
    T = lambda a: torch.from_numpy(a).double()
    x = rng.standard_normal((N, 1, 28, 28)).astype(np.float32)
    w = (0.2 * rng.standard_normal((64, 1, 4, 4))).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    dy = rng.standard_normal((N, 64, 14, 14)).astype(np.float32)
    s = rng.standard_normal((N, 128, 14, 14)).astype(np.float32)
    w2 = (0.05 * rng.standard_normal((128, 1, 4, 4))).astype(np.float32)
    b2 = rng.standard_normal(1).astype(np.float32)
    g = rng.standard_normal((N, 1, 28, 28)).astype(np.float32)
    F, cb = torch.nn.functional, torch.ops.aten.convolution_backward
    ref = [F.conv2d(T(x), T(w), T(b), 2, 1).numpy()]
    ref += [a.numpy() for a in cb(T(dy), T(x), T(w), None, [2, 2], [1, 1], [1, 1], False,
                                  [0, 0], 1, [True, True, False])[:2]]
    ref += [F.conv_transpose2d(T(s), T(w2), T(b2), 2, 1).numpy()]
    ref += [a.numpy() for a in cb(T(g), T(s), T(w2), None, [2, 2], [1, 1], [1, 1], True,
                                  [0, 0], 1, [True, True, False])[:2]]
    before = distgan.get_num_threads()
    try:
        res = {}
        for t in (1, threads):
            distgan.set_num_threads(t)
            ws = np.empty(_core._conv2d_workspace_size(N, 1, 28, 28, 64, 4, 4, 2, 2, 1, 1,
                                                       14, 14), np.float32)
            ws2 = np.empty(_core._conv_transpose2d_workspace_size(N, 128, 14, 14, 1, 4, 4, 2,
                                                                  2, 1, 1, 28, 28), np.float32)
            out = np.empty((N, 64, 14, 14), np.float32)
            _core._conv2d_forward(out, ws, x, w, b, 2, 2, 1, 1)
            dx, dw = np.full(x.shape, 0.5, np.float32), np.full(w.shape, 0.5, np.float32)
            _core._conv2d_backward(dx, dw, None, ws, dy, x, w, 2, 2, 1, 1)
            out2 = np.empty((N, 1, 28, 28), np.float32)
            _core._conv_transpose2d_forward(out2, ws2, s, w2, b2, 2, 2, 1, 1)
            dx2, dw2 = np.full(s.shape, 0.5, np.float32), np.full(w2.shape, 0.5, np.float32)
            _core._conv_transpose2d_backward(dx2, dw2, None, ws2, g, s, w2, 2, 2, 1, 1)
            half = np.float32(0.5)   # backward accumulates
            res[t] = [out, dx - half, dw - half, out2, dx2 - half, dw2 - half]
    finally:
        distgan.set_num_threads(before)
    for t, got_all in res.items():
        for name, got, want in zip(["fwd", "dx", "dw", "t fwd", "t dx", "t dw"], got_all, ref):
            assert rel_err(got, want) < 1e-6, (t, name, rel_err(got, want))
    if _bits_fixed_by_threads():
        assert all(np.array_equal(a, b) for a, b in zip(res[1], res[threads]))


@pytest.mark.parametrize("N", [1, 3])
def test_few_image_transposed_kernel_accuracy(N, rng):
    """The generator's 256 -> 128 transposed convolution (7x7 -> 14x14) for fewer than
    8 images, as when sampling one, which runs the few-image kernel of
    dg_conv_direct.c on an AVX-512 CPU (weights read in place, no col^T matrix):
    against a float64 reference as accurate as float32 convolutions are (normwise
    < 1e-6), with and without bias, at 1 and 2 threads, and with that kernel the same
    bits at both (_bits_fixed_by_threads)."""
    torch = pytest.importorskip("torch")
    from conftest import rel_err
    T = lambda a: torch.from_numpy(a).double()
    x = rng.standard_normal((N, 256, 7, 7)).astype(np.float32)
    w = (0.05 * rng.standard_normal((256, 128, 4, 4))).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    ws = np.empty(_core._conv_transpose2d_workspace_size(N, 256, 7, 7, 128, 4, 4, 2, 2, 1, 1,
                                                         14, 14), np.float32)
    before = distgan.get_num_threads()
    res = {}
    try:
        for t in (1, 2):
            distgan.set_num_threads(t)
            res[t] = []
            for bias in (b, None):
                out = np.full((N, 128, 14, 14), np.nan, np.float32)
                _core._conv_transpose2d_forward(out, ws, x, w, bias, 2, 2, 1, 1)
                res[t].append(out)
    finally:
        distgan.set_num_threads(before)
    for t in (1, 2):
        for got, bias in zip(res[t], (b, None)):
            want = torch.nn.functional.conv_transpose2d(
                T(x), T(w), None if bias is None else T(bias), 2, 1).numpy()
            assert rel_err(got, want) < 1e-6, (t, bias is None)
    if _bits_fixed_by_threads():
        assert all(np.array_equal(a, c) for a, c in zip(res[1], res[2]))


# -- batch norm in eval mode for one image of a flat batch ---------------------------

def _rstd_ref(var, eps):
    """(float)(1.0 / sqrt((double)var + (double)eps)), the core's scalar formula."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (1.0 / np.sqrt(var.astype(np.float64) + np.float64(np.float32(eps)))).astype(np.float32)


def _same_or_both_nan(a, b):
    """The same bits, or NaN in both (a NaN's sign follows the order of an op's operands)."""
    return (a.view(np.uint32) == b.view(np.uint32)) | (np.isnan(a) & np.isnan(b))


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 1e-30])
def test_batchnorm_eval_one_image_scale_is_the_scalar_formula(eps):
    """A flat batch of one (N = 1, HW = 1, a generator's head sampling one image) takes
    its scales 1/sqrt(var + eps) from a reciprocal square root estimate, two Newton
    steps and a check that the estimate lies far enough from every midpoint between
    two floats for its error interval to round as it does (on AVX-512 CPUs): every
    float variance in [1, 4) (both exponent parities, so every significand) and
    special values give the scalar formula's bits."""
    var = np.arange(np.float32(1.0).view(np.uint32), np.float32(4.0).view(np.uint32),
                    dtype=np.uint32).view(np.float32)
    var = np.concatenate([var, np.array([0.0, -0.0, -eps, -1.0, np.inf, -np.inf, np.nan, 1e-45,
                                         1e-38, 3e38, 2.0 ** -121, 2.0 ** 121], np.float32)])
    C = var.size
    x = np.ones((1, C), np.float32)
    out = np.empty_like(x)
    _core._batchnorm_forward_eval(out, x, np.zeros(C, np.float32), var, None, None, eps)
    assert _same_or_both_nan(out[0], _rstd_ref(var, eps)).all()


@pytest.mark.parametrize("act,slope", [(0, 0.0), (_core.ACT_RELU, 0.0),
                                       (_core.ACT_LEAKY_RELU, 0.2)])
def test_batchnorm_eval_one_image_matches_two_images(rng, act, slope):
    """An image alone (the path of one image of a flat batch) gets the bits it gets in a
    batch of two (the general path), with gamma and beta or without, NaN, inf, -0,
    tiny and negative values among the inputs, and channel counts that are not
    multiples of 16."""
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e38, -1e38],
                       np.float32)

    def arr(C, scale):
        a = (scale * rng.standard_normal(C)).astype(np.float32)
        k = rng.random(C) < 0.05
        a[k] = rng.choice(special, k.sum())
        return a

    for C in (1, 15, 16, 17, 255, 784, 3136 + 5):
        for affine in (True, False):
            x, mean, var = arr(C, 3), arr(C, 1), np.abs(arr(C, 2))
            var[rng.random(C) < 0.02] = -1.0
            gamma, beta = (arr(C, 1), arr(C, 1)) if affine else (None, None)
            one, two = np.empty((1, C), np.float32), np.empty((2, C), np.float32)
            _core._batchnorm_forward_eval(one, x[None], mean, var, gamma, beta, 1e-5,
                                          act=act, slope=slope)
            _core._batchnorm_forward_eval(two, np.stack([x, x]), mean, var, gamma, beta, 1e-5,
                                          act=act, slope=slope)
            assert _same_or_both_nan(one[0], two[0]).all(), (C, affine)


# -- a generator's head in one call (_linear_bn_convt_forward) ------------------------

def _head_operands(rng, N, K, C, HW, OC):
    F = C * HW * HW
    return dict(
        z=rng.standard_normal((N, K)).astype(np.float32),
        lweight=(0.1 * rng.standard_normal((F, K))).astype(np.float32),
        lbias=rng.standard_normal(F).astype(np.float32),
        running_mean=(0.1 * rng.standard_normal(F)).astype(np.float32),
        running_var=rng.uniform(0.5, 2.0, F).astype(np.float32),
        gamma=(1 + 0.02 * rng.standard_normal(F)).astype(np.float32),
        beta=(0.1 * rng.standard_normal(F)).astype(np.float32),
        weight=(0.05 * rng.standard_normal((C, OC, 4, 4))).astype(np.float32),
        bias=rng.standard_normal(OC).astype(np.float32))


@pytest.mark.parametrize("N", [1, 3])
@pytest.mark.parametrize("act", [_core.ACT_RELU, 0, _core.ACT_LEAKY_RELU])
def test_linear_bn_convt_forward_gives_the_layers_bits(rng, threads, N, act):
    """_linear_bn_convt_forward (a generator's head in eval mode: linear, batch norm with
    its activation, transposed convolution) gives the bits of the three ops one by one:
    lin, hid and out, on the teacher's 100 -> 256x7x7 -> 128 and the student's
    100 -> 64x7x7 -> 32, at 1 and 2 threads. Sampling one image on one thread, an
    AVX-512 CPU makes the linear layer's rows chunk of channels by chunk while the
    transposed layer sums; otherwise the op is the three calls. With ReLU half the
    transposed layer's inputs are zero (its sparse rows), without activation none. With
    the batch norm that follows (running_mean2 ...: its activation the same as the
    first's, gamma2 and beta2 given or not), out is that batch norm's output, the bits of
    a fourth call, which the one-image kernel applies as it stores its sums."""
    slope = 0.2 if act == _core.ACT_LEAKY_RELU else 0.0
    for C, OC in ((256, 128), (64, 32)):
        o = _head_operands(rng, N, 100, C, 7, OC)
        ws = np.empty(_core._conv_transpose2d_workspace_size(N, C, 7, 7, OC, 4, 4, 2, 2, 1, 1,
                                                             14, 14), np.float32)
        for t, tail in ((1, None), (2, None), (1, True), (2, True), (1, False)):
            distgan.set_num_threads(t)
            o2 = _head_operands(rng, 1, 1, OC, 1, 1)   # vectors of OC for the second norm
            bn2 = {} if tail is None else dict(
                running_mean2=o2["running_mean"], running_var2=o2["running_var"],
                gamma2=o2["gamma"] if tail else None, beta2=o2["beta"] if tail else None,
                eps2=1e-3, act2=act, slope2=slope)
            lin, hid = np.full((2, N, C * 49), np.nan, np.float32)
            out = np.full((N, OC, 14, 14), np.nan, np.float32)
            _core._linear_bn_convt_forward(
                out, lin, hid.reshape(N, C, 7, 7), ws, o["z"], o["lweight"], o["lbias"],
                o["running_mean"], o["running_var"], o["gamma"], o["beta"], 1e-5,
                o["weight"], o["bias"], 2, 2, 1, 1, act=act, slope=slope, **bn2)
            lin1, hid1 = np.full((2, N, C * 49), np.nan, np.float32)
            out1 = np.full((N, OC, 14, 14), np.nan, np.float32)
            _core._linear_forward(lin1, o["z"], o["lweight"], o["lbias"])
            _core._batchnorm_forward_eval(hid1, lin1, o["running_mean"], o["running_var"],
                                          o["gamma"], o["beta"], 1e-5, act=act, slope=slope)
            _core._conv_transpose2d_forward(out1, ws, hid1.reshape(N, C, 7, 7), o["weight"],
                                            o["bias"], 2, 2, 1, 1)
            if tail is not None:
                y1 = np.full_like(out1, np.nan)
                _core._batchnorm_forward_eval(y1, out1, bn2["running_mean2"],
                                              bn2["running_var2"], bn2["gamma2"],
                                              bn2["beta2"], 1e-3, act=act, slope=slope)
                assert not np.array_equal(y1, out1)
                out1 = y1
            assert np.array_equal(lin, lin1) and np.array_equal(hid, hid1)
            assert np.array_equal(out, out1), (C, t, tail, np.abs(out - out1).max())
            if act == _core.ACT_RELU:
                assert 0.3 < np.count_nonzero(hid) / hid.size < 0.7
            # the weights packed as the one-image kernel reads them, and the batch
            # norm's scales made once: the same bits
            packed = np.full(o["weight"].size + 16, np.nan, np.float32)
            assert _core._convt_few_pack(packed, o["weight"]) is True
            scale = np.full(C * 49, np.nan, np.float32)
            _core._bn_eval_scale(scale, o["running_var"], o["gamma"], 1e-5)
            out2 = np.full_like(out, np.nan)
            lin[...] = hid[...] = np.nan
            _core._linear_bn_convt_forward(
                out2, lin, hid.reshape(N, C, 7, 7), ws, o["z"], o["lweight"], o["lbias"],
                o["running_mean"], o["running_var"], o["gamma"], o["beta"], 1e-5,
                o["weight"], o["bias"], 2, 2, 1, 1, act=act, slope=slope, packed=packed,
                scale=scale, **bn2)
            assert np.array_equal(out2, out1), (C, t, tail)
            assert np.array_equal(lin, lin1) and np.array_equal(hid, hid1)


def test_convt_few_pack_layout_and_non_finite_weights(rng):
    """_convt_few_pack lays a (C, OC, 4, 4) weight out in chunks of 64 input channels,
    blocks of 4 output channels, and per channel the 4 kernel rows of the block's 4
    channels (built here with NumPy from that description), then a flag vector: 1 when
    every weight is finite. With an inf weight that only zero inputs meet, the head's
    output is the unpacked call's (NaN there: inf * 0), so the kernel did not take the
    kept weights' sparse rows."""
    for C, OC in ((256, 128), (80, 8), (3, 4)):
        w = rng.standard_normal((C, OC, 4, 4)).astype(np.float32)
        packed = np.empty(w.size + 16, np.float32)
        assert _core._convt_few_pack(packed, w) is True
        want = []
        for c0 in range(0, C, 64):
            cc = min(64, C - c0)
            blocks = w[c0:c0 + cc].reshape(cc, OC // 4, 4, 4, 4)   # c, block, v, K, tap
            want.append(blocks.transpose(1, 0, 3, 2, 4).ravel())   # block, c, K, v, tap
        assert np.array_equal(packed[:-16], np.concatenate(want))
        assert np.array_equal(packed[-16:], np.ones(16, np.float32))
    N, C, OC = 1, 64, 32
    o = _head_operands(rng, N, 100, C, 7, OC)
    o["weight"][5, 3, 1, 2] = np.inf
    packed = np.empty(o["weight"].size + 16, np.float32)
    assert _core._convt_few_pack(packed, o["weight"]) is False
    assert np.array_equal(packed[-16:], np.zeros(16, np.float32))
    ws = np.empty(_core._conv_transpose2d_workspace_size(N, C, 7, 7, OC, 4, 4, 2, 2, 1, 1,
                                                         14, 14), np.float32)
    distgan.set_num_threads(1)
    outs = []
    for pk in (None, packed):
        lin, hid = np.full((2, N, C * 49), np.nan, np.float32)
        out = np.full((N, OC, 14, 14), np.nan, np.float32)
        _core._linear_bn_convt_forward(
            out, lin, hid.reshape(N, C, 7, 7), ws, o["z"], o["lweight"], o["lbias"],
            o["running_mean"], o["running_var"], o["gamma"], o["beta"], 1e-5, o["weight"],
            o["bias"], 2, 2, 1, 1, act=_core.ACT_RELU, packed=pk)
        outs.append(out)
    assert np.isnan(outs[0]).any() and np.array_equal(outs[0], outs[1], equal_nan=True)


def test_linear_bn_convt_forward_rejects_bad_arguments(rng):
    """Each mismatched array is named, as the layers' own ops name theirs."""
    N, C, OC = 1, 8, 4
    o = _head_operands(rng, N, 10, C, 4, OC)
    ws = np.empty(_core._conv_transpose2d_workspace_size(N, C, 4, 4, OC, 4, 4, 2, 2, 1, 1,
                                                         8, 8), np.float32)
    lin, hid = np.empty((2, N, C * 16), np.float32)

    def call(**kw):
        a = dict(out=np.empty((N, OC, 8, 8), np.float32), lin=lin,
                 hid=hid.reshape(N, C, 4, 4), workspace=ws, eps=1e-5, SH=2, SW=2, PH=1, PW=1)
        a.update(o)
        a.update(kw)
        _core._linear_bn_convt_forward(**a)

    call()
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: lweight .*\(C\*H\*W, K\)"):
        call(lweight=o["lweight"][:, :9].copy())
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: lin .*\(N, C\*H\*W\)"):
        call(lin=np.empty((N, C * 16 + 1), np.float32))
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: z .*\(N, K\)"):
        call(z=np.empty((N + 1, 10), np.float32))
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: running_var"):
        call(running_var=o["running_var"][:-1].copy())
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: weight"):
        call(weight=np.empty((C + 1, OC, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: eps"):
        call(eps=0.0)
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: act"):
        call(act=5)
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: .*overlap"):
        call(lin=hid)
    v = np.ones(OC, np.float32)
    call(running_mean2=v, running_var2=v, gamma2=v, beta2=v, act2=_core.ACT_RELU)
    for kw in (dict(running_mean2=v), dict(running_var2=v), dict(gamma2=v)):
        with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: the second batch "
                                             r"norm needs running_mean2 and running_var2"):
            call(**kw)
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: running_var2"):
        call(running_mean2=v, running_var2=np.ones(OC + 1, np.float32))
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: eps"):
        call(running_mean2=v, running_var2=v, eps2=0.0)
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: act"):
        call(running_mean2=v, running_var2=v, act2=5)
    packed = np.empty(C * OC * 16 + 16, np.float32)
    assert _core._convt_few_pack(packed, o["weight"]) is True
    call(packed=packed)
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: packed .*\(C\*OC\*16 \+ 16"):
        call(packed=packed[:-1].copy())
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: .*overlap"):
        call(packed=ws[:packed.size])
    with pytest.raises(ValueError, match=r"_convt_few_pack: packed .*\(C\*OC\*16 \+ 16"):
        _core._convt_few_pack(packed[:-16].copy(), o["weight"])
    with pytest.raises(ValueError, match=r"_convt_few_pack: weight .*OC a multiple of 4"):
        _core._convt_few_pack(packed, np.zeros((C, 6, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"_convt_few_pack: weight .*\(C, OC, 4, 4\)"):
        _core._convt_few_pack(packed, np.zeros((C, OC, 3, 3), np.float32))
    scale = np.empty(C * 16, np.float32)
    _core._bn_eval_scale(scale, o["running_var"], o["gamma"], 1e-5)
    call(scale=scale)
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: scale"):
        call(scale=scale[:-1].copy())
    with pytest.raises(ValueError, match=r"_linear_bn_convt_forward: .*overlap"):
        call(scale=lin.ravel()[:scale.size])


def test_bn_eval_scale_is_the_eval_batch_norms_factor(rng):
    """_bn_eval_scale gives 1 / sqrt(var + eps), in double rounded to float, times gamma
    (or 1 without it), in float; an eval-mode batch norm with beta and mean 0 of an input
    of ones gives the same factors, to the bit. Bad shapes and eps are refused."""
    C = 37
    var = rng.uniform(0.01, 4.0, C).astype(np.float32)
    gamma = rng.standard_normal(C).astype(np.float32)
    r = (1.0 / np.sqrt(var.astype(np.float64) + np.float64(np.float32(1e-3)))).astype(np.float32)
    for g, want in ((gamma, r * gamma), (None, r)):
        scale = np.full(C, np.nan, np.float32)
        _core._bn_eval_scale(scale, var, g, 1e-3)
        assert np.array_equal(scale, want)
        y = np.empty((1, C), np.float32)
        _core._batchnorm_forward_eval(y, np.ones((1, C), np.float32), np.zeros(C, np.float32),
                                      var, g, None, 1e-3)
        assert np.array_equal(y[0], want)
    with pytest.raises(ValueError, match=r"_bn_eval_scale: running_var"):
        _core._bn_eval_scale(np.empty(C, np.float32), var[:-1].copy(), None, 1e-3)
    with pytest.raises(ValueError, match=r"_bn_eval_scale: gamma"):
        _core._bn_eval_scale(np.empty(C, np.float32), var, gamma[:-1].copy(), 1e-3)
    with pytest.raises(ValueError, match=r"_bn_eval_scale: scale must be 1-D"):
        _core._bn_eval_scale(np.empty((1, C), np.float32), var, None, 1e-3)
    with pytest.raises(ValueError, match=r"_bn_eval_scale: eps"):
        _core._bn_eval_scale(np.empty(C, np.float32), var, None, 0.0)


@pytest.mark.parametrize("spec", ["teacher", "student", "conditional", "32x32"])
def test_generator_head_in_one_call_same_as_layers(rng, threads, spec, monkeypatch):
    """An eval-mode forward runs a generator's head (linear, batch norm, ReLU, reshape,
    transposed convolution) as one _core call: the same output bits as the layers one by
    one (nn._FUSE_HEAD off), at batch 1 and 2 and 1 and 2 threads, and a backward after
    it gives the same input and parameter gradients (each layer is left as its own
    forward leaves it)."""
    from distgan import models, nn
    kw = {"teacher": dict(width=1.0), "student": dict(width=0.25),
          "conditional": dict(width=0.5, num_classes=10), "32x32": dict(width=0.5, image_shape=(3, 32, 32))}[spec]
    g = models.dcgan(**kw)["generator"]
    net = Network(g, (100,), seed=1)
    calls = []
    head = Network._forward_head
    monkeypatch.setattr(Network, "_forward_head",
                        lambda self, i, x: calls.append(i) or head(self, i, x))
    bn = next(l for l in net.layers if l.type == "batch_norm")
    bn.b["running_mean"][...] = 0.1 * rng.standard_normal(bn.b["running_mean"].shape)
    bn.b["running_var"][...] = rng.uniform(0.5, 2.0, bn.b["running_var"].shape)
    for N in (1, 2):
        z = rng.standard_normal((N, 100)).astype(np.float32)
        labels = rng.integers(0, 10, N) if net.needs_labels else None
        dy = rng.standard_normal((N,) + net.output_shape).astype(np.float32)
        for t in (1, 2):
            distgan.set_num_threads(t)
            res = []
            for fuse in (True, False):
                nn._FUSE_HEAD = fuse
                try:
                    y = net.forward(z, labels, train=False).copy()
                    net.zero_grad()
                    dx = net.backward(dy).copy()
                finally:
                    nn._FUSE_HEAD = True
                res.append((y, dx, net.grads.copy()))
            (y, dx, gr), (y1, dx1, gr1) = res
            assert np.array_equal(y, y1), (spec, N, t)
            assert np.array_equal(dx, dx1) and np.array_equal(gr, gr1), (spec, N, t)
    assert calls == [1 if net.needs_labels else 0] * 4   # the head ran as one call each time


# -- prepared calls (_core._prepare) -----------------------------------------------------

def _prepared_cases(rng):
    """Calls of each binding _prepare keeps: (fn, args, kwargs, outputs, inputs) on
    fresh arrays, the outputs those compared, the inputs those a test rewrites."""
    def r(*shape, s=1.0):
        return (s * rng.standard_normal(shape)).astype(np.float32)
    x = r(2, 3, 5, 5)
    cases = [(fn, (out, x), {}, [out], [x]) for fn, out in
             ((_core._relu_forward, np.empty_like(x)), (_core._tanh_forward, np.empty_like(x)),
              (_core._sigmoid_forward, np.empty_like(x)), (_core._tanh_forward, x))]
    out = np.empty_like(x)
    cases.append((_core._leaky_relu_forward, (out, x, 0.2), {}, [out], [x]))
    w, b = r(4, 3, 3, 3), r(4)
    ws = np.empty(_core._conv2d_workspace_size(2, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 5, 5),
                  np.float32)
    out, out2, col = np.empty((2, 4, 5, 5), np.float32), np.empty((2, 4, 5, 5), np.float32), \
        np.empty((27, 50), np.float32)
    cases.append((_core._conv2d_forward, (out, ws, x, w, b, 1, 1, 1, 1), {}, [out], [x, w]))
    cases.append((_core._conv2d_forward, (out2, ws, x, w, None, 1, 1, 1, 1), {"col": col},
                  [out2, col], [x]))
    if _core._conv2d_act_fits(16, 1, 28, 28, 64, 4, 4, 2, 2, 1, 1, 14, 14):
        x1, w1 = r(16, 1, 28, 28), r(64, 1, 4, 4)
        ws1 = np.empty(_core._conv2d_workspace_size(16, 1, 28, 28, 64, 4, 4, 2, 2, 1, 1, 14,
                                                    14), np.float32)
        out = np.empty((16, 64, 14, 14), np.float32)
        cases.append((_core._conv2d_forward, (out, ws1, x1, w1, r(64), 2, 2, 1, 1),
                      {"act": _core.ACT_LEAKY_RELU, "slope": 0.2}, [out], [x1]))
    wt = r(3, 4, 4, 4)
    ws = np.empty(_core._conv_transpose2d_workspace_size(2, 3, 5, 5, 4, 4, 4, 2, 2, 1, 1, 10,
                                                         10), np.float32)
    out = np.empty((2, 4, 10, 10), np.float32)
    cases.append((_core._conv_transpose2d_forward, (out, ws, x, wt, b, 2, 2, 1, 1), {},
                  [out], [x, wt]))
    # a teacher's head on one image, its weights packed and scales kept (the one-image
    # kernel), and the batch norm after it
    o = _head_operands(rng, 1, 100, 256, 7, 128)
    o2 = _head_operands(rng, 1, 1, 128, 1, 1)
    ws = np.empty(_core._conv_transpose2d_workspace_size(1, 256, 7, 7, 128, 4, 4, 2, 2, 1, 1,
                                                         14, 14), np.float32)
    packed = np.empty(o["weight"].size + 16, np.float32)
    _core._convt_few_pack(packed, o["weight"])
    scale = np.empty(256 * 49, np.float32)
    _core._bn_eval_scale(scale, o["running_var"], o["gamma"], 1e-5)
    lin, out = np.empty((1, 256 * 49), np.float32), np.empty((1, 128, 14, 14), np.float32)
    hid = np.empty((1, 256, 7, 7), np.float32)
    cases.append((_core._linear_bn_convt_forward,
                  (out, lin, hid, ws, o["z"], o["lweight"], o["lbias"], o["running_mean"],
                   o["running_var"], o["gamma"], o["beta"], 1e-5, o["weight"], o["bias"],
                   2, 2, 1, 1),
                  dict(act=_core.ACT_RELU, running_mean2=o2["running_mean"],
                       running_var2=o2["running_var"], gamma2=o2["gamma"], beta2=o2["beta"],
                       eps2=1e-3, act2=_core.ACT_RELU, packed=packed, scale=scale),
                  [out, lin, hid], [o["z"], o["lbias"], o2["running_mean"]]))
    return cases


_PREPARED = type(_core._prepare(_core._tanh_forward, np.zeros(1, np.float32),
                                np.zeros(1, np.float32)))


def test_prepared_calls_give_the_bindings_bits(rng, threads):
    """_core._prepare(fn, *args, **kwargs) checks fn's arguments once and keeps its call:
    each call of it gives the bits fn gives on the same arrays, on what they hold then
    (inputs rewritten in place in between), at 1 and 2 threads, in place too (tanh
    with out = inp)."""
    assert _PREPARED.__name__ == "Prepared"
    for fn, args, kw, outs, ins in _prepared_cases(rng):
        p = _core._prepare(fn, *args, **kw)
        assert type(p) is _PREPARED and fn.__name__ in repr(p)
        blank = [a for a in outs if not any(a is i for i in ins)]   # not in place
        for t in (1, 2, 1):
            distgan.set_num_threads(t)
            start = [a.copy() for a in ins]
            for a in blank:
                a[...] = np.nan
            assert p() is None
            got = [a.copy() for a in outs]
            for a, a0 in zip(ins, start):
                a[...] = a0
            for a in blank:
                a[...] = np.nan
            fn(*args, **kw)
            for a, g in zip(outs, got):
                assert np.array_equal(a, g), (fn.__name__, t)
                assert not np.isnan(g).all()
            for a in ins:   # new values in place: the next call reads them
                a *= np.float32(-0.75)


def test_prepared_calls_hold_their_arrays_and_check_as_the_bindings(rng):
    """A prepared call holds a reference to each array (released with it): it runs on
    them when nothing else refers to them. _prepare raises what the binding raises for
    bad arguments, and returns None for a callable it cannot prepare or an input the
    binding would copy (non-contiguous: later writes into it would not be seen)."""
    import gc
    import sys
    x = rng.standard_normal((4, 9)).astype(np.float32)
    out = np.empty_like(x)
    n_out = sys.getrefcount(out)
    p = _core._prepare(_core._tanh_forward, out, x.copy())
    assert sys.getrefcount(out) == n_out + 1
    gc.collect()
    out[...] = np.nan
    p()
    want = np.empty_like(x)
    _core._tanh_forward(want, x)
    assert np.array_equal(out, want)
    del p
    assert sys.getrefcount(out) == n_out
    bad = [((np.empty(3, np.float32), np.empty(4, np.float32)), ValueError),
           ((np.empty(3, np.float64), np.empty(3, np.float32)), TypeError),
           ((np.empty(3, np.float32)[::-1], np.empty(3, np.float32)), ValueError),
           ((np.empty(3, np.float32),), TypeError)]
    for args, exc in bad:
        with pytest.raises(exc) as direct:
            _core._tanh_forward(*args)
        with pytest.raises(exc) as prepared:
            _core._prepare(_core._tanh_forward, *args)
        assert str(prepared.value) == str(direct.value)
    assert _core._prepare(_core._tanh_forward, np.empty((4, 5), np.float32), x[:, ::2]) is None
    assert _core._prepare(_core._linear_forward, out, x, np.empty((9, 9), np.float32),
                          None) is None
    assert _core._prepare(len, x) is None and _core._prepare(5) is None
    with pytest.raises(TypeError, match="needs the binding"):
        _core._prepare()
    p = _core._prepare(_core._tanh_forward, out, x)
    with pytest.raises(TypeError, match="takes no arguments"):
        p(1)
    with pytest.raises(TypeError):
        _PREPARED()


def test_run_plan_fills_runs_and_copies(rng):
    """_core._run_plan(calls, inp, src, at, out): inp filled from src[at:], the calls
    run in order (prepared ones and any other callable), and a new array with out's
    values after them returned (C-ordered, of out's dtype); an exception of a call
    stops the run and propagates; arguments checked."""
    inp, mid, out = (np.full((2, 6), np.nan, np.float32) for _ in range(3))
    src = rng.standard_normal(30).astype(np.float32)
    order = []
    calls = (_core._prepare(_core._tanh_forward, mid, inp), lambda: order.append(1),
             _core._prepare(_core._relu_forward, out, mid))
    y = _core._run_plan(calls, inp, src, 5, out)
    assert np.array_equal(inp.ravel(), src[5:17]) and order == [1]
    want = np.maximum(np.tanh(src[5:17]), 0).reshape(2, 6)
    assert np.allclose(y, want, atol=1e-6) and np.array_equal(y, out)
    assert y.flags.owndata and y.flags.c_contiguous and y is not out
    yt = _core._run_plan(calls, inp, src, 18, out.T)   # any array: a C-ordered copy
    assert yt.flags.c_contiguous and np.array_equal(yt, out.T)
    assert np.array_equal(inp.ravel(), src[18:30])
    o64 = out.astype(np.float64)   # not written by the calls
    y64 = _core._run_plan(calls, inp, src, 0, o64)
    assert y64.dtype == np.float64 and np.array_equal(y64, o64) and y64 is not o64
    def boom():
        raise KeyError("boom")
    out[...] = np.nan
    with pytest.raises(KeyError, match="boom"):
        _core._run_plan((calls[0], boom, calls[2]), inp, src, 0, out)
    assert np.isnan(out).all()   # the call after it did not run
    for at in (-1, 19, 31):
        with pytest.raises(ValueError, match=r"src\[at:\] must hold inp's 12 values"):
            _core._run_plan(calls, inp, src, at, out)
    with pytest.raises(ValueError, match="overlap"):
        _core._run_plan(calls, inp, inp.ravel(), 0, out)
    with pytest.raises(TypeError):
        _core._run_plan(list(calls), inp, src, 0, out)
    with pytest.raises(TypeError, match="src must be float32"):
        _core._run_plan(calls, inp, src.astype(np.float64), 0, out)
    with pytest.raises(TypeError):
        _core._run_plan(calls, inp, src, 0, [1.0])


@pytest.mark.parametrize("spec", ["teacher", "student", "conditional", "sn"])
def test_predict_same_bits_as_eval_forward(rng, threads, spec, monkeypatch):
    """Network.predict replays the core calls of an eval-mode forward recorded once per
    batch size: the same output bits as forward(train=False) at batch 1, 3 and 1 again
    and 1 and 2 threads, with every fusion switch; it follows in-place changes of the
    parameters and running statistics (the plan holds views, not copies), and a float64
    input is cast as forward casts it. Conditional and spectral-norm networks take
    forward itself (labels, and W / sigma computed per call)."""
    from distgan import models, nn
    if spec == "sn":
        g, sn = models.dcgan(width=0.25)["discriminator"], True
        shape = (1, 28, 28)
    else:
        kw = {"teacher": dict(width=1.0), "student": dict(width=0.25),
              "conditional": dict(width=0.25, num_classes=10)}[spec]
        g, sn, shape = models.dcgan(**kw)["generator"], False, (100,)
    net = Network(g, shape, seed=1, spectral_norm=sn)
    for l in net.layers:
        if l.type == "batch_norm":
            l.b["running_mean"][...] = 0.1 * rng.standard_normal(l.b["running_mean"].shape)
            l.b["running_var"][...] = rng.uniform(0.5, 2.0, l.b["running_var"].shape)
    for fuse, head in ((True, True), (True, False), (False, False)):
        monkeypatch.setattr(nn, "_FUSE", fuse)
        monkeypatch.setattr(nn, "_FUSE_HEAD", head)
        for N in (1, 3, 1):
            x = rng.standard_normal((N,) + shape).astype(np.float32)
            labels = rng.integers(0, 10, N) if net.needs_labels else None
            for t in (1, 2):
                distgan.set_num_threads(t)
                y = net.forward(x, labels, train=False).copy()
                assert np.array_equal(net.predict(x, labels), y), (spec, fuse, head, N, t)
                assert np.array_equal(net.predict(x.astype(np.float64), labels), y)
            if head and net._plan is not None:   # a generator's calls, each prepared
                assert all(type(c) is _PREPARED for c in net._plan[2]), net._plan[2]
    assert (net._plan is None) == (spec in ("conditional", "sn"))
    if net._plan is not None:   # no fusions: linear and batch norm calls stay partials
        assert any(type(c) is _PREPARED for c in net._plan[2])
    # in-place changes after the plan was made: weights, running statistics
    x = rng.standard_normal((1,) + shape).astype(np.float32)
    labels = rng.integers(0, 10, 1) if net.needs_labels else None
    before = net.predict(x, labels).copy()
    net.params *= np.float32(1.5)
    net.forward(rng.standard_normal((4,) + shape).astype(np.float32),
                rng.integers(0, 10, 4) if net.needs_labels else None, train=True)
    y = net.forward(x, labels, train=False).copy()
    assert not np.array_equal(y, before)
    assert np.array_equal(net.predict(x, labels), y)


def test_predict_keeps_packed_weights_until_they_change(rng, threads, monkeypatch, tmp_path):
    """With keep_packed, predict of one sample packs each head's transposed-convolution
    weights once (_convt_few_pack), and makes the scales of the batch norm before it
    (_bn_eval_scale), and reuses them: forward's bits at 1 and 2 threads; packed again
    only after weights_changed (called by copy_from, reset_parameters and
    GAN.update_ema) or a training-mode forward (new running statistics), and then
    forward's bits for the new weights and statistics. Batches of more samples keep
    none. A GAN sets it on its EMA generator, and its one-image samples follow its
    training steps and a checkpoint's weights."""
    from distgan import models
    packs, scales = [], []
    pack, scale = _core._convt_few_pack, _core._bn_eval_scale
    monkeypatch.setattr(_core, "_convt_few_pack", lambda p, w: packs.append(w.shape) or pack(p, w))
    monkeypatch.setattr(_core, "_bn_eval_scale",
                        lambda s, v, g, e: scales.append(s.shape) or scale(s, v, g, e))
    net = Network(models.dcgan(width=0.25)["generator"], (100,), seed=3)
    for l in net.layers:
        if l.type == "batch_norm":
            l.b["running_var"][...] = rng.uniform(0.5, 2.0, l.b["running_var"].shape)
    net.keep_packed = True
    z = rng.standard_normal((1, 100)).astype(np.float32)
    for t in (1, 2):
        distgan.set_num_threads(t)
        assert np.array_equal(net.predict(z), net.forward(z, train=False))
    assert packs == [(64, 32, 4, 4)] and scales == [(3136,)]   # once, kept
    x8 = rng.standard_normal((8, 100)).astype(np.float32)
    net.forward(x8, train=True)                          # new running statistics
    assert np.array_equal(net.predict(z), net.forward(z, train=False))
    assert len(packs) == len(scales) == 2
    net.buffers[:] = rng.uniform(0.5, 2.0, net.buffers.shape)   # written by hand
    net.weights_changed()
    assert np.array_equal(net.predict(z), net.forward(z, train=False))
    assert len(packs) == len(scales) == 3
    del packs[1:], scales[1:]
    net.params *= np.float32(1.5)
    net.weights_changed()
    for t in (1, 2):
        distgan.set_num_threads(t)
        assert np.array_equal(net.predict(z), net.forward(z, train=False))
    assert len(packs) == 2
    other = Network(models.dcgan(width=0.25)["generator"], (100,), seed=4)
    net.copy_from(other)
    assert np.array_equal(net.predict(z), other.forward(z, train=False))
    net.reset_parameters(seed=5)
    assert np.array_equal(net.predict(z), net.forward(z, train=False)) and len(packs) == 4
    z3 = rng.standard_normal((3, 100)).astype(np.float32)
    assert np.array_equal(net.predict(z3), net.forward(z3, train=False)) and len(packs) == 4

    distgan.set_num_threads(1)
    gan = distgan.GAN(models.dcgan(width=0.25), seed=0)
    assert gan.g_ema.keep_packed and not gan.generator.keep_packed
    real = rng.uniform(-1, 1, (8, 1, 28, 28)).astype(np.float32)
    before = None
    for _ in range(2):
        gan.step(real)
        after = gan.sample(1, seed=7).copy()
        z7 = gan.g_ema._plan[1].copy()   # the noise it drew
        assert np.array_equal(after, gan.g_ema.forward(z7, train=False))
        assert before is None or not np.array_equal(after, before)
        before = after
    gan.save(tmp_path / "g.safetensors")
    back = distgan.GAN.load(tmp_path / "g.safetensors")
    assert back.g_ema.keep_packed and np.array_equal(back.sample(1, seed=7), after)


def test_predict_keeps_no_state_for_a_backward(rng):
    """A backward right after predict raises (the layers' state is the last forward's and
    predict overwrote its buffers); after the next forward it gives forward's gradients.
    Inside frozen_activations predict is forward (the frozen gains), and after the block
    the plan made before it serves again. A wrong input shape is refused as forward
    refuses it."""
    from distgan import models
    net = Network(models.dcgan(width=0.25)["generator"], (100,), seed=2)
    z = rng.standard_normal((2, 100)).astype(np.float32)
    dy = rng.standard_normal((2,) + net.output_shape).astype(np.float32)
    net.forward(z, train=False)
    net.zero_grad()
    dx = net.backward(dy).copy()
    grads = net.grads.copy()
    net.predict(rng.standard_normal((2, 100)).astype(np.float32))
    with pytest.raises(RuntimeError, match="predict"):
        net.backward(dy)
    net.forward(z, train=False)
    net.zero_grad()
    assert np.array_equal(net.backward(dy), dx) and np.array_equal(net.grads, grads)

    z2 = rng.standard_normal((2, 100)).astype(np.float32)
    plan = net._plan
    assert plan is not None and plan[0][0] == 2
    with net.frozen_activations():
        frozen = net.forward(z2, train=False).copy()
        assert np.array_equal(net.predict(z2), frozen)   # z's gains, not z2's
    y = net.forward(z2, train=False).copy()
    assert not np.array_equal(y, frozen)
    assert np.array_equal(net.predict(z2), y) and net._plan is plan   # kept, still right
    with pytest.raises(ValueError, match=r"input must be \(N, 100\)"):
        net.predict(np.zeros((2, 99), np.float32))
