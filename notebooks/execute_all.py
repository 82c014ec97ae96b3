"""Executes the notebooks in this directory with the current Python and saves them in place, outputs included.

    python notebooks/execute_all.py                   # every notebook
    python notebooks/execute_all.py 02 04             # those whose file name starts with 02 or 04
    python notebooks/execute_all.py --check           # execute, but do not overwrite the stored copies

The kernel is the interpreter running this script (`sys.executable`), registered under a private kernel spec in a
temporary directory, so a fresh virtual environment needs nothing installed beyond requirements-test.txt (no
`ipykernel install`, no activated venv). tests/notebooks_test.py imports `execute_notebook` from here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import sys
import tempfile
import time

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent
KERNEL_NAME = "deberta-jax-current-python"
CELL_TIMEOUT_S = 300


def notebook_paths(prefixes: list[str] | None = None) -> list[pathlib.Path]:
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if prefixes:
        paths = [p for p in paths if any(p.name.startswith(x) for x in prefixes)]
    return paths


@contextlib.contextmanager
def kernel_manager():
    """A KernelManager whose kernel runs `sys.executable -m ipykernel_launcher`, whatever kernel specs (or none)
    the machine has installed."""
    with tempfile.TemporaryDirectory(prefix="deberta-jax-kernels-") as kernels:
        spec_dir = pathlib.Path(kernels) / KERNEL_NAME
        spec_dir.mkdir()
        spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python (deberta-jax)", "language": "python"}
        (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
        specs = KernelSpecManager(kernel_dirs=[kernels], ensure_native_kernel=False)
        yield KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def execute_notebook(path: pathlib.Path, timeout: int = CELL_TIMEOUT_S) -> tuple[nbformat.NotebookNode, float]:
    """Runs every cell of `path` in a fresh kernel started in the notebook's own directory; raises
    nbclient.exceptions.CellExecutionError on the first failing cell. Returns (executed notebook, seconds)."""
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")   # the kernel inherits this environment
    try:
        with kernel_manager() as km:
            client = NotebookClient(nb, km=km, timeout=timeout, record_timing=False,
                                    resources={"metadata": {"path": str(path.parent)}})
            start = time.perf_counter()
            client.execute()
            seconds = time.perf_counter() - start
    finally:
        if env_before is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)
    # The stored kernelspec stays the generic one, so the notebook opens with a reader's default Python kernel.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefixes", nargs="*", help="only notebooks whose name starts with one of these")
    parser.add_argument("--check", action="store_true", help="execute without saving")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, help="seconds per cell")
    args = parser.parse_args()
    paths = notebook_paths(args.prefixes)
    if not paths:
        print("no notebook matched", file=sys.stderr)
        return 1
    for path in paths:
        nb, seconds = execute_notebook(path, args.timeout)
        if not args.check:
            nbformat.write(nb, path)
        print(f"{path.name}: {seconds:.1f} s{'' if args.check else ', saved'} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
