"""Float64 finite-difference gradient checks of distgan.reference.

Per op (ggml test-backend-ops habit: per-op ``eps`` and tolerance): the analytic backward
of the reference, given a random upstream gradient ``dy``, must match the central difference
    dL/dx_i ~ (L(x + eps e_i) - L(x - eps e_i)) / (2 eps),   L(x) = <forward(x), dy>
for every element of every differentiated argument, scored with the normwise rel_err of
conftest.py. Central differences err by O(eps^2 f''') + O(u |L| / eps) (u = 2^-53), so
multilinear ops (linear, conv, embedding, ...) are checked at ~1e-8 and smooth nonlinear
ones at ~1e-7. Inputs of piecewise-linear ops are drawn at least 0.1 away from their kinks
(ggml ``grad_expect``), far beyond eps.

Then one whole-model check along random directions (kann ``kad_check_grad``): a tiny
generator linear -> batch_norm -> relu -> reshape -> conv_transpose2d -> tanh and a tiny
discriminator conv2d -> leaky_relu -> linear with the BCE loss, whose chained reference
backward must give the same directional derivative as finite differences.

The reference is checked against PyTorch in test_ops_vs_torch.py; this file checks the
reference against calculus, so the oracle does not rest on PyTorch alone.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

import distgan.reference as R
from conftest import rel_err


def numeric_grad(L, d, name, eps):
    """Central differences of the scalar L(d) with respect to every element of d[name]."""
    x = d[name]
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        orig = x[i]
        x[i] = orig + eps
        up = L(d)
        x[i] = orig - eps
        down = L(d)
        x[i] = orig
        g[i] = (up - down) / (2 * eps)
    return g


@dataclass(frozen=True)
class GradCase:
    name: str
    make: Callable       # rng -> dict of float64 inputs (and static arguments)
    forward: Callable    # d -> array (layers) or float (losses)
    backward: Callable   # (d, dy) -> dict name -> gradient
    wrt: tuple           # the arguments differentiated
    eps: float
    tol: float


GRAD_CASES = []


def _case(name, make, forward, backward, wrt, eps=1e-6, tol=1e-8):
    GRAD_CASES.append(GradCase(name, make, forward, backward, tuple(wrt), eps, tol))


def _away_from(rng, shape, kink=0.0, margin=0.1, scale=2.0):
    """Values kink +- U(margin, scale): never within ``margin`` of the kink."""
    sign = rng.choice([-1.0, 1.0], size=shape)
    return kink + sign * rng.uniform(margin, scale, size=shape)


# --- linear ---------------------------------------------------------------------------------
for _N, _IN, _OUT in [(1, 3, 2), (4, 5, 3)]:
    _case(f"linear_N{_N}_in{_IN}_out{_OUT}",
          lambda rng, N=_N, IN=_IN, OUT=_OUT: dict(x=rng.normal(size=(N, IN)),
                                                   w=rng.normal(size=(OUT, IN)),
                                                   b=rng.normal(size=OUT)),
          lambda d: R.linear(d["x"], d["w"], d["b"]),
          lambda d, dy: dict(zip(("x", "w", "b"), R.linear_backward(dy, d["x"], d["w"]))),
          ("x", "w", "b"))

# --- conv2d ---------------------------------------------------------------------------------
#          N  C  H  W OC  K  S  P
for _cfg in [(1, 1, 4, 5, 2, 1, 1, 0),
             (2, 2, 5, 4, 2, 3, 1, 1),
             (1, 2, 6, 5, 3, 4, 2, 1),
             (1, 1, 5, 6, 2, 5, 2, 2),
             (2, 1, 5, 5, 1, (2, 3), (1, 2), (2, 0))]:
    def _make(rng, cfg=_cfg):
        N, C, H, W, OC, K, S, P = cfg
        KH, KW = (K, K) if np.ndim(K) == 0 else K
        return dict(x=rng.normal(size=(N, C, H, W)), w=rng.normal(size=(OC, C, KH, KW)),
                    b=rng.normal(size=OC), S=S, P=P)
    _case("conv2d_" + "_".join(map(str, _cfg)), _make,
          lambda d: R.conv2d(d["x"], d["w"], d["b"], stride=d["S"], padding=d["P"]),
          lambda d, dy: dict(zip(("x", "w", "b"), R.conv2d_backward(
              dy, d["x"], d["w"], stride=d["S"], padding=d["P"]))),
          ("x", "w", "b"))

# --- conv_transpose2d -----------------------------------------------------------------------
#          N  C  H  W OC  K  S  P OP
for _cfg in [(1, 1, 3, 4, 2, 1, 1, 0, 0),
             (2, 2, 3, 3, 2, 4, 2, 1, 0),
             (1, 2, 3, 2, 3, 3, 2, 1, 1),
             (1, 1, 2, 3, 2, 5, 3, 2, 2),
             (2, 1, 3, 3, 1, (3, 2), (2, 1), (1, 0), (1, 0))]:
    def _make(rng, cfg=_cfg):
        N, C, H, W, OC, K, S, P, OP = cfg
        KH, KW = (K, K) if np.ndim(K) == 0 else K
        return dict(x=rng.normal(size=(N, C, H, W)), w=rng.normal(size=(C, OC, KH, KW)),
                    b=rng.normal(size=OC), S=S, P=P, OP=OP)
    _case("conv_transpose2d_" + "_".join(map(str, _cfg)), _make,
          lambda d: R.conv_transpose2d(d["x"], d["w"], d["b"], stride=d["S"], padding=d["P"],
                                       output_padding=d["OP"]),
          lambda d, dy: dict(zip(("x", "w", "b"), R.conv_transpose2d_backward(
              dy, d["x"], d["w"], stride=d["S"], padding=d["P"], output_padding=d["OP"]))),
          ("x", "w", "b"))

# --- batch_norm (training: mean and var depend on x; eval: running statistics) -------------
for _shape, _training, _affine in [((5, 3), True, True), ((2, 2, 3, 2), True, True),
                                   ((1, 2, 2, 3), True, False), ((3, 2), False, True),
                                   ((2, 2, 2, 3), False, True)]:
    def _make(rng, shape=_shape, affine=_affine):
        C = shape[1]
        return dict(x=rng.normal(loc=1.0, scale=2.0, size=shape),
                    g=rng.normal(loc=1.0, scale=0.5, size=C) if affine else None,
                    b=rng.normal(size=C) if affine else None,
                    rm=rng.normal(size=C), rv=rng.uniform(0.5, 2.0, size=C))

    def _fwd(d, training=_training):
        # training mode is given no running statistics, so the forward has no side effect
        rs = {} if training else dict(running_mean=d["rm"], running_var=d["rv"])
        return R.batch_norm(d["x"], d["g"], d["b"], eps=1e-3, training=training, **rs)

    def _bwd(d, dy, training=_training):
        rs = {} if training else dict(running_mean=d["rm"], running_var=d["rv"])
        dx, dg, db = R.batch_norm_backward(dy, d["x"], d["g"], eps=1e-3, training=training, **rs)
        return dict(x=dx, g=dg, b=db)

    _case(f"batch_norm_{'train' if _training else 'eval'}_" + "x".join(map(str, _shape))
          + ("" if _affine else "_noaffine"),
          _make, _fwd, _bwd, ("x", "g", "b") if _affine else ("x",), eps=1e-5, tol=1e-7)

# --- activations ----------------------------------------------------------------------------
_case("relu", lambda rng: dict(x=_away_from(rng, (3, 5))),
      lambda d: R.relu(d["x"]), lambda d, dy: dict(x=R.relu_backward(dy, d["x"])), ("x",))
for _slope in (0.2, 0.01):
    _case(f"leaky_relu_{_slope}", lambda rng: dict(x=_away_from(rng, (3, 5))),
          lambda d, s=_slope: R.leaky_relu(d["x"], s),
          lambda d, dy, s=_slope: dict(x=R.leaky_relu_backward(dy, d["x"], s)), ("x",))
_case("tanh", lambda rng: dict(x=rng.normal(scale=1.5, size=(3, 5))),
      lambda d: R.tanh(d["x"]), lambda d, dy: dict(x=R.tanh_backward(dy, d["x"])), ("x",),
      eps=1e-5, tol=1e-7)
_case("sigmoid", lambda rng: dict(x=rng.normal(scale=3.0, size=(3, 5))),
      lambda d: R.sigmoid(d["x"]), lambda d, dy: dict(x=R.sigmoid_backward(dy, d["x"])), ("x",),
      eps=1e-5, tol=1e-7)

# --- embedding ------------------------------------------------------------------------------
_case("embedding", lambda rng: dict(labels=np.array([2, 0, 2, 3, 2]), w=rng.normal(size=(4, 3))),
      lambda d: R.embedding(d["labels"], d["w"]),
      lambda d, dy: dict(w=R.embedding_backward(dy, d["labels"], d["w"])), ("w",))

# --- losses (scalar; dy is the upstream scalar gradient) ------------------------------------
_case("bce_logits", lambda rng: dict(x=rng.normal(scale=3.0, size=(2, 4)),
                                     t=rng.uniform(size=(2, 4))),
      lambda d: R.binary_cross_entropy_with_logits(d["x"], d["t"]),
      lambda d, dy: dict(x=R.binary_cross_entropy_with_logits_backward(dy, d["x"], d["t"])),
      ("x",), eps=1e-5, tol=1e-7)
_case("hinge_d", lambda rng: dict(real=_away_from(rng, 6, kink=1.0),
                                  fake=_away_from(rng, 5, kink=-1.0)),
      lambda d: R.hinge_d(d["real"], d["fake"]),
      lambda d, dy: dict(zip(("real", "fake"), R.hinge_d_backward(dy, d["real"], d["fake"]))),
      ("real", "fake"))
_case("hinge_g", lambda rng: dict(fake=rng.normal(size=7)),
      lambda d: R.hinge_g(d["fake"]),
      lambda d, dy: dict(fake=R.hinge_g_backward(dy, d["fake"])), ("fake",))
_case("least_squares", lambda rng: dict(x=rng.normal(size=(3, 3))),
      lambda d: R.least_squares(d["x"], -1.0),
      lambda d, dy: dict(x=R.least_squares_backward(dy, d["x"], -1.0)), ("x",))


def _l1_make(rng):
    y = rng.normal(size=(2, 5))
    return dict(x=y + _away_from(rng, (2, 5)), y=y)


_case("l1_loss", _l1_make, lambda d: R.l1_loss(d["x"], d["y"]),
      lambda d, dy: dict(zip(("x", "y"), R.l1_loss_backward(dy, d["x"], d["y"]))), ("x", "y"))
_case("mse_loss", lambda rng: dict(x=rng.normal(size=(2, 5)), y=rng.normal(size=(2, 5))),
      lambda d: R.mse_loss(d["x"], d["y"]),
      lambda d, dy: dict(zip(("x", "y"), R.mse_loss_backward(dy, d["x"], d["y"]))), ("x", "y"))
_case("cross_entropy", lambda rng: dict(z=rng.normal(scale=2.0, size=(4, 5)),
                                        labels=np.array([0, 4, 4, 2])),
      lambda d: R.cross_entropy(d["z"], d["labels"]),
      lambda d, dy: dict(z=R.cross_entropy_backward(dy, d["z"], d["labels"])), ("z",),
      eps=1e-5, tol=1e-7)
for _binary, _shape in ((True, (3, 2)), (False, (3, 4))):
    for _T in (0.5, 1.0, 3.0):
        _case(f"tempered_kl_{'binary' if _binary else 'categorical'}_T{_T}",
              lambda rng, shape=_shape: dict(s=rng.normal(scale=2.0, size=shape),
                                             t=rng.normal(scale=2.0, size=shape)),
              lambda d, T=_T, b=_binary: R.tempered_kl(d["s"], d["t"], T, binary=b),
              lambda d, dy, T=_T, b=_binary: dict(
                  s=R.tempered_kl_backward(dy, d["s"], d["t"], T, binary=b)),
              ("s",), eps=1e-5, tol=1e-7)


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.name for c in GRAD_CASES])
def test_gradcheck(case, rng):
    d = case.make(rng)
    out = case.forward(d)
    if np.ndim(out) == 0:                        # a loss: L = dy * loss
        dy = 1.3
        L = lambda d: dy * case.forward(d)       # noqa: E731
    else:                                        # a layer: L = <forward(x), dy>
        assert out.dtype == np.float64
        dy = rng.normal(size=out.shape)
        L = lambda d: float(np.sum(case.forward(d) * dy))  # noqa: E731
    analytic = case.backward(d, dy)
    for name in case.wrt:
        num = numeric_grad(L, d, name, case.eps)
        assert analytic[name].dtype == np.float64
        err = rel_err(analytic[name], num)
        assert err <= case.tol, f"{case.name}: d{name} rel_err {err:.2e} > {case.tol:g}"


def test_every_differentiable_op_is_checked():
    checked = {c.name for c in GRAD_CASES}
    for op in R.__all__:
        if op.endswith("_backward") or op in ("adam_step", "ema_update"):
            continue
        alias = {"binary_cross_entropy_with_logits": "bce_logits"}.get(op, op)
        assert any(n.startswith(alias) for n in checked), op


# --------------------------------------------------------------------------------------------
# whole model: directional derivative of a tiny GAN generator loss (kann kad_check_grad)
# --------------------------------------------------------------------------------------------

Z, C0, S0, C1, N = 3, 2, 3, 3, 4     # latent, G channels, G start size, D channels, batch


def _tiny_gan_params(rng):
    return dict(
        z=rng.normal(size=(N, Z)),
        g_w1=rng.normal(size=(C0 * S0 * S0, Z)) / np.sqrt(Z), g_b1=rng.normal(size=C0 * S0 * S0),
        g_gamma=rng.normal(loc=1.0, scale=0.3, size=C0 * S0 * S0),
        g_beta=rng.normal(scale=0.3, size=C0 * S0 * S0),
        g_w2=rng.normal(size=(C0, 1, 4, 4)) / 4, g_b2=rng.normal(size=1),
        d_w1=rng.normal(size=(C1, 1, 4, 4)) / 4, d_b1=rng.normal(size=C1),
        d_w2=rng.normal(size=(1, C1 * S0 * S0)) / np.sqrt(C1 * S0 * S0), d_b2=rng.normal(size=1),
    )


def _tiny_gan_forward(p):
    """Non-saturating generator loss BCE(D(G(z)), 1) -> (loss, cache of activations)."""
    c = {}
    # G: linear -> batch_norm -> relu -> reshape -> conv_transpose2d(4x4, s2, p1) -> tanh
    c["h1"] = R.linear(p["z"], p["g_w1"], p["g_b1"])                        # (N, C0*S0*S0)
    c["h2"] = R.batch_norm(c["h1"], p["g_gamma"], p["g_beta"], training=True)
    c["h3"] = R.relu(c["h2"]).reshape(N, C0, S0, S0)
    c["h4"] = R.conv_transpose2d(c["h3"], p["g_w2"], p["g_b2"], stride=2, padding=1)
    c["x"] = R.tanh(c["h4"])                                                # (N, 1, 2S0, 2S0)
    # D: conv2d(4x4, s2, p1) -> leaky_relu(0.2) -> linear -> logit
    c["d1"] = R.conv2d(c["x"], p["d_w1"], p["d_b1"], stride=2, padding=1)   # (N, C1, S0, S0)
    c["d2"] = R.leaky_relu(c["d1"], 0.2).reshape(N, C1 * S0 * S0)
    c["logit"] = R.linear(c["d2"], p["d_w2"], p["d_b2"])                    # (N, 1)
    loss = R.binary_cross_entropy_with_logits(c["logit"], np.ones((N, 1)))
    return loss, c


def _tiny_gan_backward(p, c):
    """The reference backward functions chained in reverse order: dL/d(every parameter)."""
    g = {}
    dlogit = R.binary_cross_entropy_with_logits_backward(1.0, c["logit"], np.ones((N, 1)))
    dd2, g["d_w2"], g["d_b2"] = R.linear_backward(dlogit, c["d2"], p["d_w2"])
    dd1 = R.leaky_relu_backward(dd2.reshape(c["d1"].shape), c["d1"], 0.2)
    dx, g["d_w1"], g["d_b1"] = R.conv2d_backward(dd1, c["x"], p["d_w1"], stride=2, padding=1)
    dh4 = R.tanh_backward(dx, c["h4"])
    dh3, g["g_w2"], g["g_b2"] = R.conv_transpose2d_backward(dh4, c["h3"], p["g_w2"],
                                                            stride=2, padding=1)
    dh2 = R.relu_backward(dh3.reshape(c["h2"].shape), c["h2"])
    dh1, g["g_gamma"], g["g_beta"] = R.batch_norm_backward(dh2, c["h1"], p["g_gamma"],
                                                           training=True)
    g["z"], g["g_w1"], g["g_b1"] = R.linear_backward(dh1, p["z"], p["g_w1"])
    return g


def test_whole_model_directional_derivative(rng):
    p = _tiny_gan_params(rng)
    loss, cache = _tiny_gan_forward(p)
    grads = _tiny_gan_backward(p, cache)
    assert set(grads) == set(p)
    eps = 1e-6
    for _ in range(3):
        u = {k: rng.normal(size=v.shape) for k, v in p.items()}
        norm = np.sqrt(sum(np.sum(v * v) for v in u.values()))
        u = {k: v / norm for k, v in u.items()}
        analytic = sum(np.sum(grads[k] * u[k]) for k in p)
        plus = {k: p[k] + eps * u[k] for k in p}
        minus = {k: p[k] - eps * u[k] for k in p}
        (lp, cp), (lm, cm) = _tiny_gan_forward(plus), _tiny_gan_forward(minus)
        # no ReLU / LeakyReLU input changed sign between the two ends: no kink was crossed
        for key in ("h2", "d1"):
            assert np.array_equal(cp[key] > 0, cm[key] > 0), f"kink crossed in {key}"
            assert np.array_equal(cp[key] > 0, cache[key] > 0), f"kink crossed in {key}"
        numeric = (lp - lm) / (2 * eps)
        err = abs(numeric - analytic) / max(abs(analytic), 1e-30)
        assert err <= 1e-6, f"directional derivative {analytic:.10g} vs FD {numeric:.10g}"
        assert abs(analytic) > 1e-4, "a vanishing directional derivative checks nothing"
