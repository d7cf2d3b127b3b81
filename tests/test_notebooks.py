"""The notebooks in notebooks/ run top to bottom without an error.

Each is executed with nbclient on the ``python3`` kernel with DISTGAN_QUICK=1 (tiny
settings: seconds per notebook), in a temporary folder, with distgan's caches in a
temporary folder too. The notebooks in git carry no outputs.
"""
import pathlib

import pytest

from conftest import subprocess_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TIMEOUT = 240          # seconds per cell: generous, the machine may be loaded

nbformat = pytest.importorskip("nbformat")


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_temperature.ipynb", "03_modes.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: commit notebooks without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if path.name != "03_modes.ipynb":
        from distgan import datasets
        try:
            datasets.load("fashion-mnist", download=False)
        except datasets.DatasetError:
            pytest.skip("Fashion-MNIST is not on this machine")
    # the kernel inherits this environment
    monkeypatch.setenv("DISTGAN_QUICK", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("DISTGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", subprocess_env()["PYTHONPATH"])
    monkeypatch.delenv("MPLBACKEND", raising=False)   # the kernel picks its inline backend
    monkeypatch.delenv("DISTGAN_TEACHER", raising=False)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:       # names the cell and the error
        pytest.fail(f"{path.name}: a cell failed:\n{e}")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            errors = [o for o in cell.outputs if o.get("output_type") == "error"]
            assert not errors, f"{path.name} cell {i}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
