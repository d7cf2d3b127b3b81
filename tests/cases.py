"""Test cases of every distgan op against PyTorch, shared by tests/test_ops_vs_torch.py and
tests/error_table.py (so the pytest run and the printed table measure the same thing).

A :class:`Case` holds
  make(rng)            -> dict of inputs (float32 NumPy arrays, ints, floats),
  run(impl, inp)       -> (forward, backward): two dicts name -> array/float, computed by
                          ``impl`` (distgan.ops or distgan.reference, same API),
  run_torch(torch, inp)-> the same two dicts from PyTorch (float32, autograd).
The comparison is rel_err (conftest.py) per named output: <= FWD_TOL for forward outputs,
<= BWD_TOL for gradients.

Shapes cover batch 1, odd and non-square sizes, stride 1..3, padding 0..2, output_padding
where valid, rectangular kernels, several channel counts and kernel sizes 1..5.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

FWD_TOL = 1e-4
BWD_TOL = 1e-3
DLOSS = 1.7          # upstream scalar gradient of every loss (not 1, to catch a dropped factor)


@dataclass(frozen=True)
class Case:
    op: str
    name: str
    make: Callable
    run: Callable
    run_torch: Callable

    @property
    def id(self):
        return f"{self.op}-{self.name}"


def _f32(a):
    return np.asarray(a, dtype=np.float32)


def _np(t):
    """torch tensor / python number -> float64 NumPy array (for comparison only)."""
    if hasattr(t, "detach"):
        return t.detach().cpu().double().numpy()
    return np.asarray(t, dtype=np.float64)


def _T(torch, a, grad=False):
    """float32 NumPy array -> torch tensor (a copy: torch never touches our buffers)."""
    return torch.tensor(np.array(a, dtype=np.float32), requires_grad=grad)


def _grads(torch, out, inputs, dy):
    """Gradients of <out, dy> with respect to ``inputs`` (torch autograd)."""
    dy = _T(torch, dy) if isinstance(dy, np.ndarray) else torch.tensor(dy, dtype=out.dtype)
    return [_np(g) for g in torch.autograd.grad(out, inputs, dy)]


CASES = []


def _add(op, name, make, run, run_torch):
    CASES.append(Case(op, name, make, run, run_torch))


# ----------------------------------------------------------------------------------------
# linear
# ----------------------------------------------------------------------------------------

def _linear_case(N, IN, OUT, bias):
    def make(rng):
        return dict(x=_f32(rng.normal(size=(N, IN))),
                    w=_f32(rng.normal(size=(OUT, IN)) / np.sqrt(IN)),
                    b=_f32(rng.normal(size=OUT)) if bias else None,
                    dy=_f32(rng.normal(size=(N, OUT))))

    def run(impl, d):
        y = impl.linear(d["x"], d["w"], d["b"])
        dx, dw, db = impl.linear_backward(d["dy"], d["x"], d["w"])
        return dict(y=y), dict(dx=dx, dweight=dw, dbias=db)

    def run_torch(torch, d):
        F = torch.nn.functional
        x, w = _T(torch, d["x"], True), _T(torch, d["w"], True)
        # a zero bias gives the bias-free output and still yields dbias
        b = _T(torch, d["b"] if d["b"] is not None else np.zeros(OUT), True)
        y = F.linear(x, w, b)
        dx, dw, db = _grads(torch, y, (x, w, b), d["dy"])
        return dict(y=_np(y)), dict(dx=dx, dweight=dw, dbias=db)

    _add("linear", f"N{N}_in{IN}_out{OUT}{'' if bias else '_nobias'}", make, run, run_torch)


for _args in [(1, 3, 2, True), (5, 7, 4, True), (4, 16, 9, False), (3, 1, 5, True),
              (6, 100, 33, True)]:
    _linear_case(*_args)


# ----------------------------------------------------------------------------------------
# conv2d
# ----------------------------------------------------------------------------------------

def _pair(v):
    return (v, v) if np.ndim(v) == 0 else tuple(v)


def _conv2d_case(N, C, H, W, OC, K, S, P, bias=True):
    KH, KW = _pair(K)
    SH, SW = _pair(S)
    PH, PW = _pair(P)
    OH = (H + 2 * PH - KH) // SH + 1
    OW = (W + 2 * PW - KW) // SW + 1
    stride = S if np.ndim(S) == 0 else (SH, SW)
    padding = P if np.ndim(P) == 0 else (PH, PW)

    def make(rng):
        return dict(x=_f32(rng.normal(size=(N, C, H, W))),
                    w=_f32(rng.normal(size=(OC, C, KH, KW)) / np.sqrt(C * KH * KW)),
                    b=_f32(rng.normal(size=OC)) if bias else None,
                    dy=_f32(rng.normal(size=(N, OC, OH, OW))))

    def run(impl, d):
        y = impl.conv2d(d["x"], d["w"], d["b"], stride=stride, padding=padding)
        dx, dw, db = impl.conv2d_backward(d["dy"], d["x"], d["w"], stride=stride,
                                          padding=padding)
        return dict(y=y), dict(dx=dx, dweight=dw, dbias=db)

    def run_torch(torch, d):
        F = torch.nn.functional
        x, w = _T(torch, d["x"], True), _T(torch, d["w"], True)
        b = _T(torch, d["b"] if d["b"] is not None else np.zeros(OC), True)
        y = F.conv2d(x, w, b, stride=(SH, SW), padding=(PH, PW))
        dx, dw, db = _grads(torch, y, (x, w, b), d["dy"])
        return dict(y=_np(y)), dict(dx=dx, dweight=dw, dbias=db)

    name = f"x{N}x{C}x{H}x{W}_oc{OC}_k{KH}x{KW}_s{SH}x{SW}_p{PH}x{PW}" + ("" if bias else "_nobias")
    _add("conv2d", name, make, run, run_torch)


#            N  C  H  W OC  K       S       P
for _args in [(1, 1, 5, 5, 1, 1, 1, 0),
              (2, 3, 7, 5, 4, 3, 1, 1),
              (1, 2, 8, 6, 3, 4, 2, 1),          # the DCGAN discriminator block
              (3, 4, 9, 7, 2, 5, 2, 2),
              (2, 3, 6, 9, 5, 2, 2, 0),
              (2, 2, 5, 6, 3, 3, 2, 2),
              (1, 3, 7, 7, 2, 5, 1, 2),
              (2, 5, 4, 4, 8, 4, 1, 0),          # kernel = whole input
              (2, 2, 6, 7, 3, (3, 2), (2, 1), (1, 0))]:
    _conv2d_case(*_args)
_conv2d_case(2, 3, 6, 5, 2, 3, 2, 1, bias=False)


# ----------------------------------------------------------------------------------------
# conv_transpose2d
# ----------------------------------------------------------------------------------------

def _conv_transpose2d_case(N, C, H, W, OC, K, S, P, OP, bias=True):
    KH, KW = _pair(K)
    SH, SW = _pair(S)
    PH, PW = _pair(P)
    OPH, OPW = _pair(OP)
    OH = (H - 1) * SH - 2 * PH + KH + OPH
    OW = (W - 1) * SW - 2 * PW + KW + OPW
    kw = dict(stride=S if np.ndim(S) == 0 else (SH, SW),
              padding=P if np.ndim(P) == 0 else (PH, PW),
              output_padding=OP if np.ndim(OP) == 0 else (OPH, OPW))

    def make(rng):
        return dict(x=_f32(rng.normal(size=(N, C, H, W))),
                    w=_f32(rng.normal(size=(C, OC, KH, KW)) / np.sqrt(C * KH * KW)),
                    b=_f32(rng.normal(size=OC)) if bias else None,
                    dy=_f32(rng.normal(size=(N, OC, OH, OW))))

    def run(impl, d):
        y = impl.conv_transpose2d(d["x"], d["w"], d["b"], **kw)
        dx, dw, db = impl.conv_transpose2d_backward(d["dy"], d["x"], d["w"], **kw)
        return dict(y=y), dict(dx=dx, dweight=dw, dbias=db)

    def run_torch(torch, d):
        F = torch.nn.functional
        x, w = _T(torch, d["x"], True), _T(torch, d["w"], True)
        b = _T(torch, d["b"] if d["b"] is not None else np.zeros(OC), True)
        y = F.conv_transpose2d(x, w, b, stride=(SH, SW), padding=(PH, PW),
                               output_padding=(OPH, OPW))
        dx, dw, db = _grads(torch, y, (x, w, b), d["dy"])
        return dict(y=_np(y)), dict(dx=dx, dweight=dw, dbias=db)

    name = (f"x{N}x{C}x{H}x{W}_oc{OC}_k{KH}x{KW}_s{SH}x{SW}_p{PH}x{PW}_op{OPH}x{OPW}"
            + ("" if bias else "_nobias"))
    _add("conv_transpose2d", name, make, run, run_torch)


#            N  C  H  W OC  K       S       P       OP
for _args in [(1, 1, 3, 3, 1, 1, 1, 0, 0),
              (2, 4, 3, 5, 3, 4, 2, 1, 0),          # the DCGAN generator block (doubles H, W)
              (2, 3, 4, 3, 2, 4, 2, 1, 1),
              (1, 2, 5, 4, 3, 3, 2, 1, 1),
              (3, 2, 3, 4, 2, 5, 1, 2, 0),
              (2, 3, 4, 4, 2, 2, 2, 0, 0),
              (2, 2, 3, 5, 4, 3, 3, 2, 2),
              (1, 3, 7, 7, 1, 5, 2, 2, 1),
              (2, 8, 1, 1, 4, 4, 1, 0, 0),          # 1x1 latent -> 4x4 (DCGAN first layer)
              (2, 2, 3, 4, 3, (3, 4), (2, 1), (1, 2), (1, 0))]:
    _conv_transpose2d_case(*_args)
_conv_transpose2d_case(2, 3, 4, 3, 2, 3, 2, 1, 1, bias=False)


# ----------------------------------------------------------------------------------------
# batch_norm (training with running-statistics update, and eval)
# ----------------------------------------------------------------------------------------

def _batch_norm_case(shape, training, affine=True, running=True, eps=1e-5, momentum=0.1,
                     loc=1.5):
    C = shape[1]

    def make(rng):
        return dict(x=_f32(rng.normal(loc=loc, scale=2.0, size=shape)),
                    w=_f32(rng.normal(loc=1.0, scale=0.5, size=C)) if affine else None,
                    b=_f32(rng.normal(size=C)) if affine else None,
                    rm=_f32(rng.normal(size=C)) if running else None,
                    rv=_f32(rng.uniform(0.5, 3.0, size=C)) if running else None,
                    dy=_f32(rng.normal(size=shape)))

    def copy(a):
        return None if a is None else a.copy()

    def run(impl, d):
        rm, rv = copy(d["rm"]), copy(d["rv"])            # updated in place by training mode
        y = impl.batch_norm(d["x"], d["w"], d["b"], eps=eps, running_mean=rm, running_var=rv,
                            training=training, momentum=momentum)
        fwd = dict(y=y)
        if training and running:
            fwd.update(running_mean=rm, running_var=rv)
        # backward sees the running statistics as they were before the forward
        dx, dw, db = impl.batch_norm_backward(d["dy"], d["x"], d["w"], eps=eps,
                                              running_mean=copy(d["rm"]),
                                              running_var=copy(d["rv"]), training=training)
        return fwd, dict(dx=dx, dweight=dw, dbias=db)

    def run_torch(torch, d):
        F = torch.nn.functional
        x = _T(torch, d["x"], True)
        w = _T(torch, d["w"] if affine else np.ones(C), True)
        b = _T(torch, d["b"] if affine else np.zeros(C), True)
        rm = _T(torch, d["rm"]) if running else None
        rv = _T(torch, d["rv"]) if running else None
        y = F.batch_norm(x, rm, rv, w, b, training=training, momentum=momentum, eps=eps)
        fwd = dict(y=_np(y))
        if training and running:
            fwd.update(running_mean=_np(rm), running_var=_np(rv))
        dx, dw, db = _grads(torch, y, (x, w, b), d["dy"])
        return fwd, dict(dx=dx, dweight=dw, dbias=db)

    name = ("train" if training else "eval") + "_" + "x".join(map(str, shape))
    name += "" if affine else "_noaffine"
    name += "" if running else "_norunning"
    name += f"_eps{eps:g}_mom{momentum:g}" + ("" if loc == 1.5 else f"_mean{loc:g}")
    _add("batch_norm", name, make, run, run_torch)


_batch_norm_case((8, 5), True)
# (N=2 is avoided: with two values xhat = +-1 whatever x is, dx is ~eps/var and only
# float32 cancellation noise remains in torch's answer)
_batch_norm_case((3, 4), True, momentum=0.3)
_batch_norm_case((2, 3, 5, 4), True)
_batch_norm_case((1, 4, 3, 5), True, affine=False, eps=1e-3)      # batch 1: stats over H*W
_batch_norm_case((3, 2, 4, 4), True, running=False)
# a mean far from 0 next to a unit spread: var = E[x^2] - E[x]^2 in float32 would lose it all
_batch_norm_case((16, 3, 5, 5), True, loc=300.0)
_batch_norm_case((1, 5), False)                                   # eval allows batch 1
_batch_norm_case((3, 2, 4, 5), False, eps=1e-3)
_batch_norm_case((1, 6, 7, 7), False)            # sampling one image: channel by channel
_batch_norm_case((4, 3, 2, 3), False, affine=False)


# ----------------------------------------------------------------------------------------
# activations (x has exact zeros: the derivative convention at the kink is PyTorch's)
# ----------------------------------------------------------------------------------------

def _act_case(op, shape, slope=None):
    kw = {} if slope is None else dict(negative_slope=slope)

    def make(rng):
        x = rng.normal(scale=3.0, size=shape)
        x.flat[::7] = 0.0
        return dict(x=_f32(x), dy=_f32(rng.normal(size=shape)))

    def run(impl, d):
        y = getattr(impl, op)(d["x"], **kw)
        dx = getattr(impl, op + "_backward")(d["dy"], d["x"], **kw)
        return dict(y=y), dict(dx=dx)

    def run_torch(torch, d):
        x = _T(torch, d["x"], True)
        fn = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
              "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, slope)}[op]
        y = fn(x)
        (dx,) = _grads(torch, y, (x,), d["dy"])
        return dict(y=_np(y)), dict(dx=dx)

    name = "x".join(map(str, shape)) + ("" if slope is None else f"_slope{slope:g}")
    _add(op, name, make, run, run_torch)


for _op in ("relu", "tanh", "sigmoid"):
    for _shape in [(1,), (3, 7), (2, 3, 4, 5)]:
        _act_case(_op, _shape)
for _shape, _slope in [((1,), 0.2), ((3, 7), 0.2), ((2, 3, 4, 5), 0.01)]:
    _act_case("leaky_relu", _shape, _slope)


# ----------------------------------------------------------------------------------------
# embedding (repeated labels accumulate in the backward)
# ----------------------------------------------------------------------------------------

def _embedding_case(K, D, N, label_dtype=np.int64):
    def make(rng):
        return dict(labels=rng.integers(0, K, size=N).astype(label_dtype),
                    w=_f32(rng.normal(size=(K, D))), dy=_f32(rng.normal(size=(N, D))))

    def run(impl, d):
        return (dict(y=impl.embedding(d["labels"], d["w"])),
                dict(dweight=impl.embedding_backward(d["dy"], d["labels"], d["w"])))

    def run_torch(torch, d):
        w = _T(torch, d["w"], True)
        y = torch.nn.functional.embedding(torch.tensor(d["labels"].astype(np.int64)), w)
        (dw,) = _grads(torch, y, (w,), d["dy"])
        return dict(y=_np(y)), dict(dweight=dw)

    _add("embedding", f"K{K}_D{D}_N{N}_{np.dtype(label_dtype).name}", make, run, run_torch)


_embedding_case(10, 4, 6)
_embedding_case(3, 7, 1)
_embedding_case(5, 8, 20)
_embedding_case(4, 3, 9, np.int32)


# ----------------------------------------------------------------------------------------
# losses; the backward of each is checked with the upstream gradient DLOSS
# ----------------------------------------------------------------------------------------

def _loss_torch(torch, fn, arrays, grad_names):
    """Forward value of fn(*tensors) and its gradients (times DLOSS) for grad_names."""
    ts = {k: (_T(torch, v, k in grad_names) if isinstance(v, np.ndarray) and v.dtype.kind == "f"
              else v) for k, v in arrays.items()}
    loss = fn(**ts)
    gs = _grads(torch, loss, [ts[k] for k in grad_names], DLOSS)
    return dict(loss=_np(loss)), dict(zip(["d" + k for k in grad_names], gs))


def _bce_case(shape, hard):
    def make(rng):
        t = rng.integers(0, 2, size=shape) if hard else rng.uniform(size=shape)
        return dict(x=_f32(rng.normal(scale=3.0, size=shape)), target=_f32(t))

    def run(impl, d):
        return (dict(loss=impl.binary_cross_entropy_with_logits(d["x"], d["target"])),
                dict(dx=impl.binary_cross_entropy_with_logits_backward(DLOSS, d["x"],
                                                                       d["target"])))

    def run_torch(torch, d):
        F = torch.nn.functional
        return _loss_torch(torch, lambda x, target: F.binary_cross_entropy_with_logits(x, target),
                           d, ["x"])

    _add("binary_cross_entropy_with_logits",
         "x".join(map(str, shape)) + ("_hard" if hard else "_soft"), make, run, run_torch)


for _shape, _hard in [((8,), True), ((1,), True), ((4, 5), False), ((2, 1, 3, 3), False)]:
    _bce_case(_shape, _hard)


def _hinge_d_case(n_real, n_fake):
    def make(rng):
        return dict(real=_f32(rng.normal(loc=0.5, scale=1.5, size=n_real)),
                    fake=_f32(rng.normal(loc=-0.5, scale=1.5, size=n_fake)))

    def run(impl, d):
        dr, df = impl.hinge_d_backward(DLOSS, d["real"], d["fake"])
        return dict(loss=impl.hinge_d(d["real"], d["fake"])), dict(dreal=dr, dfake=df)

    def run_torch(torch, d):
        # Lim & Ye 2017: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))
        return _loss_torch(torch, lambda real, fake: torch.relu(1 - real).mean()
                           + torch.relu(1 + fake).mean(), d, ["real", "fake"])

    _add("hinge_d", f"real{n_real}_fake{n_fake}", make, run, run_torch)


for _args in [(1, 1), (6, 9), (32, 32)]:
    _hinge_d_case(*_args)


def _hinge_g_case(shape):
    def make(rng):
        return dict(fake=_f32(rng.normal(size=shape)))

    def run(impl, d):
        return (dict(loss=impl.hinge_g(d["fake"])),
                dict(dfake=impl.hinge_g_backward(DLOSS, d["fake"])))

    def run_torch(torch, d):
        return _loss_torch(torch, lambda fake: -fake.mean(), d, ["fake"])

    _add("hinge_g", "x".join(map(str, shape)), make, run, run_torch)


for _shape in [(1,), (7,), (2, 3)]:
    _hinge_g_case(_shape)


def _least_squares_case(shape, target):
    def make(rng):
        return dict(x=_f32(rng.normal(size=shape)), target=target)

    def run(impl, d):
        return (dict(loss=impl.least_squares(d["x"], d["target"])),
                dict(dx=impl.least_squares_backward(DLOSS, d["x"], d["target"])))

    def run_torch(torch, d):
        # LSGAN (Mao et al. 2017) with the 1/2 of its objective
        return _loss_torch(torch, lambda x, target: 0.5 * ((x - target) ** 2).mean(), d, ["x"])

    _add("least_squares", "x".join(map(str, shape)) + f"_target{target:g}", make, run, run_torch)


for _shape, _target in [((1,), 1.0), ((9,), 0.0), ((3, 4), -1.0)]:
    _least_squares_case(_shape, _target)


def _pair_loss_case(op, shape):
    def make(rng):
        return dict(x=_f32(rng.normal(size=shape)), y=_f32(rng.normal(size=shape)))

    def run(impl, d):
        dx, dy_ = getattr(impl, op + "_backward")(DLOSS, d["x"], d["y"])
        return dict(loss=getattr(impl, op)(d["x"], d["y"])), dict(dx=dx, dy=dy_)

    def run_torch(torch, d):
        fn = getattr(torch.nn.functional, op)
        return _loss_torch(torch, lambda x, y: fn(x, y), d, ["x", "y"])

    _add(op, "x".join(map(str, shape)), make, run, run_torch)


for _op in ("l1_loss", "mse_loss"):
    for _shape in [(1,), (13,), (2, 3, 4, 5)]:
        _pair_loss_case(_op, _shape)


def _cross_entropy_case(N, K, label_dtype=np.int64):
    def make(rng):
        return dict(logits=_f32(rng.normal(scale=2.0, size=(N, K))),
                    labels=rng.integers(0, K, size=N).astype(label_dtype))

    def run(impl, d):
        return (dict(loss=impl.cross_entropy(d["logits"], d["labels"])),
                dict(dlogits=impl.cross_entropy_backward(DLOSS, d["logits"], d["labels"])))

    def run_torch(torch, d):
        F = torch.nn.functional
        return _loss_torch(torch, lambda logits, labels: F.cross_entropy(
            logits, torch.tensor(labels.astype(np.int64))), d, ["logits"])

    _add("cross_entropy", f"N{N}_K{K}_{np.dtype(label_dtype).name}", make, run, run_torch)


for _args in [(1, 3), (6, 10), (5, 2), (7, 4, np.int32)]:
    _cross_entropy_case(*_args)


def tempered_kl_torch(torch, s, t, T, binary):
    """The tempered KL of Hinton et al. 2015 written in torch (float32), T^2 factor applied.

    binary: p = sigmoid(t/T), q = sigmoid(s/T), T^2 mean[p log(p/q) + (1-p) log((1-p)/(1-q))];
    the logs are taken as logsigmoid(+-logit/T) (= log p, log(1-p)): torch.log(1 - p) in
    float32 loses ~1e-4 of the loss once |logit/T| reaches ~12, which would measure torch's
    rounding rather than ours.
    categorical: T^2 * KL(softmax(t/T) || softmax(s/T)) with batch mean, via F.kl_div.
    """
    F = torch.nn.functional
    if binary:
        p = torch.sigmoid(t / T)
        log_p, log_1mp = F.logsigmoid(t / T), F.logsigmoid(-t / T)
        log_q, log_1mq = F.logsigmoid(s / T), F.logsigmoid(-s / T)
        kl = p * (log_p - log_q) + (1 - p) * (log_1mp - log_1mq)
        return T * T * kl.mean()
    return T * T * F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(t / T, 1), log_target=True,
                            reduction="batchmean")


def _tempered_kl_case(shape, T, binary):
    def make(rng):
        return dict(s=_f32(rng.normal(scale=2.0, size=shape)),
                    t=_f32(rng.normal(scale=2.0, size=shape)), T=T)

    def run(impl, d):
        return (dict(loss=impl.tempered_kl(d["s"], d["t"], T, binary=binary)),
                dict(ds=impl.tempered_kl_backward(DLOSS, d["s"], d["t"], T, binary=binary)))

    def run_torch(torch, d):
        return _loss_torch(torch, lambda s, t, T: tempered_kl_torch(torch, s, t, T, binary),
                           d, ["s"])

    _add("tempered_kl", ("binary_" if binary else "categorical_") + "x".join(map(str, shape))
         + f"_T{T:g}", make, run, run_torch)


for _shape, _T_ in [((8,), 1.0), ((1,), 2.0), ((3, 4), 4.0), ((16, 1), 0.5)]:
    _tempered_kl_case(_shape, _T_, True)
for _shape, _T_ in [((6, 10), 1.0), ((1, 5), 2.0), ((4, 3), 5.0), ((9, 2), 0.7)]:
    _tempered_kl_case(_shape, _T_, False)


# ----------------------------------------------------------------------------------------
# adam_step: ten steps with fresh random gradients against torch.optim.Adam / AdamW;
# the forward outputs are the whole parameter trajectory and the final moments.
# ----------------------------------------------------------------------------------------

ADAM_STEPS = 10


def _adam_case(shape, lr, betas, eps, weight_decay):
    def make(rng):
        # DCGAN-sized weights (N(0, 0.02)): the float32 rounding of p then stays far below
        # the size of one update, so the displacement can be compared at 1e-4
        return dict(p0=_f32(rng.normal(scale=0.02, size=shape)),
                    grads=[_f32(rng.normal(scale=s, size=shape))
                           for s in rng.uniform(0.1, 3.0, size=ADAM_STEPS)])

    def run(impl, d):
        p = d["p0"].copy()
        m, v = np.zeros_like(p), np.zeros_like(p)
        traj = []
        for step, g in enumerate(d["grads"], start=1):
            impl.adam_step(p, g, m, v, step, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                           weight_decay=weight_decay)
            traj.append(p.copy())
        # the displacement from p0 is what Adam computes; comparing it (rather than p
        # itself) keeps the error metric sensitive to the size of the updates
        return dict(displacement=np.stack(traj) - d["p0"], m=m, v=v), {}

    def run_torch(torch, d):
        p = torch.nn.Parameter(_T(torch, d["p0"]))
        if weight_decay > 0:
            opt = torch.optim.AdamW([p], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        else:
            opt = torch.optim.Adam([p], lr=lr, betas=betas, eps=eps, weight_decay=0.0)
        traj = []
        for g in d["grads"]:
            p.grad = _T(torch, g)
            opt.step()
            traj.append(_np(p))
        st = opt.state[p]
        return dict(displacement=np.stack(traj) - d["p0"].astype(np.float64),
                    m=_np(st["exp_avg"]), v=_np(st["exp_avg_sq"])), {}

    name = ("adamw" if weight_decay > 0 else "adam") + "_" + "x".join(map(str, shape))
    name += f"_lr{lr:g}_b{betas[0]:g}_eps{eps:g}_wd{weight_decay:g}"
    _add("adam_step", name, make, run, run_torch)


_adam_case((300,), 1e-3, (0.9, 0.999), 1e-8, 0.0)
_adam_case((17, 19), 2e-4, (0.5, 0.999), 1e-8, 0.0)                # the GAN default
_adam_case((250,), 1e-2, (0.9, 0.999), 1e-8, 0.05)
_adam_case((12, 25), 1e-3, (0.5, 0.99), 1e-6, 1e-2)


# ----------------------------------------------------------------------------------------
# ema_update
# ----------------------------------------------------------------------------------------

def _ema_case(shape, decay):
    def make(rng):
        return dict(ema=_f32(rng.normal(size=shape)), p=_f32(rng.normal(size=shape)))

    def run(impl, d):
        ema = d["ema"].copy()
        impl.ema_update(ema, d["p"], decay)
        return dict(ema=ema), {}

    def run_torch(torch, d):
        ema = _T(torch, d["ema"])
        ema.mul_(decay).add_(_T(torch, d["p"]), alpha=1 - decay)
        return dict(ema=_np(ema)), {}

    _add("ema_update", "x".join(map(str, shape)) + f"_decay{decay:g}", make, run, run_torch)


for _shape, _decay in [((300,), 0.999), ((4, 5), 0.5), ((7,), 0.0), ((7,), 1.0)]:
    _ema_case(_shape, _decay)


OPS = list(dict.fromkeys(c.op for c in CASES))      # op names in definition order
