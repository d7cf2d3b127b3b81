"""distgan.plot: every function draws headless and writes its file; grid's pixels.

matplotlib is switched to Agg by distgan.plot itself when no backend is chosen; the
subprocess test checks that on a machine without a display.
"""
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from distgan import plot


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return path


# -- grid --------------------------------------------------------------------------------

def test_grid_shape_and_values(tmp_path):
    # 5 gray images 3x4: -1 (black), +1 (white), 0 (mid), then two more
    x = np.zeros((5, 1, 3, 4), np.float32)
    x[0] = -1.0
    x[1] = 1.0
    img = plot.grid(x, nrow=3, padding=1, scale=1)
    # 2 rows of 3: height 2*(3+1)+1, width 3*(4+1)+1
    assert img.shape == (9, 16, 3) and img.dtype == np.uint8
    assert (img[1:4, 1:5] == 0).all()                   # image 0: -1 -> 0
    assert (img[1:4, 6:10] == 255).all()                # image 1: +1 -> 255
    assert (img[1:4, 11:15] == 128).all()               # image 2: 0 -> 127.5 -> 128
    assert (img[0, :] == 255).all() and (img[:, 0] == 255).all()   # white padding
    assert (img[5:8, 11:15] == 255).all()               # the empty sixth cell stays white
    # gray images give equal channels
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_grid_clips_scales_and_writes(tmp_path):
    x = np.full((4, 3, 2, 2), 5.0, np.float32)          # out of range: clipped to white
    x[:, 0] = -7.0                                      # red channel clipped to black
    img = plot.grid(x, path=tmp_path / "sub" / "g.png", padding=0, scale=3)
    assert img.shape == (2 * 2 * 3, 2 * 2 * 3, 3)
    assert (img[..., 0] == 0).all() and (img[..., 1:] == 255).all()
    from PIL import Image
    back = np.asarray(Image.open(_png(tmp_path / "sub" / "g.png")))
    assert np.array_equal(back, img)


def test_grid_default_layout_is_square():
    img = plot.grid(np.zeros((16, 1, 28, 28), np.float32), scale=1)
    assert img.shape == (4 * 30 + 2, 4 * 30 + 2, 3)


@pytest.mark.parametrize("bad", [np.zeros((2, 2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((0, 1, 4, 4))])
def test_grid_rejects_bad_shapes(bad):
    with pytest.raises(ValueError):
        plot.grid(bad)


# -- charts ------------------------------------------------------------------------------

def test_side_by_side(tmp_path, rng):
    a = rng.uniform(-1, 1, (16, 1, 8, 8)).astype(np.float32)
    fig = plot.side_by_side({"teacher": a, "student": a[::-1]}, path=tmp_path / "s.png", nrow=4)
    _png(tmp_path / "s.png")
    assert [ax.get_title() for ax in fig.axes] == ["teacher", "student"]
    fig = plot.side_by_side([a], path=tmp_path / "one.png", titles=["only"])
    assert fig.axes[0].get_title() == "only"
    _png(tmp_path / "one.png")


def test_losses(tmp_path):
    h = {"step": [10, 20, 30], "d_loss": [1.0, 0.9, 0.8], "g_loss": [2.0, 1.5, 1.2],
         "time": [0.1, 0.2, 0.3], "kd": [0.0, 0.0, 0.0]}
    fig = plot.losses(h, path=tmp_path / "l.png")
    _png(tmp_path / "l.png")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["d_loss", "g_loss"]          # time and all-zero terms are left out
    fig = plot.losses(h, keys=["g_loss"], title="G")
    assert fig.axes[0].get_title() == "G" and len(fig.axes[0].lines) == 1


def test_scatter(tmp_path, rng):
    pts = rng.normal(size=(200, 2))
    centers = np.array([[0.0, 0.0], [1.0, 1.0]])
    fig = plot.scatter(pts, centers, path=tmp_path / "sc.png", title="toy")
    _png(tmp_path / "sc.png")
    assert fig.axes[0].get_title() == "toy" and len(fig.axes[0].collections) == 2
    fig = plot.scatter(pts)                        # no centres
    assert len(fig.axes[0].collections) == 1
    import matplotlib.pyplot as plt
    f, ax = plt.subplots()
    assert plot.scatter(pts, ax=ax) is f           # draws into a given axis
    with pytest.raises(ValueError):
        plot.scatter(rng.normal(size=(10, 3)))


def test_scatters(tmp_path, rng):
    panels = {"teacher": rng.normal(size=(100, 2)), "student": rng.normal(size=(100, 2))}
    fig = plot.scatters(panels, np.zeros((1, 2)), path=tmp_path / "ss.png")
    _png(tmp_path / "ss.png")
    assert [ax.get_title() for ax in fig.axes] == ["teacher", "student"]
    with pytest.raises(ValueError):
        plot.scatters({})


def test_fid_vs_params(tmp_path):
    rows = [dict(name="t", params=1_800_000, fid=20.0, kind="teacher"),
            dict(name="s", params=350_000, fid=22.0, kind="distilled"),
            dict(name="b", params=350_000, fid=30.0, kind="scratch")]
    fig = plot.fid_vs_params(rows, path=tmp_path / "f.png")
    _png(tmp_path / "f.png")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["teacher", "scratch", "distilled"]


def test_fid_vs_T_and_metric_vs_T(tmp_path):
    fig = plot.fid_vs_T([0.5, 1, 2, 4], [30, 25, 24, 26], path=tmp_path / "t.png", label="w=0.25")
    _png(tmp_path / "t.png")
    assert list(fig.axes[0].lines[0].get_ydata()) == [30, 25, 24, 26]
    fig = plot.metric_vs_T([1, 2], {"precision": [0.5, 0.6], "recall": [0.3, 0.4]},
                           path=tmp_path / "m.png", ylabel="score", baseline=0.7)
    _png(tmp_path / "m.png")
    assert fig.axes[0].get_ylabel() == "score" and len(fig.axes[0].lines) == 3
    with pytest.raises(ValueError):
        plot.metric_vs_T([1, 2], [1.0])


def test_headless_without_display(tmp_path):
    """No DISPLAY and no MPLBACKEND: distgan.plot chooses Agg and writes the files."""
    code = (
        "import numpy as np, distgan.plot as p, matplotlib\n"
        "p.losses({'step': [1, 2], 'g_loss': [1.0, 0.5]}, path='l.png')\n"
        "p.scatter(np.zeros((5, 2)), path='s.png')\n"
        "p.grid(np.zeros((4, 1, 4, 4), np.float32), path='g.png')\n"
        "print(matplotlib.get_backend())\n")
    env = {k: v for k, v in subprocess_env().items()
           if k not in ("DISPLAY", "MPLBACKEND", "WAYLAND_DISPLAY")}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().lower() == "agg"
    for f in ("l.png", "s.png", "g.png"):
        _png(tmp_path / f)
