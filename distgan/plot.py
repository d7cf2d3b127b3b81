"""Pictures: sample grids, loss curves, toy scatter plots, FID against size or T.

Everything works headless. Sample grids need only Pillow; the charts use
matplotlib with the Agg backend unless another backend is already active.
Each function returns what it drew (an image array or a matplotlib Figure) and
writes it to ``path`` when one is given.
"""
from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["grid", "side_by_side", "losses", "scatter", "scatters", "fid_vs_params", "fid_vs_T",
           "metric_vs_T"]


def _pyplot():
    import matplotlib

    if "matplotlib.pyplot" not in __import__("sys").modules and not os.environ.get("MPLBACKEND"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid(images, path=None, nrow=None, padding=2, scale=2):
    """Tile images into one picture.

    Parameters
    ----------
    images : ndarray, (N, C, H, W) with C in {1, 3}, values in [-1, 1]
    path : str, optional
        Writes a PNG there.
    nrow : int, optional
        Images per row (default: about sqrt(N)).
    padding : int
        Pixels between images.
    scale : int
        Integer up-scaling of the picture (nearest neighbour).

    Returns
    -------
    ndarray, uint8, (H', W', 3)
    """
    x = np.asarray(images)
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer)
                                   or np.issubdtype(x.dtype, np.floating)):
        raise TypeError(f"grid expects real-valued images, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"grid expects (N, 1 or 3, H, W) images, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"grid: the images hold {int(x.size - np.isfinite(x).sum())} NaN "
                         "or infinite values")
    n, c, h, w = x.shape
    if n == 0:
        raise ValueError("grid: no images")
    nrow = nrow or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / nrow))
    canvas = np.full((3, rows * (h + padding) + padding, nrow * (w + padding) + padding), 1.0,
                     np.float32)
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    if c == 1:
        x = np.repeat(x, 3, axis=1)
    for i in range(n):
        r, q = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        canvas[:, y0:y0 + h, x0:x0 + w] = x[i]
    img = (canvas.transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    if path is not None:
        from PIL import Image

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        Image.fromarray(img).save(path)
    return img


def side_by_side(panels, path=None, titles=None, nrow=8):
    """Several sample grids next to each other with titles (matplotlib).

    ``panels`` is a list of (N, C, H, W) arrays (or a dict title -> array).
    """
    if isinstance(panels, dict):
        titles, panels = list(panels), list(panels.values())
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.4))
    axes = np.atleast_1d(axes)
    for i, (ax, p) in enumerate(zip(axes, panels)):
        ax.imshow(grid(p, nrow=nrow, scale=1))
        ax.set_axis_off()
        if titles:
            ax.set_title(titles[i])
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def losses(history, path=None, keys=None, title="losses"):
    """Loss curves from a training or distillation history (dict of lists with
    a ``step`` key)."""
    plt = _pyplot()
    keys = keys or [k for k in history if k not in ("step", "time") and
                    isinstance(history[k], list) and len(history[k]) == len(history["step"])
                    and any(v != 0 for v in history[k])]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k in keys:
        ax.plot(history["step"], history[k], label=k, lw=1)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def scatter(samples, centers=None, path=None, title=None, ax=None):
    """2-D samples over the mode centres of a toy set."""
    plt = _pyplot()
    s = np.asarray(samples)
    if s.ndim != 2 or s.shape[1] != 2:
        raise ValueError(f"scatter expects (N, 2) samples, got {s.shape}")
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.4, label="samples")
    if centers is not None:
        c = np.asarray(centers)
        ax.scatter(c[:, 0], c[:, 1], s=40, marker="x", c="red", label="modes")
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    if fig is not None:
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
    return fig if fig is not None else ax.figure


def scatters(panels, centers=None, path=None, titles=None):
    """Several 2-D sample sets side by side over the same mode centres (e.g. teacher
    and student on a toy set), with shared axes.

    Parameters
    ----------
    panels : dict title -> (N, 2) array, or a list of (N, 2) arrays
    centers : (K, 2) array, optional
    path : str, optional
        Writes the figure there.
    titles : list of str, optional
        Titles when ``panels`` is a list.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(panels, dict):
        titles, panels = list(panels), list(panels.values())
    if not panels:
        raise ValueError("scatters: no panels")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2),
                             sharex=True, sharey=True)
    axes = np.atleast_1d(axes)
    for i, (ax, p) in enumerate(zip(axes, panels)):
        scatter(p, centers, title=titles[i] if titles else None, ax=ax)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def fid_vs_params(rows, path=None):
    """FID against generator parameters; ``rows`` are dicts with ``name``,
    ``params``, ``fid`` and ``kind`` (teacher / scratch / distilled)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for kind, marker in (("teacher", "*"), ("scratch", "o"), ("distilled", "s")):
        r = [x for x in rows if x.get("kind") == kind]
        if r:
            ax.scatter([x["params"] for x in r], [x["fid"] for x in r], marker=marker, s=60, label=kind)
            for x in r:
                ax.annotate(x["name"], (x["params"], x["fid"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("generator parameters")
    ax.set_ylabel("FID (lower is better)")
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def fid_vs_T(Ts, fids, path=None, label=None):
    """FID against distillation temperature."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(list(Ts), list(fids), "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("temperature T")
    ax.set_ylabel("FID")
    if label:
        ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


def metric_vs_T(Ts, values, path=None, ylabel="FID", label=None, baseline=None,
                baseline_label="teacher"):
    """Any sample-quality measure against distillation temperature, optionally with a
    horizontal reference line (e.g. the teacher's value).

    Parameters
    ----------
    Ts : sequence of float
    values : sequence of float, or dict label -> sequence of float (several curves)
    path : str, optional
    ylabel : str
    label : str, optional
        Legend entry of a single curve.
    baseline : float, optional
        Drawn as a dashed line labelled ``baseline_label``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    series = values if isinstance(values, dict) else {label: values}
    for lab, v in series.items():
        v = list(v)
        if len(v) != len(list(Ts)):
            raise ValueError(f"metric_vs_T: {len(list(Ts))} temperatures but {len(v)} values")
        ax.plot(list(Ts), v, "o-", label=lab)
    if baseline is not None:
        ax.axhline(baseline, ls="--", c="gray", lw=1, label=baseline_label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("temperature T")
    ax.set_ylabel(ylabel)
    if baseline is not None or any(lab is not None for lab in series):
        ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
