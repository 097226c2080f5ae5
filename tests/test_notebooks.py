"""The notebooks in notebooks/ run clean, top to bottom, in a fresh kernel of this Python, and
hold no logic of their own (STYLE.md rule 14): no outputs committed, no functions, classes,
loops or branches in their code cells -- everything comes from the package."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebook
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "hwsim-test-python"  # a kernel spec of this interpreter, whatever else is installed
CELL_TIMEOUT_S = 120
LOGIC = re.compile(r"^\s*(def|class|for|while|if|with|try|lambda)\b|\blambda\b", re.M)


def test_the_three_notebooks_are_there():
    assert {p.stem for p in NOTEBOOKS} >= {"capacity_planning", "what_if", "roofline_teaching"}


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """JUPYTER_PATH entry whose kernel spec runs ipykernel on ``sys.executable`` (the venv's
    Python) with the repository on its path."""
    base = tmp_path_factory.mktemp("jupyter")
    spec = base / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "hwsim tests", "language": "python",
        "env": {"PYTHONPATH": str(ROOT), "MPLBACKEND": "module://matplotlib_inline.backend_inline"},
    }))
    return base


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_clean_and_holds_no_logic(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and any(cell.cell_type == "markdown" for cell in nb.cells)
    for cell in code:
        assert not cell.outputs and cell.execution_count is None, "clear the outputs"
        assert not LOGIC.search(cell.source), f"logic in a notebook cell:\n{cell.source}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, kernel_dir, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    images = [out for out in outputs if "image/png" in out.get("data", {})]
    assert images, "the notebook's plots were not displayed"
