"""Every script in examples/ runs as documented, with small settings.

Each runs in a subprocess in a temporary folder with DISTGAN_QUICK=1 (the scripts that
read it shrink themselves) and the arguments below; a script not listed here runs with
DISTGAN_QUICK=1 alone, so a new example must honour it (or get an entry here).
"""
import pathlib
import subprocess
import sys

import pytest

from conftest import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "examples").glob("*.py"))
TIMEOUT = 300

# small settings for the scripts that take them as arguments
SMALL_ARGS = {
    "quickstart.py": ["--teacher-width", "0.25", "--student-width", "0.125", "--teacher-steps", "4",
                      "--distill-steps", "3", "--out", "runs/quickstart"],
    "fashion_mnist_report.py": ["--teacher", "teacher.safetensors", "--widths", "0.125",
                                "--budget", "1", "--n-eval", "64", "--threads", "1",
                                "--out", "runs/report"],
    "fid_vs_time.py": ["--teacher", "teacher.safetensors", "--width", "0.125", "--points", "0.5,1",
                       "--n-eval", "64", "--out", "runs/curve"],
    "train_teacher.py": ["--width", "0.25", "--steps", "4", "--batch-size", "32",
                         "--subset", "256", "--threads", "1", "--out", "runs/teacher"],
    "toy_modes.py": ["--sets", "grid25", "--seeds", "1", "--steps", "10", "--sharpen-steps", "5",
                     "--hidden", "16",
                     "--n-eval", "200", "--json", "toy.json", "--plot", "toy.png"],
}
NEEDS_FASHION_MNIST = {"quickstart.py", "train_teacher.py", "fashion_mnist_report.py",
                       "fid_vs_time.py"}
# files each run must leave behind (relative to its folder)
OUTPUTS = {
    "quickstart.py": ["runs/quickstart/teacher_vs_student.png",
                      "runs/quickstart/student.safetensors"],
    "train_teacher.py": ["runs/teacher/gan.safetensors", "runs/teacher/samples.png",
                         "runs/teacher/train.json"],
    "toy_modes.py": ["toy.json"],
    "fashion_mnist_report.py": ["runs/report/results.md"],
    "fid_vs_time.py": ["runs/curve/curve.md", "runs/curve/curve.json",
                       "runs/curve/fid_vs_time.png"],
}


def _prepare_report(folder, cache):
    """fashion_mnist_report.py needs a teacher checkpoint and the evaluation classifier:
    a tiny teacher, and a tiny classifier put where the script's cache lookup finds it
    (so it does not train the real one for minutes)."""
    import distgan

    threads = distgan.get_num_threads()
    distgan.set_num_threads(1)
    try:
        _tiny_teacher_and_classifier(folder, cache)
    finally:
        distgan.set_num_threads(threads)


def _tiny_teacher_and_classifier(folder, cache):
    import distgan
    from distgan.classifier import Classifier
    from distgan.evaluate import classifier_path

    data = distgan.datasets.load("fashion-mnist")
    teacher = distgan.GAN(distgan.models.dcgan(width=0.25), seed=0)
    teacher.fit(data.subset(256), steps=2, batch_size=32, progress=False)
    teacher.save(folder / "teacher.safetensors")
    clf = Classifier(distgan.models.classifier(width=0.25, feature_dim=16), seed=0)
    sub = data.subset(256)
    clf.fit((sub.images, sub.labels), steps=3, batch_size=32, progress=False)
    clf.info = {"test_accuracy": None, "dataset_checksum": data.checksum, "recipe": "test"}
    clf.save(classifier_path(data, cache))


PREPARE = {"fashion_mnist_report.py": _prepare_report, "fid_vs_time.py": _prepare_report}


def _have_fashion_mnist():
    from distgan import datasets
    try:
        datasets.load("fashion-mnist", download=False)
    except datasets.DatasetError:
        return False
    return True


def _env(tmp_path):
    return subprocess_env(DISTGAN_QUICK="1", MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1",
                          DISTGAN_CACHE=str(tmp_path / "cache"))


def test_there_are_examples():
    assert {"quickstart.py", "train_teacher.py"} <= {p.name for p in SCRIPTS}


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_example_runs(script, tmp_path):
    if script.name in NEEDS_FASHION_MNIST and not _have_fashion_mnist():
        pytest.skip("Fashion-MNIST is not on this machine")
    if script.name in PREPARE:
        PREPARE[script.name](tmp_path, tmp_path / "cache")
    r = subprocess.run([sys.executable, str(script), *SMALL_ARGS.get(script.name, [])],
                       cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, f"{script.name} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    for f in OUTPUTS.get(script.name, []):
        assert (tmp_path / f).is_file(), f"{script.name} did not write {f}"


def test_readme_python_example(tmp_path):
    """The README's Python example, with its training shortened to a few steps."""
    if not _have_fashion_mnist():
        pytest.skip("Fashion-MNIST is not on this machine")
    text = (ROOT / "README.md").read_text()
    start = text.index("```python\n") + len("```python\n")
    code = text[start:text.index("```", start)]
    shorten = {
        'load("fashion-mnist")': 'load("fashion-mnist", n=256)',
        "fit(data, epochs=5)": "fit(data, steps=3, batch_size=32, progress=False)",
        "T=2.0)": "T=2.0, steps=3, batch_size=32, progress=False)",
    }
    for old, new in shorten.items():
        assert old in code, f"the README example changed ({old!r} is gone): update this test"
        code = code.replace(old, new)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-4000:]
    assert (tmp_path / "student.safetensors").is_file()
