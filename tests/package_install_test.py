"""The package as users get it: a wheel installed without -e, run from outside the repository, finds its recipes
and bundled corpus through importlib.resources."""

import os
import shutil
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--set', 'model.overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, '
        '"intermediate_size": 64, "position_buckets": 8, "max_relative_positions": 32}']


def _run(args, cwd, site, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_installed_wheel_pretrains_and_finetunes_with_its_recipes(tmp_path):
    wheels, site, outside = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    outside.mkdir()
    source = tmp_path / "source"  # a clean copy: setuptools' build/ in the checkout may hold deleted modules
    shutil.copytree(os.path.join(REPO, "src"), source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO, name), source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(source)], check=True, capture_output=True, timeout=600)
    (wheel,) = wheels.glob("deberta_jax-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, timeout=600)

    where = _run(["-c", "import deberta_jax, deberta_jax.recipes as r; print(deberta_jax.__file__); "
                        "print(r.bundled_corpus()); print(r.recipe_names('pretrain'))"], outside, site).splitlines()
    assert all(line.startswith(str(site)) for line in where[:2]), where  # the installed copy, not the checkout
    assert "tiny_cpu" in where[2] and "v3_base" in where[2]

    _run(["-m", "deberta_jax.cli", "pretrain", "--config", "tiny_cpu", "--workdir", "run", "--set", "steps=2",
          "--set", "data.seq_len=32", "--set", "data.batch_size=4", "--set", "data.tokenizer_vocab_size=500", *TINY],
         outside, site)
    glue = outside / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = "".join(f"{'a good film' if i % 2 else 'a dull film'} {i}\t{i % 2}\n" for i in range(16))
    for split in ("train", "dev"):
        (glue / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    _run(["-m", "deberta_jax.cli", "finetune", "--task", "sst2", "--model", "run/export/discriminator", "--data",
          "glue", "--workdir", "ft", "--recipe", "tiny-cpu", "--set", "epochs=1", "--set", "batch_size=8"],
         outside, site)
    assert (outside / "ft" / "export" / "config.json").exists()
