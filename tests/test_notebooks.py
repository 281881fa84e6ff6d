"""The example notebooks run end to end, and are stored without outputs.

Each notebook in ``examples/`` is executed in a fresh Python kernel (nbclient), from the
repository root, so a notebook that breaks with the library fails the test suite.

The test checks that a notebook runs with the library, not what it finds at its budgets (its
figures and tables are read by a person). So the budgets of each notebook (simulations, epochs,
draws) sit in one code cell tagged ``parameters``, papermill's convention, and the test runs
the notebook with a cell injected right after that one which sets them smaller: every cell still
runs, on the same code paths, in a fraction of the time. The stored notebook keeps the budgets a
user runs (they were checked to run end to end once by hand, with nbclient, at those budgets).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples").glob("*.ipynb"))

# the budgets each notebook runs with in the test, in place of those of its "parameters" cell
SMALL_BUDGETS = {
    "01_quickstart": {
        "num_simulations": 1_500,
        "num_reference": 1_000,
        "num_predictive": 20,
        "num_exact": 500,
    },
    "02_bounded_data": {
        "num_simulations": 500,
        "epochs": 3,
        "num_reference": 1_000,
        "num_test": 200,
        "num_samples": 200,
        "num_reference_draws": 500,
    },
    "03_comparing_methods": {
        "num_simulations": 500,
        "epochs": 2,
        "num_reference": 1_000,
        "num_samples": 100,
        "num_reference_draws": 500,
    },
    "04_pyabc": {"pilot": 200, "epochs": 3, "budget": 600, "population": 50},
    "05_trust": {
        "num_simulations": 500,
        "epochs": 3,
        "num_samples": 100,
        "num_observations": 5,
        "num_reference_draws": 500,
    },
}


def _parameters_cell(notebook) -> int:
    """The index of the notebook's one code cell tagged ``parameters``."""
    found = [
        i
        for i, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(found) == 1, f"expected one cell tagged 'parameters', found {len(found)}"
    return found[0]


def _assigned_names(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 5, [p.name for p in NOTEBOOKS]
    assert sorted(SMALL_BUDGETS) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name}: clear the outputs before committing"
            assert cell.get("execution_count") is None, f"{path.name}: clear execution counts"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_budgets_the_test_lowers_are_those_of_the_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    parameters = notebook.cells[_parameters_cell(notebook)].source
    assigned = _assigned_names(parameters)
    small = SMALL_BUDGETS[path.stem]
    assert set(small) == assigned, f"{path.name}: {sorted(assigned)} in the cell"
    # each is a plain number there, larger than the test's
    values = {}
    exec(compile(parameters, path.name, "exec"), {}, values)  # noqa: S102 - our own cell
    for name, value in small.items():
        assert isinstance(values[name], int) and values[name] > value, (name, values[name])


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    budgets = "\n".join(f"{name} = {value!r}" for name, value in SMALL_BUDGETS[path.stem].items())
    small = nbformat.v4.new_code_cell("# the test's budgets (tests/test_notebooks.py)\n" + budgets)
    notebook.cells.insert(_parameters_cell(notebook) + 1, small)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    errors = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]
    assert not errors
