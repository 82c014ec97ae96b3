"""`deberta-jax info`: the versions and devices it prints are those the interpreter has, and it imports no torch."""

import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys

import jax
import pytest

import deberta_jax
from deberta_jax.cli import main


def _rows(capsys) -> dict[str, str]:
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    return dict(line.split(None, 1) for line in lines)


def test_info_reports_the_installed_versions_and_devices(capsys):
    rows = _rows(capsys)
    assert rows["deberta-jax"] == deberta_jax.__version__
    assert rows["python"].startswith(platform.python_version() + " ")
    for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "huggingface_hub"):
        assert rows[name] == importlib.metadata.version(name), name
    assert rows["backend"] == jax.default_backend()
    kinds = {d.device_kind for d in jax.devices()}
    assert rows["devices"].startswith(f"{jax.device_count()} x ") == (len(kinds) == 1), rows["devices"]
    assert all(kind in rows["devices"] for kind in kinds)
    for name in ("torch", "transformers", "libtpu"):
        expected = importlib.metadata.version(name) if importlib.util.find_spec(name) else "not installed"
        assert rows[name] == expected, name


@pytest.mark.subprocess
def test_info_does_not_import_torch():
    code = ("import sys\nfrom deberta_jax.cli import main\nassert main(['info']) == 0\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'imported'\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "torch " in result.stdout
