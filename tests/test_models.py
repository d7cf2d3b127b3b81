"""Model specs (distgan.models): the DCGAN of issue 3 exactly, width scaling, other image
shapes, conditional and MLP specs, parameter and MAC counts, argument checking, and specs
as plain data.

The reference architecture is written out here a second time, independently of
distgan.models, as literal layer dicts and as a torch.nn model built from issue 3's text:

    G = Linear(100, 256*7*7) -> BatchNorm -> ReLU -> reshape (256, 7, 7)
        -> ConvTranspose(256->128, k4, s2, p1) -> BatchNorm -> ReLU
        -> ConvTranspose(128->1, k4, s2, p1) -> tanh
    D = Conv(1->64, k4, s2, p1) -> LeakyReLU(0.2) -> Conv(64->128, k4, s2, p1)
        -> BatchNorm -> LeakyReLU(0.2) -> Linear(128*7*7 -> 1)

Bias convention (the issue leaves it open; PyTorch's DCGAN example drops biases before
batch norm): a linear/conv layer followed by batch norm has no bias (the norm's shift
subsumes it), every other one has.
"""
import copy
import json
import math

import numpy as np
import pytest

import distgan
from distgan import models


@pytest.fixture(autouse=True)
def _one_thread():
    n = distgan.get_num_threads()
    distgan.set_num_threads(1)
    yield
    distgan.set_num_threads(n)


def _conv(cin, cout, bias):
    return {"type": "conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": 4,
            "stride": 2, "padding": 1, "bias": bias}


def _convt(cin, cout, bias):
    return {"type": "conv_transpose2d", "in_channels": cin, "out_channels": cout,
            "kernel_size": 4, "stride": 2, "padding": 1, "output_padding": 0, "bias": bias}


ISSUE3_G = [
    {"type": "linear", "in_features": 100, "out_features": 256 * 7 * 7, "bias": False},
    {"type": "batch_norm", "num_features": 256 * 7 * 7},
    {"type": "relu"},
    {"type": "reshape", "shape": [256, 7, 7]},
    _convt(256, 128, False),
    {"type": "batch_norm", "num_features": 128},
    {"type": "relu"},
    _convt(128, 1, True),
    {"type": "tanh"},
]
ISSUE3_G_SHAPES = [(100,), (12544,), (12544,), (12544,), (256, 7, 7), (128, 14, 14),
                   (128, 14, 14), (128, 14, 14), (1, 28, 28), (1, 28, 28)]
ISSUE3_D = [
    _conv(1, 64, True),
    {"type": "leaky_relu", "negative_slope": 0.2},
    _conv(64, 128, False),
    {"type": "batch_norm", "num_features": 128},
    {"type": "leaky_relu", "negative_slope": 0.2},
    {"type": "flatten"},
    {"type": "linear", "in_features": 128 * 7 * 7, "out_features": 1, "bias": True},
]
ISSUE3_D_SHAPES = [(1, 28, 28), (64, 14, 14), (64, 14, 14), (128, 7, 7), (128, 7, 7),
                   (128, 7, 7), (6272,), (1,)]


def _torch_dcgan(torch):
    """Issue 3's width-1.0 DCGAN written directly in torch.nn."""
    nn = torch.nn
    G = nn.Sequential(
        nn.Linear(100, 256 * 7 * 7, bias=False), nn.BatchNorm1d(256 * 7 * 7), nn.ReLU(),
        nn.Unflatten(1, (256, 7, 7)),
        nn.ConvTranspose2d(256, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 1, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(
        nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1, bias=False), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 1))
    return G, D


def _torch_shapes(torch, seq, n_in):
    x = torch.zeros((2,) + tuple(n_in))
    shapes = [tuple(n_in)]
    seq.eval()
    with torch.no_grad():
        for m in seq:
            x = m(x)
            shapes.append(tuple(x.shape[1:]))
    return shapes


# --------------------------------------------------------------------------------------------
# issue 3's DCGAN, exactly
# --------------------------------------------------------------------------------------------

def test_dcgan_width1_is_issue3_architecture():
    spec = models.dcgan(1.0)
    assert spec["generator"] == ISSUE3_G
    assert spec["discriminator"] == ISSUE3_D
    assert spec["latent_dim"] == 100 and list(spec["image_shape"]) == [1, 28, 28]
    assert spec["num_classes"] is None
    gan = distgan.GAN(spec, seed=0)
    assert gan.generator.shapes == ISSUE3_G_SHAPES
    assert gan.discriminator.shapes == ISSUE3_D_SHAPES
    assert [l.type for l in gan.generator.layers] == [d["type"] for d in ISSUE3_G]
    assert [l.type for l in gan.discriminator.layers] == [d["type"] for d in ISSUE3_D]


def test_dcgan_width1_param_counts_equal_torch(torch):
    G, D = _torch_dcgan(torch)
    gan = distgan.GAN(models.dcgan(1.0), seed=0)
    n_g = sum(p.numel() for p in G.parameters())
    n_d = sum(p.numel() for p in D.parameters())
    assert (n_g, n_d) == (1_806_081, 138_689)          # worked out by hand in the docstring
    assert gan.generator.num_params == n_g
    assert gan.discriminator.num_params == n_d
    # per-layer parameter shapes too, in PyTorch's layouts
    for net, seq in ((gan.generator, G), (gan.discriminator, D)):
        ours = [(name.split(".")[1], tuple(a.shape)) for name, a in net.named_parameters()]
        theirs = [(name.split(".")[1], tuple(p.shape)) for name, p in seq.named_parameters()]
        assert ours == theirs
    # and the activation shapes of a forward pass
    assert gan.generator.shapes == _torch_shapes(torch, G, (100,))
    assert gan.discriminator.shapes == _torch_shapes(torch, D, (1, 28, 28))


def test_large_flat_arrays_in_huge_pages():
    """A network's flat params and grads from 1 MiB on (``nn._huge_zeros``): where the
    platform has ``MADV_HUGEPAGE``, 2 MiB aligned in a mapping marked for transparent
    huge pages, and like ``np.zeros``' arrays otherwise: float32 zeros, writable, and
    alive while the array is (the mapping is its base); below 1 MiB, zeros on a
    64-byte line (``nn._aligned``), not in such a mapping."""
    import gc
    import mmap

    from distgan import nn
    huge = hasattr(mmap, "MADV_HUGEPAGE")
    gan = distgan.GAN(models.dcgan(1.0), seed=0)
    for a in (gan.generator.params, gan.generator.grads, gan.g_ema.params):   # 7.2 MB
        assert a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
        assert (a.ctypes.data % (1 << 21) == 0) == huge
    small = gan.discriminator.params   # 0.55 MB
    assert small.ctypes.data % 64 == 0 and isinstance(small.base, np.ndarray)
    z = nn._huge_zeros((3 << 20) // 4 + 5)
    assert z.shape == ((3 << 20) // 4 + 5,) and z.dtype == np.float32 and not z.any()
    z[:] = np.arange(z.size, dtype=np.float32)
    gc.collect()
    assert np.array_equal(z, np.arange(z.size, dtype=np.float32))
    small = nn._huge_zeros(1000)
    assert small.ctypes.data % 64 == 0 and small.shape == (1000,)
    assert small.dtype == np.float32 and not small.any()


@pytest.mark.parametrize("shape", [(1,), (1000,), (3, 5, 7), (64, 128, 14, 14)])
def test_aligned_arrays_start_on_a_cache_line(shape):
    """``nn._aligned``: float32 arrays of the shape asked for, C-contiguous and
    writable, starting on a 64-byte line (NumPy's allocator gives 16 bytes), zeros
    when asked; a network's cached buffers and workspace are such arrays."""
    from distgan import nn
    for zero in (False, True):
        a = nn._aligned(shape, zero)
        assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
        assert a.flags.writeable and a.ctypes.data % 64 == 0
        if zero:
            assert not a.any()
        a[...] = 1.0
        assert (a == 1.0).all()
    g = distgan.GAN(models.dcgan(0.25), seed=0)
    g.sample(1)
    bufs = list(g.g_ema._bufs.values())
    assert bufs and all(b.ctypes.data % 64 == 0 for b in bufs)
    assert g.g_ema.workspace.ctypes.data % 64 == 0


def test_dcgan_width1_macs_hand_count():
    """MACs per sample counted by hand: a GEMM layer costs in*out (linear),
    OC*OH*OW*C*K*K (conv), C*H*W*OC*K*K (conv-transpose: every input pixel scatters a
    K*K*OC block); batch norm and activations are not counted."""
    g_gemm = {0: 100 * 12544, 4: 256 * 7 * 7 * 128 * 16, 7: 128 * 14 * 14 * 1 * 16}
    g_elem = 0
    d_gemm = {0: 64 * 14 * 14 * 1 * 16, 2: 128 * 7 * 7 * 64 * 16, 6: 6272}
    d_elem = 0
    gan = distgan.GAN(models.dcgan(1.0), seed=0)
    for net, gemm, elem, total in ((gan.generator, g_gemm, g_elem, 27_345_920),
                                   (gan.discriminator, d_gemm, d_elem, 6_629_504)):
        for i, m in gemm.items():
            assert net.layers[i].macs(net.shapes[i]) == m, (i, net.layers[i].type)
        assert sum(gemm.values()) + elem == total
        assert net.macs == total


# --------------------------------------------------------------------------------------------
# widths, other shapes
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("w", [0.5, 0.25, 0.125])
def test_width_scales_every_channel(w):
    spec = models.dcgan(width=w)
    g1, g2 = round(256 * w), round(128 * w)
    d1, d2 = round(64 * w), round(128 * w)
    G, D = spec["generator"], spec["discriminator"]
    assert G[0]["out_features"] == g1 * 49 and G[1]["num_features"] == g1 * 49
    assert G[3]["shape"] == [g1, 7, 7]
    assert (G[4]["in_channels"], G[4]["out_channels"], G[5]["num_features"]) == (g1, g2, g2)
    assert (G[7]["in_channels"], G[7]["out_channels"]) == (g2, 1)
    assert (D[0]["out_channels"], D[2]["in_channels"], D[2]["out_channels"]) == (d1, d1, d2)
    assert D[3]["num_features"] == d2 and D[6]["in_features"] == d2 * 49
    # same layer sequence as width 1; kernel/stride/padding untouched
    ref = models.dcgan(1.0)
    for a, b in zip(G + D, ref["generator"] + ref["discriminator"]):
        assert a["type"] == b["type"]
        for k in ("kernel_size", "stride", "padding", "negative_slope", "bias"):
            assert a.get(k) == b.get(k)
    gan = distgan.GAN(spec, seed=0)
    assert gan.generator.output_shape == (1, 28, 28)
    assert gan.discriminator.output_shape == (1,)


def test_d_width_scales_only_the_discriminator():
    spec = models.dcgan(width=0.25, d_width=1.0)
    assert spec["generator"] == models.dcgan(0.25)["generator"]
    assert spec["discriminator"] == models.dcgan(1.0)["discriminator"]
    spec = models.dcgan(width=1.0, d_width=0.5)
    assert spec["generator"] == models.dcgan(1.0)["generator"]
    assert spec["discriminator"] == models.dcgan(0.5)["discriminator"]
    assert models.dcgan(0.5)["d_width"] == 0.5          # default: same as width


def test_student_cost_ratios_of_issue4():
    """Issue 4: width 1/4 has ~5x fewer generator parameters and ~13x fewer MACs than the
    teacher, width 1/8 ~10x and ~45x."""
    def g(w):
        return distgan.GAN(models.dcgan(w), seed=0).generator

    t = g(1.0)
    for w, (p_lo, p_hi), (m_lo, m_hi) in ((0.25, (4.5, 5.5), (12.0, 14.5)),
                                          (0.125, (9.5, 11.5), (40.0, 50.0))):
        s = g(w)
        assert p_lo <= t.num_params / s.num_params <= p_hi, (w, t.num_params / s.num_params)
        assert m_lo <= t.macs / s.macs <= m_hi, (w, t.macs / s.macs)


def test_dcgan_3x32x32():
    spec = models.dcgan(1.0, image_shape=(3, 32, 32))
    gan = distgan.GAN(spec, seed=0)
    G, D = gan.generator, gan.discriminator
    assert G.output_shape == (3, 32, 32) and D.input_shape == (3, 32, 32)
    # three up-sampling stages from 4x4: 512 -> 256 -> 128 -> 3
    assert G.shapes[4] == (512, 4, 4)
    convt = [l for l in G.layers if l.type == "conv_transpose2d"]
    assert [(l.spec["in_channels"], l.spec["out_channels"]) for l in convt] == \
        [(512, 256), (256, 128), (128, 3)]
    convs = [l for l in D.layers if l.type == "conv2d"]
    assert [(l.spec["in_channels"], l.spec["out_channels"]) for l in convs] == \
        [(3, 64), (64, 128), (128, 256)]
    assert D.layers[-1].spec["in_features"] == 256 * 4 * 4
    # a small one trains and samples
    small = distgan.GAN(models.dcgan(0.125, image_shape=(3, 32, 32)), seed=0)
    x = np.tanh(np.random.default_rng(0).normal(size=(4, 3, 32, 32))).astype(np.float32)
    losses = small.step(x)
    assert all(math.isfinite(v) for v in losses.values())
    s = small.sample(3, seed=1)
    assert s.shape == (3, 3, 32, 32) and s.dtype == np.float32


@pytest.mark.parametrize("shape,stages", [((1, 14, 14), 1), ((1, 56, 56), 3), ((1, 16, 16), 2),
                                          ((3, 64, 64), 4)])
def test_dcgan_other_sizes(shape, stages):
    spec = models.dcgan(0.125, image_shape=shape)
    assert sum(d["type"] == "conv_transpose2d" for d in spec["generator"]) == stages
    gan = distgan.GAN(spec, seed=0)
    assert gan.generator.output_shape == shape


# --------------------------------------------------------------------------------------------
# conditional and MLP specs
# --------------------------------------------------------------------------------------------

def test_conditional_spec():
    spec = models.dcgan(1.0, num_classes=10)
    G, D = spec["generator"], spec["discriminator"]
    assert G[0] == {"type": "label_concat", "num_classes": 10, "embed_dim": 10}
    assert G[1]["in_features"] == 110
    assert G[2:] == ISSUE3_G[1:]
    assert D[:-1] == ISSUE3_D[:-1]
    assert D[-1] == {"type": "projection", "in_features": 6272, "num_classes": 10}
    assert spec["num_classes"] == 10
    cond = distgan.GAN(spec, seed=0)
    plain = distgan.GAN(models.dcgan(1.0), seed=0)
    # G: + the 10x10 embedding + 10 more inputs of the first linear layer
    assert cond.generator.num_params == plain.generator.num_params + 10 * 10 + 10 * 12544
    # D: projection = linear psi (6272 + 1) + a 10 x 6272 class embedding
    assert cond.discriminator.num_params == plain.discriminator.num_params + 10 * 6272
    assert cond.generator.needs_labels and cond.discriminator.needs_labels
    e = models.dcgan(0.25, num_classes=3, embed_dim=7)["generator"][0]
    assert e == {"type": "label_concat", "num_classes": 3, "embed_dim": 7}


def test_mlp_spec(torch):
    spec = models.mlp()
    assert spec["latent_dim"] == 2 and list(spec["image_shape"]) == [2]
    G, D = spec["generator"], spec["discriminator"]
    assert [d["type"] for d in G] == ["linear", "batch_norm", "relu"] * 3 + ["linear"]
    assert [d["type"] for d in D] == ["linear", "leaky_relu"] * 3 + ["linear"]
    assert G[-1]["out_features"] == 2 and D[-1]["out_features"] == 1
    nn = torch.nn
    tG = nn.Sequential(nn.Linear(2, 128), nn.BatchNorm1d(128), nn.ReLU(),
                       nn.Linear(128, 128), nn.BatchNorm1d(128), nn.ReLU(),
                       nn.Linear(128, 128), nn.BatchNorm1d(128), nn.ReLU(), nn.Linear(128, 2))
    tD = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128),
                       nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                       nn.Linear(128, 1))
    gan = distgan.GAN(spec, seed=0)
    assert gan.generator.num_params == sum(p.numel() for p in tG.parameters()) == 34_434
    assert gan.discriminator.num_params == sum(p.numel() for p in tD.parameters()) == 33_537
    assert gan.generator.macs == 2 * 128 + 2 * 128 * 128 + 128 * 2
    # width / d_width / hidden / depth
    s = models.mlp(hidden=64, depth=2, width=0.5, d_width=2.0, latent_dim=3)
    assert [d["out_features"] for d in s["generator"] if d["type"] == "linear"] == [32, 32, 2]
    assert [d["out_features"] for d in s["discriminator"] if d["type"] == "linear"] == [128, 128, 1]
    assert s["generator"][0]["in_features"] == 3
    c = models.mlp(num_classes=25)
    assert c["generator"][0]["type"] == "label_concat"
    assert c["discriminator"][-1]["type"] == "projection"
    x = np.random.default_rng(0).normal(size=(8, 2)).astype(np.float32)
    losses = gan.step(x)
    assert all(math.isfinite(v) for v in losses.values())
    assert gan.sample(5, seed=0).shape == (5, 2)


# --------------------------------------------------------------------------------------------
# argument checking
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(width=0), dict(width=-0.5), dict(width=float("nan")), dict(width=float("inf")),
    dict(width="1"), dict(width=None), dict(d_width=0), dict(d_width=-1),
    dict(latent_dim=0), dict(latent_dim=-3), dict(latent_dim=1.5), dict(latent_dim=True),
    dict(image_shape=(1, 28, 27)), dict(image_shape=(1, 30, 30)), dict(image_shape=(1, 7, 7)),
    dict(image_shape=(0, 28, 28)), dict(image_shape=(28, 28)), dict(image_shape="abc"),
    dict(image_shape=None),
    dict(num_classes=1), dict(num_classes=0), dict(num_classes=2.5), dict(num_classes="10"),
    dict(num_classes=10, embed_dim=0), dict(num_classes=10, embed_dim=-2),
    dict(num_classes=10, embed_dim=2.5),
], ids=repr)
def test_dcgan_bad_arguments(kw):
    with pytest.raises(ValueError):
        models.dcgan(**kw)


@pytest.mark.parametrize("kw", [
    dict(hidden=0), dict(hidden=2.5), dict(depth=0), dict(width=-1), dict(d_width=0),
    dict(latent_dim=0), dict(data_dim=0), dict(num_classes=1), dict(num_classes=0),
    dict(num_classes=2.5),
], ids=repr)
def test_mlp_bad_arguments(kw):
    with pytest.raises(ValueError):
        models.mlp(**kw)


def test_bad_specs_rejected_by_gan():
    with pytest.raises(ValueError, match="spec"):
        distgan.GAN({"generator": []})
    with pytest.raises(ValueError, match="spec"):
        distgan.GAN([1, 2])
    spec = models.dcgan(0.25)
    spec["generator"][0]["type"] = "no_such_layer"
    with pytest.raises(ValueError, match="no_such_layer"):
        distgan.GAN(spec)
    spec = models.dcgan(0.25)
    spec["discriminator"][-1]["in_features"] += 1          # shapes do not chain
    with pytest.raises(ValueError):
        distgan.GAN(spec)
    spec = models.dcgan(0.25)
    spec["image_shape"] = [1, 32, 32]                      # G makes 28x28
    with pytest.raises(ValueError):
        distgan.GAN(spec)


# --------------------------------------------------------------------------------------------
# specs are plain data
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: models.dcgan(0.25), lambda: models.dcgan(1.0, num_classes=10),
    lambda: models.dcgan(0.5, image_shape=(3, 32, 32), d_width=0.25), lambda: models.mlp(),
    lambda: models.mlp(num_classes=8, depth=2),
], ids=["dcgan", "dcgan-cond", "dcgan-32", "mlp", "mlp-cond"])
def test_spec_is_plain_data(make):
    spec = make()
    text = json.dumps(spec)                                # only JSON types inside
    back = json.loads(text)
    assert back == spec
    assert make() == spec and make() is not spec          # deterministic, fresh each call
    a, b = distgan.GAN(spec, seed=3), distgan.GAN(back, seed=3)
    for na, nb in ((a.generator, b.generator), (a.discriminator, b.discriminator)):
        assert na.num_params == nb.num_params and na.macs == nb.macs
        assert np.array_equal(na.params, nb.params)        # same seed, same initial weights
    print(models.copy_spec(spec))                          # printable
    assert models.copy_spec(spec) == spec


def test_spec_not_mutated_and_not_aliased():
    spec = models.dcgan(0.25, num_classes=10)
    before = copy.deepcopy(spec)
    gan = distgan.GAN(spec, seed=0)
    gan.step(np.zeros((4, 1, 28, 28), np.float32), np.arange(4))
    assert spec == before
    spec["generator"][1]["out_features"] = 5               # editing the dict afterwards ...
    assert gan.generator.layers[1].spec["out_features"] == 64 * 49   # ... changes nothing built
    assert models.dcgan(0.25, num_classes=10) == before


def test_specs_compare_by_value():
    assert models.dcgan(0.25) == models.dcgan(width=0.25, d_width=0.25)
    assert models.dcgan(0.25) != models.dcgan(0.5)
    assert models.dcgan(0.25) != models.dcgan(0.25, num_classes=10)
    assert models.scale(128, 0.25) == 32 and models.scale(3, 0.1) == 1


def _fused_as_unfused(layers, x, dout, taps, fused, train, prepare=lambda net: None):
    """Runs the network of ``layers`` forward and backward twice, as it fuses (its
    ``_fused`` must then be ``fused``) and with the fused layers tapped (nothing
    fused), and asserts the same output, input gradient and parameter gradients to
    the bit. Returns the last network."""
    from distgan.nn import Network
    res = []
    for t in (None, taps):
        net = Network(layers, x.shape[1:], seed=0)
        prepare(net)
        out = net.forward(x, train=train, taps=t)
        out = (out[0] if t else out).copy()
        assert net._fused == (fused if t is None else set())
        net.zero_grad()
        dx = net.backward(dout).copy()
        res.append((out, dx, net.grads.copy()))
    for a, b in zip(*res):
        assert np.array_equal(a, b)
    return net


@pytest.mark.parametrize("act", [{"type": "relu"}, {"type": "leaky_relu", "negative_slope": 0.2}])
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_fused_with_activation(act, train, rng):
    """A batch norm followed by a ReLU or LeakyReLU runs as one fused core op
    (``_batchnorm_*(..., act=)``), forward and backward, unless its own output is a
    tap: the fused network gives the same output, input gradient and parameter
    gradients as the same network with the fusion off (the batch norm tapped), and
    tap gradients at a fused batch norm are refused."""
    layers = [{"type": "conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3,
               "padding": 1, "bias": False},
              {"type": "batch_norm", "num_features": 8}, dict(act),
              {"type": "flatten"}, {"type": "linear", "in_features": 8 * 25, "out_features": 4},
              {"type": "batch_norm", "num_features": 4}, dict(act)]
    x = rng.standard_normal((6, 3, 5, 5)).astype(np.float32)
    dout = rng.standard_normal((6, 4)).astype(np.float32)

    def running_stats(net):
        if not train:
            srng = np.random.default_rng(7)   # the same running statistics for both
            for l in net.layers:
                if "running_var" in l.b:
                    l.b["running_mean"][...] = srng.standard_normal(l.b["running_mean"].shape)
                    l.b["running_var"][...] = 1.5

    net = _fused_as_unfused(layers, x, dout, [1, 5], {1, 5}, train, running_stats)
    net.forward(x, train=train)
    with pytest.raises(ValueError, match="tap_grads has layer 1"):
        net.backward(dout, tap_grads={1: np.zeros((6, 8, 5, 5), np.float32)})


@pytest.mark.parametrize("act", [{"type": "relu"}, {"type": "leaky_relu", "negative_slope": 0.2}])
@pytest.mark.parametrize("train", [True, False])
def test_conv2d_fused_with_activation(act, train, rng):
    """A one-channel conv2d followed by a ReLU or LeakyReLU (a DCGAN critic's first
    layer) runs as one fused core op where ``_core._conv2d_act_fits`` (AVX-512),
    unless its own output is a tap or the activations are frozen: the same output,
    input gradient and parameter gradients, to the bit, as with the fusion off."""
    from distgan import _core
    layers = [{"type": "conv2d", "in_channels": 1, "out_channels": 8, "kernel_size": 4,
               "stride": 2, "padding": 1, "bias": True}, dict(act),
              {"type": "flatten"}, {"type": "linear", "in_features": 8 * 64, "out_features": 3}]
    x = rng.standard_normal((6, 1, 16, 16)).astype(np.float32)
    dout = rng.standard_normal((6, 3)).astype(np.float32)
    fits = _core._conv2d_act_fits(6, 1, 16, 16, 8, 4, 4, 2, 2, 1, 1, 8, 8)
    net = _fused_as_unfused(layers, x, dout, [0], {0} if fits else set(), train)
    out = net.forward(x, train=train).copy()
    with net.frozen_activations():
        assert np.array_equal(net.forward(x, train=train), out)
        assert net._fused == set()
    if fits:
        with pytest.raises(ValueError, match="tap_grads has layer 0"):
            net.forward(x, train=train)
            net.backward(dout, tap_grads={0: np.zeros((6, 8, 8, 8), np.float32)})


def test_batchnorm_fused_activation_errors():
    """The fused ops' arguments: act must be 0, 1 or 2, a LeakyReLU slope >= 0, and the
    backward of a fused activation needs the forward's output."""
    from distgan import _core
    x = np.ones((4, 2), np.float32)
    out, m, r = np.empty_like(x), np.empty(2, np.float32), np.empty(2, np.float32)
    with pytest.raises(ValueError, match="act must be 0"):
        _core._batchnorm_forward(out, m, r, None, None, x, None, None, 1e-5, 0.1, act=3)
    with pytest.raises(ValueError, match="slope must be >= 0"):
        _core._batchnorm_forward_eval(out, x, m, r + 1, None, None, 1e-5, act=2, slope=-0.2)
    with pytest.raises(ValueError, match="out .the fused forward's output. is required"):
        _core._batchnorm_backward(np.zeros_like(x), None, None, x, x, m, r, None, act=1)
