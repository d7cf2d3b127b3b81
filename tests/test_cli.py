"""The command line: every subcommand with tiny settings (--quick) in temporary run folders.

The commands run in-process through ``distgan.cli.main`` (one Python, no start-up cost
per command); ``python -m distgan`` is checked once in a subprocess. distgan's caches
go to a temporary folder.
"""
import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import subprocess_env
from distgan import cli, datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ["train", "distill", "eval", "sample", "report", "demo"]


def _have_fashion_mnist():
    try:
        datasets.load("fashion-mnist", download=False)
    except datasets.DatasetError:
        return False
    return True


needs_fmnist = pytest.mark.skipif(not _have_fashion_mnist(),
                                  reason="Fashion-MNIST is not on this machine")


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path_factory):
    """Caches in a temporary folder; the BLAS thread count (which --threads sets for the
    whole process) restored afterwards."""
    import distgan
    threads = distgan.get_num_threads()
    monkeypatch.setenv("DISTGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("DISTGAN_QUICK", raising=False)
    yield
    distgan.set_num_threads(threads)
    import matplotlib.pyplot as plt
    plt.close("all")


def run(*argv):
    """main(argv) with one thread and no progress bars; returns the exit status."""
    return cli.main([*argv, "--threads", "1", "--no-progress"])


def metrics(folder):
    return json.loads((pathlib.Path(folder) / "metrics.json").read_text())


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """One tiny training run shared by the distill/sample/eval/report tests."""
    out = tmp_path_factory.mktemp("runs") / "teacher"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTGAN_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        if _have_fashion_mnist():
            assert run("train", "--quick", "--out", str(out)) == 0
        else:
            assert run("train", "--quick", "--data", "grid25", "--out", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def distill_run(teacher_run):
    out = teacher_run.parent / "distill"
    assert run("distill", "--quick", "--teacher", str(teacher_run / "gan.safetensors"),
               "--out", str(out)) == 0
    return out


# -- help ----------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: distgan")
    if command is None:
        assert all(c in out for c in COMMANDS)
    elif command in ("train", "distill", "demo"):
        assert "configuration keys" in out and "--set" in out


def test_python_m_distgan():
    env = subprocess_env()
    r = subprocess.run([sys.executable, "-m", "distgan", "demo", "--help"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "usage: distgan demo" in r.stdout
    r = subprocess.run([sys.executable, "-m", "distgan", "frobnicate"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.skipif(shutil.which("distgan") is None, reason="the console script is not installed")
def test_console_script():
    r = subprocess.run(["distgan", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "demo" in r.stdout


# -- train ---------------------------------------------------------------------------------

def test_train_writes_run_folder(teacher_run):
    for f in ("config.toml", "gan.safetensors", "metrics.json", "samples.png", "losses.png"):
        assert (teacher_run / f).is_file(), f
    m = metrics(teacher_run)
    assert m["command"] == "train" and m["quick"] is True
    gan = m["models"]["gan"]
    assert gan["train"]["steps"] == 4
    assert gan["profile"]["generator_params"] > 0
    q = gan["eval"]
    assert np.isfinite(q["fid"]) if "fid" in q else q["modes"] >= 0
    # the written config is a valid configuration of the same command
    cfg = cli.resolve_config("train", teacher_run / "config.toml")
    assert cfg["train"]["steps"] == 4 and cfg["eval"]["classifier"] == "tiny"


def test_train_toy_set_uses_mlp(tmp_path):
    assert run("train", "--quick", "--data", "grid25", "--out", str(tmp_path)) == 0
    m = metrics(tmp_path)["models"]["gan"]
    assert m["spec"]["name"] == "mlp" and m["spec"]["image_shape"] == [2]
    assert 0 <= m["eval"]["modes"] <= m["eval"]["num_modes"] == 25
    assert (tmp_path / "samples.png").is_file()


def test_train_resume(tmp_path, capsys):
    args = ("train", "--quick", "--data", "grid25", "--set", "eval.enabled=false",
            "--set", "eval.profile=false", "--out", str(tmp_path))
    assert run(*args) == 0
    assert run(*args) == 2                                  # would overwrite: refused
    assert "--resume" in capsys.readouterr().err
    assert run(*args, "--resume", "--steps", "7") == 0
    from distgan import load
    assert load(tmp_path / "gan.safetensors").step_count == 7


# -- distill, sample, eval, report -----------------------------------------------------------

def test_distill_from_checkpoint(distill_run, teacher_run):
    for f in ("config.toml", "student.safetensors", "metrics.json", "samples.png", "losses.png"):
        assert (distill_run / f).is_file(), f
    m = metrics(distill_run)
    assert m["T"] == 2.0 and m["data"] == metrics(teacher_run)["data"]  # from the teacher's run
    t, s = m["models"]["teacher"], m["models"]["student"]
    assert s["role"] == "distilled" and s["distill"]["steps"] == 4
    assert s["profile"]["generator_params"] < t["profile"]["generator_params"]
    from distgan import load
    assert "distill" in load(distill_run / "student.safetensors").history


def test_sample_writes_png(teacher_run, tmp_path):
    assert run("sample", str(teacher_run / "gan.safetensors"), "--n", "9", "--set",
               "sample.npy=true", "--out", str(tmp_path)) == 0
    with open(tmp_path / "samples.png", "rb") as f:
        assert f.read(4) == b"\x89PNG"
    x = np.load(tmp_path / "samples.npy")
    assert x.shape[0] == 9 and x.dtype == np.float32
    assert metrics(tmp_path)["n"] == 9


def test_eval_writes_metrics(teacher_run, distill_run, tmp_path):
    assert run("eval", str(teacher_run / "gan.safetensors"),
               str(distill_run / "student.safetensors"), "--quick", "--out", str(tmp_path)) == 0
    m = metrics(tmp_path)
    assert len(m["models"]) == 2
    roles = sorted(e["role"] for e in m["models"].values())
    assert roles == ["distilled", "scratch"]
    for e in m["models"].values():
        assert "eval" in e and "profile" in e
    assert list(tmp_path.glob("samples_*.png"))


def test_report(teacher_run, distill_run, tmp_path, capsys):
    assert run("report", str(teacher_run), str(distill_run), "--out", str(tmp_path)) == 0
    text = (tmp_path / "report.md").read_text()
    assert "distilled" in text and "teacher" in text
    rows = metrics(tmp_path)["rows"]
    assert len(rows) == 3                                   # train's gan, distill's two
    # the trained GAN is the distill run's teacher, so the report calls it one
    assert [r["role"] for r in rows if r["run"] == "teacher"] == ["teacher"]
    assert "| run" in capsys.readouterr().out


def test_report_without_metrics_fails(tmp_path, capsys):
    assert run("report", str(tmp_path), "--out", str(tmp_path / "r")) == 2
    assert "metrics.json" in capsys.readouterr().err


# -- demo ------------------------------------------------------------------------------------

@needs_fmnist
def test_demo_quick_fashion_mnist(tmp_path, capsys):
    assert run("demo", "--quick", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    for row in ("generator params", "generator MACs", "sampling latency, batch 1", "FID"):
        assert row in out
    for f in ("teacher_samples.png", "student_samples.png", "teacher_vs_student.png",
              "teacher.safetensors", "student.safetensors", "table.md", "metrics.json",
              "config.toml"):
        assert (tmp_path / f).is_file(), f
    m = metrics(tmp_path)
    assert m["data"] == "fashion-mnist" and m["fallback"] is None and m["T"] == 2.0
    t, s = m["models"].values()
    assert s["profile"]["generator_params"] < t["profile"]["generator_params"]
    assert np.isfinite(t["eval"]["fid"]) and np.isfinite(s["eval"]["fid"])


def test_demo_falls_back_to_toy_set(tmp_path, monkeypatch, capsys):
    real_load = datasets.load

    def no_images(name, *a, **k):
        if isinstance(name, str) and name.lower() in ("grid25", "ring8"):
            return real_load(name, *a, **k)
        raise datasets.DatasetNotFoundError(f"{name}: not found anywhere (test)")

    monkeypatch.setattr(datasets, "load", no_images)
    monkeypatch.setenv("DISTGAN_QUICK", "1")                # the environment switch
    assert run("demo", "--out", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "cannot be had" in out and "grid25" in out
    assert "modes captured" in out
    m = metrics(tmp_path)
    assert m["data"] == "grid25" and m["quick"] is True and "not found" in m["fallback"]
    assert (tmp_path / "teacher_vs_student.png").is_file()


# -- configuration errors --------------------------------------------------------------------

def _write(tmp_path, text):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, needles", [
    ("[train]\nstpes = 10\n", ["unknown key 'train.stpes'", "did you mean 'train.steps'"]),
    ("[trian]\nsteps = 10\n", ["unknown section [trian]", "[train]"]),
    ("[train]\nsteps = 'ten'\n", ["train.steps", "expected an integer"]),
    ("[train]\nloss = 'hinj'\n", ["train.loss", "'hinge'"]),
    ("[train]\nlr = -1.0\n", ["train.lr", "must be >"]),
    ("[train\nsteps = 1\n", ["not valid TOML"]),
    ("[model]\nwidth = true\n", ["model.width", "expected a finite number"]),
])
def test_bad_config_is_a_clear_error(tmp_path, capsys, text, needles):
    assert run("train", _write(tmp_path, text), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert err.startswith("distgan train: error:")
    for n in needles:
        assert n in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()                  # nothing was started


@pytest.mark.parametrize("argv, needle", [
    (["train", "--set", "train.steps"], "expected section.key=value"),
    (["train", "--set", "steps=3"], "section.key"),
    (["train", "--set", "train.stepz=3"], "unknown key 'train.stepz'"),
    (["train", "missing.toml"], "no such configuration file"),
    (["distill", "--quick"], "no teacher"),
    (["demo", "--set", "teacher.width=0"], "teacher.width: must be > 0"),
])
def test_bad_arguments_are_clear_errors(tmp_path, capsys, argv, needle):
    assert run(*argv, "--out", str(tmp_path / "o")) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()                  # refused before anything started


def test_corrupt_checkpoint_fails_with_message(tmp_path, capsys):
    bad = tmp_path / "gan.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    assert run("sample", str(bad), "--out", str(tmp_path / "o")) == 1
    err = capsys.readouterr().err
    assert "CheckpointError" in err and "gan.safetensors" in err


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_configs_are_valid(path, tmp_path):
    command = {"teacher.toml": "train", "distill.toml": "distill"}.get(path.name, "train")
    cfg = cli.resolve_config(command, path)
    assert cli.resolve_config(command, _roundtrip(cfg, tmp_path)) == cfg


def _roundtrip(cfg, folder):
    path = folder / "roundtrip.toml"
    path.write_text(cli.dump_toml(cfg, "round trip"))
    return path


def test_dump_toml_roundtrip():
    cfg = cli.resolve_config("distill", quick=True, sets=["distill.weights.kd=0.5",
                                                          "data.name=grid25", "distill.T=4"])
    assert cfg["distill"]["weights"]["kd"] == 0.5 and cfg["distill"]["T"] == 4.0
    text = cli.dump_toml(cfg)
    assert "[distill.weights]" in text
    from distgan.cli import tomllib
    back = tomllib.loads(text)
    assert back["distill"]["weights"]["kd"] == 0.5 and "teacher" not in back["distill"]
