"""Model specs: networks described as plain data.

A spec is a dict holding two lists of layer dicts (``"generator"`` and
``"discriminator"``) plus what is needed to rebuild and describe the model
(latent size, image shape, number of classes). Being plain data, a spec can be
printed, compared with ``==``, saved as JSON inside a checkpoint and rebuilt.

Layer dicts (PyTorch's weight layouts, see ``distgan.nn``):

=================== =========================================================
``linear``            ``in_features, out_features, bias``
``conv2d``            ``in_channels, out_channels, kernel_size, stride, padding``
``conv_transpose2d``  same plus ``output_padding``
``batch_norm``        ``num_features`` (over N for 2-D input, N,H,W for 4-D)
``relu`` ``tanh``     (no parameters)
``leaky_relu``        ``negative_slope``
``reshape``           ``shape`` (per sample)
``flatten``           (per sample)
``label_concat``      ``num_classes, embed_dim``: concatenates a learned label
                      embedding to the input (conditional generator)
``projection``        ``in_features, num_classes``: ``logit = psi(h) + <E[y], h>``
                      (projection discriminator, Miyato & Koyama 2018)
=================== =========================================================
"""
from __future__ import annotations

import copy
import math

__all__ = ["dcgan", "mlp", "classifier", "scale"]


def scale(channels: int, width: float) -> int:
    """Channel count ``channels`` scaled by ``width`` (at least 1)."""
    return max(1, int(round(channels * width)))


def _check_int(name, v, lo=1, none_ok=False):
    """v must be an int (not a bool) >= lo, or None when none_ok."""
    if v is None and none_ok:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}{' or None' if none_ok else ''}, got {v!r}")
    return v


def _check_width(name, w):
    if not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
        raise ValueError(f"{name} must be a positive number, got {w!r}")
    return float(w)


def dcgan(width: float = 1.0, latent_dim: int = 100, image_shape=(1, 28, 28),
          num_classes: int | None = None, d_width: float | None = None,
          embed_dim: int | None = None) -> dict:
    """DCGAN spec (Radford et al. 2016) sized for small images.

    Width 1.0 on 1x28x28 is exactly:
    G = Linear(100, 256*7*7) -> BatchNorm -> ReLU -> reshape (256, 7, 7)
    -> ConvTranspose(256->128, k4, s2, p1) -> BatchNorm -> ReLU
    -> ConvTranspose(128->1, k4, s2, p1) -> tanh;
    D = Conv(1->64, k4, s2, p1) -> LeakyReLU(0.2) -> Conv(64->128, k4, s2, p1)
    -> BatchNorm -> LeakyReLU(0.2) -> Linear(128*7*7 -> 1).

    Parameters
    ----------
    width : float
        Scales every channel count of the generator.
    latent_dim : int
        Size of the noise vector z.
    image_shape : tuple of int
        ``(C, H, W)`` with ``H == W``; 28 starts from 7x7 (two up-sampling
        stages), 32 and 64 from 4x4 (three and four stages).
    num_classes : int, optional
        Makes the model conditional: G concatenates a learned label embedding
        to z and D is a projection discriminator.
    d_width : float, optional
        Scales the discriminator's channels (default: ``width``).
    embed_dim : int, optional
        Size of G's label embedding (default ``max(10, num_classes)``).

    Returns
    -------
    dict
        The spec, usable by :class:`distgan.GAN`.
    """
    width = _check_width("width", width)
    d_width = width if d_width is None else _check_width("d_width", d_width)
    _check_int("latent_dim", latent_dim)
    _check_int("num_classes", num_classes, lo=2, none_ok=True)
    _check_int("embed_dim", embed_dim, none_ok=True)
    try:
        C, H, W = (int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}") from None
    if H != W or C < 1:
        raise ValueError(f"image_shape must be (C, H, H) with square images, got {image_shape!r}")
    if H % 7 == 0 and (H // 7) & (H // 7 - 1) == 0 and H >= 14:
        base = 7
    elif H % 4 == 0 and (H // 4) & (H // 4 - 1) == 0 and H >= 8:
        base = 4
    else:
        raise ValueError(f"image size {H} not supported: use 7*2^k (14, 28, 56) or 4*2^k (8, 16, 32, 64)")
    stages = int(round(math.log2(H // base)))

    # generator channels: 128 * 2^(stages-1) ... 128 at width 1 (256, 128 for 28x28)
    g_ch = [scale(128 * 2 ** (stages - 1 - i), width) for i in range(stages)]
    gen = []
    z_in = latent_dim
    if num_classes is not None:
        e = embed_dim if embed_dim is not None else max(10, num_classes)
        gen.append({"type": "label_concat", "num_classes": num_classes, "embed_dim": e})
        z_in += e
    gen += [
        {"type": "linear", "in_features": z_in, "out_features": g_ch[0] * base * base, "bias": False},
        {"type": "batch_norm", "num_features": g_ch[0] * base * base},
        {"type": "relu"},
        {"type": "reshape", "shape": [g_ch[0], base, base]},
    ]
    for i in range(1, stages):
        gen += [
            {"type": "conv_transpose2d", "in_channels": g_ch[i - 1], "out_channels": g_ch[i],
             "kernel_size": 4, "stride": 2, "padding": 1, "output_padding": 0, "bias": False},
            {"type": "batch_norm", "num_features": g_ch[i]},
            {"type": "relu"},
        ]
    gen += [
        {"type": "conv_transpose2d", "in_channels": g_ch[-1], "out_channels": C,
         "kernel_size": 4, "stride": 2, "padding": 1, "output_padding": 0, "bias": True},
        {"type": "tanh"},
    ]

    # discriminator channels: 64, 128, ... at width 1
    d_ch = [scale(64 * 2 ** i, d_width) for i in range(stages)]
    disc = []
    cin = C
    for i in range(stages):
        disc.append({"type": "conv2d", "in_channels": cin, "out_channels": d_ch[i],
                     "kernel_size": 4, "stride": 2, "padding": 1, "bias": i == 0})
        if i > 0:
            disc.append({"type": "batch_norm", "num_features": d_ch[i]})
        disc.append({"type": "leaky_relu", "negative_slope": 0.2})
        cin = d_ch[i]
    feat = d_ch[-1] * base * base
    disc.append({"type": "flatten"})
    if num_classes is None:
        disc.append({"type": "linear", "in_features": feat, "out_features": 1, "bias": True})
    else:
        disc.append({"type": "projection", "in_features": feat, "num_classes": num_classes})

    return {
        "name": "dcgan",
        "width": width,
        "d_width": d_width,
        "latent_dim": latent_dim,
        "image_shape": [C, H, W],
        "num_classes": num_classes,
        "generator": gen,
        "discriminator": disc,
    }


def mlp(latent_dim: int = 2, data_dim: int = 2, hidden: int = 128, depth: int = 3,
        width: float = 1.0, d_width: float | None = None, num_classes: int | None = None,
        batch_norm: bool = True) -> dict:
    """MLP GAN spec for the 2-D toy sets (ring8, grid25).

    G: ``depth`` x [Linear -> BatchNorm (if ``batch_norm``) -> ReLU] -> Linear(data_dim).
    D: ``depth`` x [Linear -> LeakyReLU(0.2)] -> Linear(1).
    ``hidden`` is scaled by ``width`` (G) and ``d_width`` (D).
    """
    width = _check_width("width", width)
    d_width = width if d_width is None else _check_width("d_width", d_width)
    for name, v in (("latent_dim", latent_dim), ("data_dim", data_dim), ("hidden", hidden), ("depth", depth)):
        _check_int(name, v)
    _check_int("num_classes", num_classes, lo=2, none_ok=True)
    hg, hd = scale(hidden, width), scale(hidden, d_width)
    gen, cin = [], latent_dim
    if num_classes is not None:
        gen.append({"type": "label_concat", "num_classes": num_classes, "embed_dim": max(4, num_classes)})
        cin += max(4, num_classes)
    for _ in range(depth):
        gen.append({"type": "linear", "in_features": cin, "out_features": hg, "bias": True})
        if batch_norm:
            gen.append({"type": "batch_norm", "num_features": hg})
        gen.append({"type": "relu"})
        cin = hg
    gen.append({"type": "linear", "in_features": cin, "out_features": data_dim, "bias": True})
    disc, cin = [], data_dim
    for _ in range(depth):
        disc += [{"type": "linear", "in_features": cin, "out_features": hd, "bias": True},
                 {"type": "leaky_relu", "negative_slope": 0.2}]
        cin = hd
    if num_classes is None:
        disc.append({"type": "linear", "in_features": cin, "out_features": 1, "bias": True})
    else:
        disc.append({"type": "projection", "in_features": cin, "num_classes": num_classes})
    return {"name": "mlp", "width": width, "d_width": d_width, "latent_dim": latent_dim,
            "image_shape": [data_dim], "num_classes": num_classes,
            "generator": gen, "discriminator": disc}


def classifier(width: float = 1.0, image_shape=(1, 28, 28), num_classes: int = 10,
               feature_dim: int = 128) -> dict:
    """Small CNN classifier spec: [conv3x3 -> BN -> ReLU] x2 per stage, stride-2
    down-sampling, then a ``feature_dim`` penultimate layer and ``num_classes`` logits.

    Used as the evaluation network (features for FID etc.) and for Hinton
    distillation of classifiers.
    """
    width = _check_width("width", width)
    C, H, W = (int(s) for s in image_shape)
    layers, cin, h = [], C, H
    for i, ch in enumerate((32, 64)):
        c = scale(ch, width)
        layers += [
            {"type": "conv2d", "in_channels": cin, "out_channels": c, "kernel_size": 3,
             "stride": 1, "padding": 1, "bias": False},
            {"type": "batch_norm", "num_features": c}, {"type": "relu"},
            {"type": "conv2d", "in_channels": c, "out_channels": c, "kernel_size": 4,
             "stride": 2, "padding": 1, "bias": False},
            {"type": "batch_norm", "num_features": c}, {"type": "relu"},
        ]
        cin, h = c, h // 2
    f = scale(feature_dim, width)
    layers += [
        {"type": "flatten"},
        {"type": "linear", "in_features": cin * h * (W // 4), "out_features": f, "bias": False},
        {"type": "batch_norm", "num_features": f}, {"type": "relu"},
        {"type": "linear", "in_features": f, "out_features": num_classes, "bias": True},
    ]
    return {"name": "classifier", "width": width, "image_shape": [C, H, W],
            "num_classes": num_classes, "network": layers}


def copy_spec(spec: dict) -> dict:
    """A deep copy of a spec (specs are plain data)."""
    return copy.deepcopy(spec)
