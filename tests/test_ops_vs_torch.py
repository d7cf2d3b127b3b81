"""Every op of distgan.ops and of distgan.reference against PyTorch autograd (float32).

The cases (shapes, strides, paddings, ...) live in tests/cases.py, shared with
tests/error_table.py. Forward outputs must agree to rel_err <= 1e-4, gradients to 1e-3
(rel_err: normwise max relative error, see conftest.py).
"""
import numpy as np
import pytest

from cases import BWD_TOL, CASES, DLOSS, FWD_TOL, OPS
from conftest import rel_err


def _check(mine, theirs, tol, what, case):
    assert set(mine) == set(theirs), f"{case.id}: {what} outputs {set(mine)} vs {set(theirs)}"
    for name in theirs:
        a, b = mine[name], theirs[name]
        if isinstance(b, np.ndarray) and b.ndim > 0:
            assert isinstance(a, np.ndarray), f"{case.id}: {name} is {type(a)}, not an array"
            assert a.shape == b.shape, f"{case.id}: {name} shape {a.shape} != torch {b.shape}"
            assert a.dtype == np.float32, f"{case.id}: {name} dtype {a.dtype} != float32"
        elif name == "loss":
            assert isinstance(a, float), f"{case.id}: loss is {type(a)}, not a Python float"
        err = rel_err(a, b)
        assert err <= tol, f"{case.id}: {what} {name}: rel_err {err:.3e} > {tol:g}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_vs_torch(case, impl, torch, rng):
    inputs = case.make(rng)
    fwd, bwd = case.run(impl, inputs)
    tfwd, tbwd = case.run_torch(torch, inputs)
    _check(fwd, tfwd, FWD_TOL, "forward", case)
    _check(bwd, tbwd, BWD_TOL, "backward", case)


def test_every_op_has_cases():
    import distgan.reference as ref
    documented = {n for n in ref.__all__ if not n.endswith("_backward")}
    assert documented == set(OPS)


@pytest.mark.parametrize("binary,shape,T", [(True, (10,), 2.0), (True, (2, 3), 0.5),
                                            (False, (5, 4), 3.0), (False, (1, 7), 1.0)])
def test_tempered_kl_gradient_closed_form(impl, torch, rng, binary, shape, T):
    """dL/ds = dy * T * (q - p) / N, computed here in float64 from the probabilities,
    and equal to torch autograd of the formula (Hinton et al. 2015 with the T^2 factor)."""
    s = rng.normal(scale=2.0, size=shape).astype(np.float32)
    t = rng.normal(scale=2.0, size=shape).astype(np.float32)
    s64, t64 = s.astype(np.float64) / T, t.astype(np.float64) / T
    if binary:
        p, q, N = 1 / (1 + np.exp(-t64)), 1 / (1 + np.exp(-s64)), s.size
    else:
        P = np.exp(t64 - t64.max(1, keepdims=True))
        Q = np.exp(s64 - s64.max(1, keepdims=True))
        p, q, N = P / P.sum(1, keepdims=True), Q / Q.sum(1, keepdims=True), shape[0]
    expected = DLOSS * T * (q - p) / N
    ds = impl.tempered_kl_backward(DLOSS, s, t, T, binary=binary)
    assert rel_err(ds, expected) <= 1e-5

    from cases import tempered_kl_torch
    st = torch.tensor(s, requires_grad=True)
    loss = tempered_kl_torch(torch, st, torch.tensor(t), T, binary)
    (g,) = torch.autograd.grad(loss * DLOSS, st)
    assert rel_err(g.double().numpy(), expected) <= BWD_TOL


def test_tempered_kl_zero_when_equal(impl, rng):
    """KL(P || P) = 0 and its gradient vanishes, at any temperature."""
    for binary, shape in ((True, (9,)), (False, (4, 6))):
        s = rng.normal(scale=3.0, size=shape).astype(np.float32)
        for T in (0.5, 1.0, 4.0):
            assert abs(impl.tempered_kl(s, s, T, binary=binary)) <= 1e-6
            assert np.max(np.abs(impl.tempered_kl_backward(1.0, s, s, T, binary=binary))) <= 1e-6


def test_batch_norm_running_stats_over_steps(impl, torch, rng):
    """Five training steps update the running statistics as torch does; eval then uses them."""
    F = torch.nn.functional
    C = 3
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    trm, trv = torch.zeros(C), torch.ones(C)
    for _ in range(5):
        x = rng.normal(loc=2.0, scale=3.0, size=(4, C, 3, 2)).astype(np.float32)
        impl.batch_norm(x, running_mean=rm, running_var=rv, training=True, momentum=0.2)
        F.batch_norm(torch.tensor(x), trm, trv, training=True, momentum=0.2)
    assert rel_err(rm, trm.double().numpy()) <= FWD_TOL
    assert rel_err(rv, trv.double().numpy()) <= FWD_TOL
    x = rng.normal(size=(2, C, 3, 3)).astype(np.float32)
    y = impl.batch_norm(x, running_mean=rm, running_var=rv, training=False)
    ty = F.batch_norm(torch.tensor(x), trm, trv, training=False)
    assert rel_err(y, ty.double().numpy()) <= FWD_TOL


def _conv_geometry():
    """Random valid conv / conv-transpose geometries (hypothesis strategy)."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies

    @st.composite
    def geometry(draw):
        KH, KW = draw(st.integers(1, 5)), draw(st.integers(1, 5))
        SH, SW = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        PH, PW = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        # conv2d needs H + 2P >= K; conv_transpose2d needs its output size >= 1
        H = draw(st.integers(max(1, KH - 2 * PH), 9))
        W = draw(st.integers(max(1, KW - 2 * PW), 9))
        return dict(N=draw(st.integers(1, 3)), C=draw(st.integers(1, 4)), H=H, W=W,
                    OC=draw(st.integers(1, 4)), KH=KH, KW=KW, SH=SH, SW=SW, PH=PH, PW=PW,
                    OPH=draw(st.integers(0, SH - 1)), OPW=draw(st.integers(0, SW - 1)),
                    seed=draw(st.integers(0, 2**32 - 1)))
    return hyp, geometry()


def test_conv_random_geometry_vs_torch(impl, torch):
    """Property test over random kernel/stride/padding/output_padding combinations."""
    hyp, geometry = _conv_geometry()
    F = torch.nn.functional

    @hyp.settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[hyp.HealthCheck.function_scoped_fixture])
    @hyp.given(geometry)
    def check(g):
        rng = np.random.default_rng(g["seed"])
        S, P, OP = (g["SH"], g["SW"]), (g["PH"], g["PW"]), (g["OPH"], g["OPW"])
        x = rng.normal(size=(g["N"], g["C"], g["H"], g["W"])).astype(np.float32)
        for transposed in (False, True):
            if transposed:
                w = rng.normal(size=(g["C"], g["OC"], g["KH"], g["KW"])).astype(np.float32)
                OH = (g["H"] - 1) * g["SH"] - 2 * g["PH"] + g["KH"] + g["OPH"]
                OW = (g["W"] - 1) * g["SW"] - 2 * g["PW"] + g["KW"] + g["OPW"]
                if OH < 1 or OW < 1:
                    continue
                kw = dict(stride=S, padding=P, output_padding=OP)
                fwd, bwd, tfn = (impl.conv_transpose2d, impl.conv_transpose2d_backward,
                                 F.conv_transpose2d)
            else:
                w = rng.normal(size=(g["OC"], g["C"], g["KH"], g["KW"])).astype(np.float32)
                kw = dict(stride=S, padding=P)
                fwd, bwd, tfn = impl.conv2d, impl.conv2d_backward, F.conv2d
            b = rng.normal(size=w.shape[1 if transposed else 0]).astype(np.float32)
            y = fwd(x, w, b, **kw)
            xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
            yt = tfn(xt, wt, bt, **kw)
            assert y.shape == tuple(yt.shape), (g, transposed)
            assert rel_err(y, yt.detach().double().numpy()) <= FWD_TOL, (g, transposed)
            dy = rng.normal(size=y.shape).astype(np.float32)
            grads = torch.autograd.grad(yt, (xt, wt, bt), torch.tensor(dy))
            for name, got, want in zip(("dx", "dweight", "dbias"), bwd(dy, x, w, **kw), grads):
                err = rel_err(got, want.double().numpy())
                assert err <= BWD_TOL, (g, transposed, name, err)

    check()


def test_losses_stable_at_extreme_logits(impl, torch):
    """Saturated logits (|x| up to 200, far past exp overflow in float32) give finite losses
    and gradients equal to PyTorch's stable float64 formulas: the losses must be computed
    from the logits (softplus, log-softmax), never as log(sigmoid(x)) or log(1 - p)."""
    F = torch.nn.functional
    x = np.array([-200.0, -90.0, -30.0, -1.0, 0.0, 2.0, 40.0, 95.0, 200.0], np.float32)
    y = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0], np.float32)
    t = x[::-1].copy()
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tt = torch.tensor(t, dtype=torch.float64)

    def check(name, got, want):
        got = np.asarray(got, dtype=np.float64)
        assert np.all(np.isfinite(got)), f"{name}: not finite: {got}"
        assert rel_err(got, want.detach().numpy()) <= 1e-4, f"{name}: {got} vs {want}"

    bce = F.binary_cross_entropy_with_logits(xt, torch.tensor(y, dtype=torch.float64))
    check("bce", impl.binary_cross_entropy_with_logits(x, y), bce)
    check("bce grad", impl.binary_cross_entropy_with_logits_backward(1.0, x, y),
          torch.autograd.grad(bce, xt)[0])
    for T in (0.5, 2.0):
        p = torch.sigmoid(tt / T)
        kl = T * T * (p * (F.logsigmoid(tt / T) - F.logsigmoid(xt / T)) + (1 - p) * (
            F.logsigmoid(-tt / T) - F.logsigmoid(-xt / T))).mean()
        check(f"binary tempered_kl T={T}", impl.tempered_kl(x, t, T, binary=True), kl)
        check(f"binary tempered_kl grad T={T}",
              impl.tempered_kl_backward(1.0, x, t, T, binary=True),
              torch.autograd.grad(kl, xt)[0])
    z = np.stack([x, t, x / 2 + 300.0]).astype(np.float32)     # rows (3, 9), one shifted by 300
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    labels = np.array([0, 4, 8])
    ce = F.cross_entropy(zt, torch.tensor(labels))
    check("cross_entropy", impl.cross_entropy(z, labels), ce)
    check("cross_entropy grad", impl.cross_entropy_backward(1.0, z, labels),
          torch.autograd.grad(ce, zt)[0])
    zs = z[::-1].copy()
    T = 2.0
    kl = T * T * F.kl_div(F.log_softmax(zt / T, 1),
                          F.log_softmax(torch.tensor(zs, dtype=torch.float64) / T, 1),
                          log_target=True, reduction="batchmean")
    check("categorical tempered_kl", impl.tempered_kl(z, zs, T), kl)
    check("categorical tempered_kl grad", impl.tempered_kl_backward(1.0, z, zs, T),
          torch.autograd.grad(kl, zt)[0])
    check("sigmoid", impl.sigmoid(x), torch.sigmoid(xt))
    check("sigmoid grad", impl.sigmoid_backward(np.ones_like(x), x),
          torch.autograd.grad(torch.sigmoid(xt).sum(), xt)[0])
    check("tanh", impl.tanh(x), torch.tanh(xt))


@pytest.mark.parametrize("N,OC,H", [(5, 8, 16), (3, 12, 28), (2, 4, 32), (64, 64, 28)])
@pytest.mark.parametrize("act,slope", [(1, 0.0), (2, 0.2), (2, 0.0)])
def test_conv2d_fused_activation_vs_torch(core, torch, rng, N, OC, H, act, slope):
    """``_conv2d_forward(..., act=)`` (a ReLU or LeakyReLU fused into a one-channel
    conv2d, the first layer of a DCGAN critic) against F.conv2d then the activation,
    and ``_conv2d_backward(..., out=, act=)``, whose dout is the gradient of the
    activation's output, against autograd through both (accumulating onto 0.5)."""
    g = (N, 1, H, H, OC, 4, 4, 2, 2, 1, 1, H // 2, H // 2)
    if not core._conv2d_act_fits(*g):
        pytest.skip("the fused kernels need AVX-512")
    F = torch.nn.functional
    x = rng.normal(size=(N, 1, H, H)).astype(np.float32)
    w = (rng.normal(size=(OC, 1, 4, 4)) / 4).astype(np.float32)
    b = rng.normal(size=OC).astype(np.float32)
    ws = np.empty(core._conv2d_workspace_size(*g), np.float32)
    y = np.empty((N, OC, H // 2, H // 2), np.float32)
    core._conv2d_forward(y, ws, x, w, b, 2, 2, 1, 1, act=act, slope=slope)
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    zt = F.conv2d(xt, wt, bt, stride=2, padding=1)
    yt = F.relu(zt) if act == 1 else F.leaky_relu(zt, slope)
    assert rel_err(y, yt.detach().double().numpy()) <= FWD_TOL
    dy = rng.normal(size=y.shape).astype(np.float32)
    grads = torch.autograd.grad(yt, (xt, wt, bt), torch.tensor(dy))
    mine = [np.full(a.shape, 0.5, np.float32) for a in (x, w, b)]
    core._conv2d_backward(*mine, ws, dy, x, w, 2, 2, 1, 1, out=y, act=act, slope=slope)
    for name, got, want in zip(("dx", "dweight", "dbias"), mine, grads):
        err = rel_err(got - 0.5, want.double().numpy())
        assert err <= BWD_TOL, (name, err)


def test_conv2d_fused_activation_errors(core):
    """act is fused only where _conv2d_act_fits (else a ValueError, not a silently plain
    conv), never with a kept col, with a valid code and slope, and the fused backward
    needs the forward's output."""
    x = np.ones((2, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 4, 4), np.float32)
    g = (2, 3, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4)
    ws = np.empty(core._conv2d_workspace_size(*g), np.float32)
    y = np.empty((2, 4, 4, 4), np.float32)
    assert not core._conv2d_act_fits(*g)
    with pytest.raises(ValueError, match="act is fused only where _conv2d_act_fits"):
        core._conv2d_forward(y, ws, x, w, None, 2, 2, 1, 1, act=2, slope=0.2)
    with pytest.raises(ValueError, match="act is fused only where _conv2d_act_fits"):
        core._conv2d_backward(None, np.zeros_like(w), None, ws, y, x, w, 2, 2, 1, 1, out=y,
                              act=1)
    x1, w1 = np.ones((2, 1, 8, 8), np.float32), np.ones((4, 1, 4, 4), np.float32)
    g1 = (2, 1, 8, 8, 4, 4, 4, 2, 2, 1, 1, 4, 4)
    ws1 = np.empty(core._conv2d_workspace_size(*g1), np.float32)
    with pytest.raises(ValueError, match="act must be 0"):
        core._conv2d_forward(y, ws1, x1, w1, None, 2, 2, 1, 1, act=3)
    with pytest.raises(ValueError, match="slope must be >= 0"):
        core._conv2d_forward(y, ws1, x1, w1, None, 2, 2, 1, 1, act=2, slope=-0.1)
    if core._conv2d_act_fits(*g1):
        with pytest.raises(ValueError, match="act cannot be fused with a kept col"):
            core._conv2d_forward(y, ws1, x1, w1, None, 2, 2, 1, 1,
                                 col=np.empty((16, 32), np.float32), act=1)
        with pytest.raises(ValueError, match="out .the fused forward's output. is required"):
            core._conv2d_backward(None, np.zeros_like(w1), None, ws1, y, x1, w1, 2, 2, 1, 1,
                                  act=1)
