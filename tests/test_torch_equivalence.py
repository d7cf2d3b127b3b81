"""distgan's networks, GAN training step and distillation terms against PyTorch.

The strongest test of the training code: every distgan network is mirrored by a torch
module that holds a float64 copy of the same weights (PyTorch's layouts: linear (out, in),
conv (OC, C, K, K), conv-transpose (C, OC, K, K); batch norm eps 1e-5, momentum 0.1;
spectral norm = torch.nn.utils.spectral_norm with the same u, v; projection head
``h @ w.T + b + sum(E[y] * h)``), and then

(a) forward passes of G and D in train and eval mode agree (rel_err <= 1e-4), and so do
    ``GAN.sample`` and the EMA generator in eval mode with standing statistics;
(b) whole ``GAN.step`` calls, re-implemented here in torch exactly as DESIGN.md / gan.py
    describe them (same z read off the GAN's noise stream with distgan.ops.normal; D on a
    real and on a fake batch; Adam (0.5, 0.999); G step on the same fake through the
    updated D; EMA with warm-up decay min(ema, (1+t)/(10+t))), leave the same parameters,
    running statistics, spectral-norm vectors and EMA parameters after 1 and 3 steps
    (rel_err <= 1e-3), as well as the gradient handed to every Adam call, the parameter
    displacements and the Adam moments, for the "ns", "hinge" and "ls" losses, a
    conditional model, a spectrally normalised critic and n_critic = 2 (Adam's eps is
    raised to 1e-4 on both sides to make a multi-step float32 comparison well posed:
    see ADAM_EPS);
(c) each distillation term alone (output L1 / L2, tempered critic KL at T = 1, 2, 4,
    feature L1, adversarial, tempered class KL) gives the student generator the parameter
    gradient torch autograd gives for the formula of DESIGN.md "Distillation"
    (rel_err <= 1e-3).

The torch side runs in float64: it is the trusted value, and the tolerances are float32
ones (conftest.rel_err: normwise max relative error).
"""
import importlib

import numpy as np
import pytest

import distgan
from distgan import models, ops
from distgan.gan import _Stream
from conftest import rel_err

dmod = importlib.import_module("distgan.distill")   # distgan.distill is the function

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional
F64 = torch.float64

FWD_TOL = 1e-4
TRAIN_TOL = 1e-3
GRAD_TOL = 1e-3
N = 8            # batch size of every test here (batch norm needs a few samples)


@pytest.fixture(autouse=True)
def _one_thread():
    """One BLAS thread on each side: fixed float32 summation order in the core, and no
    oversubscription of this shared 2-core machine (which slows the core down ~20x)."""
    n_dg, n_t = distgan.get_num_threads(), torch.get_num_threads()
    distgan.set_num_threads(1)
    torch.set_num_threads(1)
    yield
    distgan.set_num_threads(n_dg)
    torch.set_num_threads(n_t)


# --------------------------------------------------------------------------------------------
# a torch mirror of a distgan.nn.Network
# --------------------------------------------------------------------------------------------

class _LabelConcat(nn.Module):
    """[x, E[y]] (distgan.nn.LabelConcat)."""

    def __init__(self, num_classes, embed_dim):
        super().__init__()
        self.embedding = nn.Parameter(torch.zeros(num_classes, embed_dim, dtype=F64))

    def forward(self, x, y):
        return torch.cat([x, self.embedding[y]], dim=1)


class _Projection(nn.Module):
    """logit = h @ w.T + b + sum_f E[y] * h (Miyato & Koyama 2018)."""

    def __init__(self, in_features, num_classes):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, in_features, dtype=F64))
        self.bias = nn.Parameter(torch.zeros(1, dtype=F64))
        self.embedding = nn.Parameter(torch.zeros(num_classes, in_features, dtype=F64))

    def forward(self, h, y):
        return h @ self.weight.T + self.bias + (self.embedding[y] * h).sum(1, keepdim=True)


def _module(layer, in_shape, sn):
    d, t = layer.spec, layer.type
    if t == "linear":
        m = nn.Linear(d["in_features"], d["out_features"], bias="bias" in layer.p)
    elif t == "conv2d":
        m = nn.Conv2d(d["in_channels"], d["out_channels"], d["kernel_size"], d["stride"],
                      d["padding"], bias="bias" in layer.p)
    elif t == "conv_transpose2d":
        m = nn.ConvTranspose2d(d["in_channels"], d["out_channels"], d["kernel_size"],
                               d["stride"], d["padding"], d.get("output_padding", 0),
                               bias="bias" in layer.p)
    elif t == "batch_norm":
        bn = nn.BatchNorm1d if len(in_shape) == 1 else nn.BatchNorm2d
        return bn(d["num_features"], eps=1e-5, momentum=0.1)
    elif t == "relu":
        return nn.ReLU()
    elif t == "leaky_relu":
        return nn.LeakyReLU(d["negative_slope"])
    elif t == "tanh":
        return nn.Tanh()
    elif t == "sigmoid":
        return nn.Sigmoid()
    elif t == "reshape":
        return nn.Unflatten(1, tuple(d["shape"]))
    elif t == "flatten":
        return nn.Flatten()
    elif t == "label_concat":
        return _LabelConcat(d["num_classes"], d["embed_dim"])
    elif t == "projection":
        return _Projection(d["in_features"], d["num_classes"])
    else:
        raise AssertionError(f"no torch mirror for layer type {t!r}")
    # one power iteration per training forward, u and v held constant in the gradient
    return nn.utils.spectral_norm(m) if sn else m


class TorchNet(nn.Module):
    """A float64 torch module computing what ``net`` computes, loaded with its weights."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.mods = nn.ModuleList([_module(l, s, net.spectral_norm)
                                   for l, s in zip(net.layers, net.shapes)])
        self.to(F64)
        self.load()

    def _param(self, i, name):
        m = self.mods[i]
        if name == "weight" and self.net.spectral_norm and hasattr(m, "weight_orig"):
            return m.weight_orig
        return getattr(m, name)

    def _buffer(self, i, name):
        return getattr(self.mods[i], {"sn_u": "weight_u", "sn_v": "weight_v"}.get(name, name))

    def pairs(self):
        """(name, distgan param view, torch parameter), in the network's flat order."""
        return [(f"{i}.{n}", self.net.layers[i].p[n], self._param(i, n))
                for i, n, _, _ in self.net.param_index]

    def buffer_pairs(self):
        return [(f"{i}.{n}", l.b[n], self._buffer(i, n))
                for i, l in enumerate(self.net.layers) for n in l.b]

    def parameters_in_order(self):
        return [t for _, _, t in self.pairs()]

    @torch.no_grad()
    def load(self):
        for _, a, t in self.pairs() + self.buffer_pairs():
            assert tuple(t.shape) == a.shape, (t.shape, a.shape)
            t.copy_(torch.from_numpy(a.astype(np.float64)))

    def forward(self, x, y=None, taps=()):
        feats = []
        for i, m in enumerate(self.mods):
            x = m(x, y) if isinstance(m, (_LabelConcat, _Projection)) else m(x)
            if i in taps:
                feats.append(x)
        return (x, feats) if taps else x


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


def tlab(y):
    return None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))


def _assert_net_equal(tnet, what, tol, buffers=True):
    for name, a, t in tnet.pairs():
        err = rel_err(a, t.detach().numpy())
        assert err <= tol, f"{what}: parameter {name}: rel_err {err:.3e} > {tol:g}"
    if buffers:
        for name, a, t in tnet.buffer_pairs():
            err = rel_err(a, t.detach().numpy())
            assert err <= tol, f"{what}: buffer {name}: rel_err {err:.3e} > {tol:g}"


def _images(rng, n=N, shape=(1, 28, 28)):
    return np.tanh(rng.normal(size=(n,) + tuple(shape))).astype(np.float32)


def _perturb_running_stats(net, rng):
    """Non-trivial running statistics, so that eval-mode batch norm is really tested."""
    for l in net.layers:
        if l.type == "batch_norm":
            l.b["running_mean"][...] = rng.normal(0, 0.3, l.b["running_mean"].shape)
            l.b["running_var"][...] = rng.uniform(0.5, 2.0, l.b["running_var"].shape)


# a 1x28x28 DCGAN at width 1/4 (G 64*7*7 -> 32 -> 1, D 16 -> 32): the small model of every
# case below; "cond" adds a label embedding to G and a projection head to D; "sn" swaps D's
# batch norm for spectral normalisation.
CONFIGS = {
    "dcgan": dict(spec=dict(width=0.25), gan={}),
    "cond": dict(spec=dict(width=0.25, num_classes=10), gan={}),
    "sn": dict(spec=dict(width=0.25), gan=dict(spectral_norm=True)),
    "cond-sn": dict(spec=dict(width=0.25, num_classes=10), gan=dict(spectral_norm=True)),
}


def _gan(cfg, seed=0, **kw):
    c = CONFIGS[cfg]
    return distgan.GAN(models.dcgan(**c["spec"]), seed=seed, **{**c["gan"], **kw})


# --------------------------------------------------------------------------------------------
# (a) forward passes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_forward_matches_torch(cfg, rng):
    gan = _gan(cfg)
    G, D = gan.generator, gan.discriminator
    _perturb_running_stats(G, rng)
    _perturb_running_stats(D, rng)
    tG, tD = TorchNet(G), TorchNet(D)
    K = gan.num_classes
    z = rng.normal(size=(N, gan.latent_dim)).astype(np.float32)
    y = rng.integers(0, K, N) if K else None
    x = _images(rng)
    for train in (True, False):          # train first: it updates the running statistics
        tG.train(train)
        tD.train(train)
        with torch.no_grad():
            ref_g = tG(t64(z), tlab(y)).numpy()
            ref_d = tD(t64(x), tlab(y)).numpy()
        out_g = G.forward(z, y, train=train).copy()
        out_d = D.forward(x, y, train=train).copy()
        mode = "train" if train else "eval"
        assert out_g.shape == (N, 1, 28, 28) and out_d.shape == (N, 1)
        assert rel_err(out_g, ref_g) <= FWD_TOL, f"G {mode}: {rel_err(out_g, ref_g):.3e}"
        assert rel_err(out_d, ref_d) <= FWD_TOL, f"D {mode}: {rel_err(out_d, ref_d):.3e}"
        # running statistics (train) and spectral-norm vectors (a power iteration in train)
        _assert_net_equal(tG, f"G after {mode} forward", FWD_TOL)
        _assert_net_equal(tD, f"D after {mode} forward", FWD_TOL)


def test_feature_taps_are_leaky_relu_outputs(rng):
    """distill's default feature layers are D's activations, returned by forward(taps=)."""
    gan = _gan("dcgan")
    D = gan.discriminator
    taps = dmod._feature_taps(D)
    assert [D.layers[i].type for i in taps] == ["leaky_relu", "leaky_relu"]
    tD = TorchNet(D).eval()
    x = _images(rng)
    out, feats = D.forward(x, train=False, taps=taps)
    with torch.no_grad():
        tout, tfeats = tD(t64(x), taps=taps)
    assert rel_err(out, tout.numpy()) <= FWD_TOL
    for a, b in zip(feats, tfeats):
        assert rel_err(a, b.numpy()) <= FWD_TOL


@pytest.mark.parametrize("cfg", ["cond"])
def test_sample_is_ema_generator_with_standing_stats(cfg, rng):
    """sample(seed=s) = the EMA generator in eval mode, its batch-norm statistics the
    cumulative average over 8 batches of 256 from the stream (seed*2+2) -- torch's
    momentum=None -- and z from the stream (s*2+3, offset 0)."""
    gan = _gan(cfg, seed=3)
    x = _images(rng)
    y = rng.integers(0, 10, N) if gan.num_classes else None
    gan.step(x, y)
    gan.step(x, y)
    tE = TorchNet(gan.g_ema)
    K, L = gan.num_classes, gan.latent_dim
    for m in tE.mods:
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
            m.reset_running_stats()
    tE.train()
    seed, off = gan.config["seed"] * 2 + 2, 0
    with torch.no_grad():
        for _ in range(8):
            z = ops.normal((256, L), seed, off)
            off += z.size
            yb = None
            if K:
                u = ops.uniform((256,), seed, off)
                off += 256
                yb = np.minimum((u * np.float32(K)).astype(np.int64), K - 1)
            tE(t64(z), tlab(yb))
    labels = np.arange(12) % 10 if K else None
    got = gan.sample(12, labels=labels, seed=5)
    z = ops.normal((12, L), 5 * 2 + 3, 0)
    tE.eval()
    with torch.no_grad():
        ref = tE(t64(z), tlab(labels)).numpy()
    assert got.dtype == np.float32 and got.shape == (12, 1, 28, 28)
    assert rel_err(got, ref) <= FWD_TOL, rel_err(got, ref)
    for name, a, t in tE.buffer_pairs():
        assert rel_err(a, t.numpy()) <= FWD_TOL, f"standing statistics {name}"


# --------------------------------------------------------------------------------------------
# (b) whole training steps
# --------------------------------------------------------------------------------------------

def _adv_loss(kind, logits, side):
    """The three losses of gan.adversarial_loss; side is "real", "fake" or "gen"."""
    x = logits.reshape(-1)
    if kind == "ns":
        target = torch.full_like(x, 0.0 if side == "fake" else 1.0)
        return F.binary_cross_entropy_with_logits(x, target)
    if kind == "hinge":
        if side == "gen":
            return -x.mean()
        return torch.relu(1.0 - x).mean() if side == "real" else torch.relu(1.0 + x).mean()
    if kind == "ls":               # 0.5 * mean((x - t)^2), Mao et al. 2017
        t = 0.0 if side == "fake" else 1.0
        return 0.5 * ((x - t) ** 2).mean()
    raise AssertionError(kind)


class TorchGAN:
    """GAN.step written out in torch, as DESIGN.md "Training a GAN" and gan.py describe it."""

    def __init__(self, gan):
        self.gan = gan
        self.kind = gan.config["loss"]
        self.n_critic = gan.config["n_critic"]
        self.ema = gan.config["ema"]
        self.r1 = gan.config.get("r1", 0.0)
        self.G, self.D, self.E = TorchNet(gan.generator), TorchNet(gan.discriminator), \
            TorchNet(gan.g_ema)
        lr_g, lr_d = gan.config["lr"]
        betas = tuple(gan.config["betas"])
        self.opt_g = torch.optim.Adam(self.G.parameters_in_order(), lr=lr_g, betas=betas,
                                      eps=gan.opt_g.eps)
        self.opt_d = torch.optim.Adam(self.D.parameters_in_order(), lr=lr_d, betas=betas,
                                      eps=gan.opt_d.eps)
        self.t = 0
        self.grads = {"G": [], "D": []}   # the gradient handed to each Adam update

    def _record(self, which, net):
        self.grads[which].append(np.concatenate([p.grad.numpy().ravel()
                                                 for p in net.parameters_in_order()]))

    def draw_noise(self):
        """The (z, y_fake) of each critic iteration of the next GAN.step, read off the GAN's
        noise stream with distgan.ops (Philox, element i at counter offset + i)."""
        s = self.gan.noise
        seed, off = s.seed, s.offset
        K, L = self.gan.num_classes, self.gan.latent_dim
        draws = []
        for _ in range(self.n_critic):
            z = ops.normal((N, L), seed, off)
            off += z.size
            y = None
            if K:
                u = ops.uniform((N,), seed, off)
                off += N
                y = np.minimum((u * np.float32(K)).astype(np.int64), K - 1)
            draws.append((z, y))
        return draws, off

    def step(self, real, labels, draws):
        G, D = self.G, self.D
        G.train()
        D.train()
        real_t, lab_t = t64(real), tlab(labels)
        for z, y in draws:
            fake = G(t64(z), tlab(y))              # one forward of G per critic iteration
            self.opt_d.zero_grad()
            x_real = real_t.clone().requires_grad_(self.r1 > 0)
            d_real = D(x_real, lab_t)
            d_loss = (_adv_loss(self.kind, d_real, "real")
                      + _adv_loss(self.kind, D(fake.detach(), tlab(y)), "fake"))
            if self.r1 > 0:     # R1 (Mescheder et al. 2018), by double backward
                g, = torch.autograd.grad(d_real.sum(), x_real, create_graph=True)
                d_loss = d_loss + 0.5 * self.r1 * g.pow(2).flatten(1).sum(1).mean()
            d_loss.backward()
            self._record("D", D)
            self.opt_d.step()
        # G step: the last fake, through the updated D; only G's parameters get gradients
        g_loss = _adv_loss(self.kind, D(fake, tlab(y)), "gen")
        params = G.parameters_in_order()
        for p, g in zip(params, torch.autograd.grad(g_loss, params)):
            p.grad = g
        self._record("G", G)
        self.opt_g.step()
        self.t += 1
        decay = min(self.ema, (1.0 + self.t) / (10.0 + self.t)) if self.ema > 0 else 0.0
        with torch.no_grad():
            for e, p in zip(self.E.parameters_in_order(), params):
                e.mul_(decay).add_((1.0 - decay) * p)
        return d_loss.item(), g_loss.item()


STEP_CASES = [
    ("dcgan", dict(loss="ns")),
    ("dcgan", dict(loss="hinge")),
    ("dcgan", dict(loss="ls")),
    ("cond", dict(loss="ns")),
    ("sn", dict(loss="hinge")),
    ("cond-sn", dict(loss="ns", n_critic=2)),
    ("dcgan", dict(loss="ns", r1=1.0)),
    ("cond-sn", dict(loss="hinge", r1=0.5)),
]


# Adam's epsilon in the trajectory comparison (both sides). Adam's first update of an
# element is lr * g / (|g| + eps): ~ +-lr whatever |g| is when |g| >> eps. With the default
# eps = 1e-8, a gradient element whose true value sits at float32 rounding level (|g| ~ 1e-8
# against max|g| ~ 0.2; such elements exist in G's first linear layer) gets an arbitrary
# sign in ANY float32 implementation, and a flipped sign moves that weight by 2 lr -- a
# normwise rel_err of ~4e-3 on a tensor of N(0, 0.02) weights although both sides are right
# (measured: 4 of 353,217 elements, gradients equal to rel_err 7e-6). Worse, once the two
# trajectories differ by more than rounding, a LeakyReLU/ReLU input within ~1e-6 of its kink
# can land on different sides (measured at eps = 1e-6, hinge loss, step 3: one such input
# changed a D batch-norm bias gradient by 2 %). With eps = 1e-4 the update is Lipschitz in g
# (constant lr / eps), so rounding-level gradient differences stay rounding-level in the
# parameters, the trajectories stay within ~1e-5 of each other and the comparison is well
# posed. Nothing in the step logic depends on eps; Adam with the default eps against torch
# is the op test in tests/test_ops_vs_torch.py.
ADAM_EPS = 1e-4
# Displacements p_t - p_0 after 1 and 3 steps are compared too (parameters move by only
# ~lr = 2e-4 per step, so comparing the parameters alone would hide an update that is off
# by tens of percent). Measured worst case 7e-4 when written; 1.5e-3 in session 13 (D of
# dcgan/hinge after step 1, with or without the transposed direct kernel): an update
# lr*g/(sqrt(v)+eps) amplifies gradient rounding by lr/eps where |g| ~ eps. Each element
# is allowed 2 float32 ulps of its value on top, the resolution of a float32 displacement.
MOVE_TOL = 3e-3
# After one Adam call the displacement is exactly -lr * g / (|g| + eps) (bias correction
# cancels), so the part of the difference that the two sides' gradients account for is
# lr * |f(g_a) - f(g_t)|, f(g) = g / (|g| + eps), element by element, and only the rest
# is held to MOVE_TOL. It matters where the gradients carry more rounding than plain
# backprop: R1's central difference (relative error ~1e-5, gan._R1_STEP) moved D's
# step-1 displacement by 3.0e-3 of lr (3.07e-3 with the transposed direct kernel, whose
# gradient was as accurate) at an element with |g| ~ eps, against 4e-5 to 1.5e-3 in
# the cases without R1.


def _adam1_explained(lr, g_a, g_t, eps=ADAM_EPS):
    g_a, g_t = g_a.astype(np.float64), g_t.astype(np.float64)
    return lr * np.abs(g_a / (np.abs(g_a) + eps) - g_t / (np.abs(g_t) + eps))


# A ReLU/LeakyReLU input of the float64 reference closer to the kink than float32 can
# resolve lands on either side in a float32 implementation, whichever way its last bits
# fall: its slope, and so every gradient behind it, then differs by O(1) at that element
# although both sides are right to rounding (measured: a D LeakyReLU input of 5e-9, on a
# tensor whose largest input is ~1, flipped in the sn/hinge case at step 2 when a
# rounding-level change of the core's conv kernels moved it; the G gradient then differed
# by 3e-3). From such a step on the two trajectories are not comparable, so the comparison
# stops there; step 1 is always compared in full.
KINK_TOL = 1e-7


class _KinkMargin:
    """Smallest |input| / max |input| of any ReLU/LeakyReLU of the torch nets since reset."""

    def __init__(self, *nets):
        self.value = np.inf
        for net in nets:
            for m in net.modules():
                if isinstance(m, (nn.ReLU, nn.LeakyReLU)):
                    m.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        x = inputs[0].detach().abs()
        self.value = min(self.value, float(x.min() / x.max().clamp_min(1e-30)))


def _assert_moved_alike(tnet, start, what, tol=MOVE_TOL, explained=None):
    """explained: for each element, in the flat parameter order, how far apart the two
    displacements are bound to be by the gradients each side was given (or None)."""
    at = 0
    for name, a, t in tnet.pairs():
        p0 = start[name]
        da = a.astype(np.float64) - p0
        dt = t.detach().numpy() - p0
        allowed = 2 * np.spacing(np.abs(a))
        if explained is not None:
            allowed = allowed + explained[at:at + a.size].reshape(a.shape)
        at += a.size
        excess = np.maximum(np.abs(da - dt) - allowed, 0.0)
        err = float(excess.max() / max(np.abs(dt).max(), 1e-30))
        assert err <= tol, f"{what}: displacement of {name}: rel_err {err:.3e} > {tol:g}"


def _record_adam_inputs(gan):
    """Wrap (not replace) each optimizer's step to keep the gradient it is given."""
    seen = {"G": [], "D": []}
    for which, opt, net in (("G", gan.opt_g, gan.generator), ("D", gan.opt_d, gan.discriminator)):
        def step(opt=opt, net=net, which=which, orig=opt.step):
            seen[which].append(net.grads.copy())
            orig()
        opt.step = step
    return seen


def _case_id(name, kw, *rest):
    return "-".join([name] + [f"{k}={v}" for k, v in kw.items()] + list(rest))


@pytest.mark.parametrize("cfg,kw", STEP_CASES, ids=[_case_id(c, kw) for c, kw in STEP_CASES])
def test_gan_step_matches_torch(cfg, kw, rng):
    gan = _gan(cfg, seed=7, **kw)
    gan.opt_g.eps = gan.opt_d.eps = ADAM_EPS
    seen = _record_adam_inputs(gan)
    ref = TorchGAN(gan)
    start = {k: {name: a.astype(np.float64) for name, a, _ in tnet.pairs()}
             for k, tnet in (("G", ref.G), ("D", ref.D), ("E", ref.E))}
    K = gan.num_classes
    kinks = _KinkMargin(ref.G, ref.D)
    for step in range(1, 4):
        real = _images(rng)
        labels = rng.integers(0, K, N) if K else None
        draws, end_offset = ref.draw_noise()
        kinks.value = np.inf
        d_ref, g_ref = ref.step(real, labels, draws)
        losses = gan.step(real, labels)
        assert gan.noise.offset == end_offset, "GAN.step drew a different amount of noise"
        assert gan.step_count == step and gan.opt_g.t == step
        assert gan.opt_d.t == step * gan.config["n_critic"]
        assert rel_err(losses["d_loss"], d_ref) <= TRAIN_TOL, (step, losses, d_ref)
        assert rel_err(losses["g_loss"], g_ref) <= TRAIN_TOL, (step, losses, g_ref)
        if kinks.value < KINK_TOL:
            # the losses are continuous across a kink and were compared; the gradients
            # from here on are not comparable (KINK_TOL)
            assert step > 1, f"a ReLU input at {kinks.value:.1e} of its kink in step 1"
            break
        for which in ("D", "G"):
            assert len(seen[which]) == len(ref.grads[which])
            for k, (a, b) in enumerate(zip(seen[which], ref.grads[which])):
                err = rel_err(a, b)
                assert err <= TRAIN_TOL, f"step {step}: gradient of {which}'s Adam call {k}: " \
                                         f"rel_err {err:.3e}"
        if step in (1, 3):
            _assert_net_equal(ref.G, f"G after step {step}", TRAIN_TOL)
            _assert_net_equal(ref.D, f"D after step {step}", TRAIN_TOL)
            _assert_net_equal(ref.E, f"EMA G after step {step}", TRAIN_TOL, buffers=False)
            for k, tnet in (("G", ref.G), ("D", ref.D), ("E", ref.E)):
                explained = None
                if step == 1 and k in seen and len(seen[k]) == 1:   # one Adam call so far
                    lr = gan.config["lr"][0 if k == "G" else 1]
                    explained = _adam1_explained(lr, seen[k][0], ref.grads[k][0])
                _assert_moved_alike(tnet, start[k], f"{k} after step {step}",
                                    explained=explained)
    else:
        _assert_adam_moments_equal(gan, ref)


def _assert_adam_moments_equal(gan, ref):
    # the Adam moments are the running gradient statistics and must agree too
    for opt, topt, tnet in ((gan.opt_g, ref.opt_g, ref.G), (gan.opt_d, ref.opt_d, ref.D)):
        m = np.concatenate([topt.state[p]["exp_avg"].numpy().ravel()
                            for p in tnet.parameters_in_order()])
        v = np.concatenate([topt.state[p]["exp_avg_sq"].numpy().ravel()
                            for p in tnet.parameters_in_order()])
        assert rel_err(opt.m, m) <= TRAIN_TOL, rel_err(opt.m, m)
        assert rel_err(opt.v, v) <= TRAIN_TOL, rel_err(opt.v, v)


# --------------------------------------------------------------------------------------------
# (c) distillation terms
# --------------------------------------------------------------------------------------------

def _kd_binary(ls, lt, T):
    """T^2 mean[p log(p/q) + (1-p) log((1-p)/(1-q))], p = sigma(lt/T), q = sigma(ls/T)."""
    p = torch.sigmoid(lt / T)
    logq, log1mq = F.logsigmoid(ls / T), F.logsigmoid(-ls / T)
    logp, log1mp = F.logsigmoid(lt / T), F.logsigmoid(-lt / T)
    return T * T * (p * (logp - logq) + (1 - p) * (log1mp - log1mq)).mean()


def _kd_categorical(cs, ct, T):
    """T^2 KL(softmax(ct/T) || softmax(cs/T)), summed over classes, mean over the batch."""
    logP, logQ = F.log_softmax(ct / T, dim=1), F.log_softmax(cs / T, dim=1)
    return T * T * (logP.exp() * (logP - logQ)).sum(1).mean()


@pytest.fixture(scope="module")
def teacher():
    """A small random teacher (dcgan width 1/2, conditional and not) with non-trivial
    running statistics in its critic and its EMA generator (both run in eval mode in
    distillation; random statistics stand in for distill()'s standing statistics, which
    cost seconds to estimate and are tested in test_sample_is_ema_generator_...)."""
    rng = np.random.default_rng(11)
    out = {}
    for cond in (False, True):
        t = distgan.GAN(models.dcgan(width=0.5, num_classes=10 if cond else None), seed=1)
        _perturb_running_stats(t.discriminator, rng)
        _perturb_running_stats(t.g_ema, rng)
        t._ema_stats_step = t.step_count          # mark them current
        out[cond] = t
    return out


@pytest.fixture(scope="module")
def eval_classifier():
    cmod = pytest.importorskip("distgan.classifier")     # the cls term needs a classifier
    c = cmod.Classifier(models.classifier(width=0.25, image_shape=(1, 28, 28), num_classes=10),
                        seed=4)
    _perturb_running_stats(c.network, np.random.default_rng(12))
    return c


TERM_CASES = [
    ("out", dict(output_loss="l1"), False),
    ("out", dict(output_loss="l2"), False),
    ("kd", dict(T=1.0), False),
    ("kd", dict(T=2.0), False),
    ("kd", dict(T=4.0), False),
    ("feat", {}, False),
    ("adv", {}, False),
    ("adv", dict(loss="hinge"), False),
    ("cls", dict(T=2.0), False),
    ("cls", dict(T=4.0), False),
    ("kd", dict(T=2.0), True),
    ("feat", {}, True),
    ("adv", {}, True),
]


@pytest.mark.parametrize("term,opts,cond", TERM_CASES,
                         ids=[_case_id(t, o, "cond" if c else "uncond") for t, o, c in TERM_CASES])
def test_distill_term_gradient_matches_torch(term, opts, cond, teacher, request, monkeypatch):
    """Each term alone (its weight 1, every other weight 0): the student generator's
    parameter gradient from distill._distill_step against torch autograd of the formula.

    How the gradient is isolated: _distill_step zeroes G_s's gradient, backpropagates the
    weighted terms into ``student.generator.grads`` and then calls
    ``student.opt_g.step()``. That call is replaced by a no-op, so after the step
    ``grads`` holds exactly dL/dtheta at the student's (unchanged) parameters -- nothing
    rescales or consumes it. Everything else runs as in distill(): the student critic's
    Adam update (which the "adv" term depends on) is real and reproduced here in torch.
    """
    T = float(opts.get("T", 2.0))
    loss = opts.get("loss", "ns")
    output_loss = opts.get("output_loss", "l1")
    t = teacher[cond]
    K = 10 if cond else None
    student = distgan.GAN(models.dcgan(width=0.25, num_classes=K), seed=2, loss=loss)
    clf = request.getfixturevalue("eval_classifier") if term == "cls" else None

    Gt, Dt, Gs, Ds = t.g_ema, t.discriminator, student.generator, student.discriminator
    tGt, tDt, tGs, tDs = TorchNet(Gt).eval(), TorchNet(Dt).eval(), TorchNet(Gs).train(), \
        TorchNet(Ds).train()
    taps = dmod._feature_taps(Dt)
    w = {k: 0.0 for k in dmod.DEFAULT_WEIGHTS}
    w[term] = 1.0
    need_dt = w["kd"] > 0 or w["feat"] > 0

    seed, n = 99, N
    z = ops.normal((n, student.latent_dim), seed, 0)
    y = None
    if K:
        u = ops.uniform((n,), seed, z.size)
        y = np.minimum((u * np.float32(K)).astype(np.int64), K - 1)

    calls = []
    monkeypatch.setattr(student.opt_g, "step", lambda: calls.append(1))
    terms = dmod._distill_step(t, student, Gt, Dt, Gs, Ds, _Stream(seed), n, T, w, None, None,
                               taps, need_dt, output_loss, clf)
    assert calls == [1]
    grads = {name: Gs.layers[int(name.split(".")[0])].g[name.split(".")[1]].copy()
             for name, _, _ in tGs.pairs()}

    # torch: the same formula, differentiated by autograd
    zt, yt = t64(z), tlab(y)
    with torch.no_grad():
        x_t = tGt(zt, yt)
    x_s = tGs(zt, yt)
    if term == "out":
        L = (x_s - x_t).abs().mean() if output_loss == "l1" else ((x_s - x_t) ** 2).mean()
    elif term == "kd":
        with torch.no_grad():
            lt = tDt(x_t, yt)
        L = _kd_binary(tDt(x_s, yt), lt, T)
    elif term == "feat":
        with torch.no_grad():
            _, ft = tDt(x_t, yt, taps=taps)
        _, fs = tDt(x_s, yt, taps=taps)
        L = sum((a - b).abs().mean() for a, b in zip(fs, ft))
    elif term == "cls":
        tC = TorchNet(clf.network).eval()
        with torch.no_grad():
            ct = tC(x_t)
        L = _kd_categorical(tC(x_s), ct, T)
    elif term == "adv":
        # black-box: teacher samples are D_s's real data; one Adam step of D_s, then the
        # generator's loss through the updated D_s (train mode, batch statistics)
        opt = torch.optim.Adam(tDs.parameters_in_order(), lr=student.config["lr"][1],
                               betas=tuple(student.config["betas"]), eps=1e-8)
        d_loss = (_adv_loss(loss, tDs(x_t, yt), "real")
                  + _adv_loss(loss, tDs(x_s.detach(), yt), "fake"))
        d_loss.backward()
        opt.step()
        assert rel_err(terms["d_loss"], d_loss.item()) <= GRAD_TOL
        L = _adv_loss(loss, tDs(x_s, yt), "gen")
    params = tGs.parameters_in_order()
    ref = torch.autograd.grad(L, params, allow_unused=True)

    assert rel_err(terms[term], L.item()) <= GRAD_TOL, (terms[term], L.item())
    assert set(terms) <= {term, "d_loss"} | ({"kd", "feat"} if need_dt else set()), terms
    for (name, _, _), r in zip(tGs.pairs(), ref):
        r = np.zeros_like(grads[name], np.float64) if r is None else r.numpy()
        err = rel_err(grads[name], r)
        assert err <= GRAD_TOL, f"{term}: dL/d{name}: rel_err {err:.3e} > {GRAD_TOL:g}"
    assert np.any(Gs.grads != 0)


def test_distill_weights_combine_linearly(teacher):
    """The gradient of a weighted sum of terms is the weighted sum of their gradients."""
    t = teacher[False]
    taps = dmod._feature_taps(t.discriminator)

    def grad(w):
        s = distgan.GAN(models.dcgan(width=0.25), seed=2)
        s.opt_g.step = lambda: None
        s.opt_d.step = lambda: None
        dmod._distill_step(t, s, t.g_ema, t.discriminator, s.generator, s.discriminator,
                           _Stream(5), N, 2.0, {**dict.fromkeys(dmod.DEFAULT_WEIGHTS, 0.0), **w},
                           None, None, taps, True, "l1", None)
        return s.generator.grads.astype(np.float64)

    combo = grad({"out": 0.5, "kd": 2.0, "feat": 3.0})
    parts = 0.5 * grad({"out": 1.0}) + 2.0 * grad({"kd": 1.0}) + 3.0 * grad({"feat": 1.0})
    assert rel_err(combo, parts) <= 1e-4
