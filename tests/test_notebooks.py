"""The example notebooks (``examples/notebooks``) run as a user runs them: each in a fresh working directory, in a
Jupyter kernel (nbclient, ipykernel), on the embedded default with the shared data as LATENTFARM_DATA_DIR. A cell
that raises fails the test; each must show figures and tables. The committed notebooks carry no outputs.

Each run's time is printed (``pytest -s`` or ``-rA`` shows it); the README's Measured table has the figures.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import pytest

from tests.e2e.cli import clean_env

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "examples" / "notebooks").glob("*.ipynb"))
BUDGET = 300  # seconds a notebook may take here: its cells' timeout (they take well under a minute each)


def test_there_is_a_notebook_per_experiment_family() -> None:
    assert {p.stem for p in NOTEBOOKS} == {"autoencoder-latent-space", "kmeans-classifier", "carving-dream",
                                           "latent-sampling"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebooks_have_no_outputs(path: Path) -> None:
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: cell {i} has outputs"
        assert not cell.get("attachments"), f"{path.name}: cell {i} has attachments"


@pytest.mark.slow(seconds=40)  # alone, on 2 cores: the longest start first
@pytest.mark.timeout(BUDGET + 60)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs(path: Path, tmp_path: Path, shared_data: Path) -> None:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=BUDGET, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    start, cpu = time.monotonic(), _children_cpu()
    client.execute(env=clean_env(LATENTFARM_DATA_DIR=str(shared_data), MPLBACKEND="module://matplotlib_inline"
                                                                                  ".backend_inline"))
    took = time.monotonic() - start
    print(f"notebook {path.name}: {took:.1f} s wall, {_children_cpu() - cpu:.1f} s CPU (its kernel)")
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [kind for o in outputs for kind in o.get("data", {})]
    assert shown.count("image/png") >= 2, f"{path.name} shows fewer than two figures"
    assert "text/html" in shown, f"{path.name} shows no table"
    assert (tmp_path / "latentfarm.db").is_file()  # the embedded default, in the working directory
    assert took < BUDGET


def _children_cpu() -> float:
    """CPU seconds used by this process's ended children (a notebook's kernel, once shut down)."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime
