"""The notebooks in notebooks/: each executes top to bottom in a fresh kernel (their asserts are part of the test),
and each is stored with its outputs, without errors, and small.

The kernel runs this interpreter (see notebooks/execute_all.py), so nothing beyond requirements-test.txt needs to be
installed or registered. Re-execute and save them with `python notebooks/execute_all.py`.
"""

import importlib.util
import pathlib

import nbformat
import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
EXPECTED = ["01_hf_checkpoint_parity.ipynb", "02_inside_disentangled_attention.ipynb",
            "03_pretraining_objectives.ipynb", "04_finetune_glue_format.ipynb"]
CELL_TIMEOUT_S = 600     # generous: CI machines are shared; each notebook takes well under a minute on an idle CPU
MAX_DIR_BYTES = 2 * 1024 * 1024


def _executor():
    spec = importlib.util.spec_from_file_location("notebooks_execute_all", NOTEBOOK_DIR / "execute_all.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_stored_with_outputs_and_without_errors(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "not executed: run notebooks/execute_all.py"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "cells were run out of order"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot stored"


def test_notebook_directory_is_small():
    size = sum(p.stat().st_size for p in NOTEBOOK_DIR.rglob("*") if p.is_file())
    assert size < MAX_DIR_BYTES, f"notebooks/ holds {size / 1024:.0f} KiB"


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_executes(name):
    """Raises nbclient's CellExecutionError, with the failing cell and its traceback, on any error."""
    _, seconds = _executor().execute_notebook(NOTEBOOK_DIR / name, timeout=CELL_TIMEOUT_S)
    print(f"{name}: {seconds:.1f} s")
