"""Errors of the `deberta-jax` command line: one line on stderr, exit 2 for usage and 1 for runtime errors, the
traceback only on request."""

import os
import subprocess
import sys

import pytest

from deberta_jax import cli
from deberta_jax.cli import main
from deberta_jax.recipes import recipe_path

RECIPE = ["pretrain", "--config", "tiny_cpu", "--workdir", "unused"]


@pytest.fixture(autouse=True)
def no_debug_env(monkeypatch):
    monkeypatch.delenv("DEBERTA_JAX_DEBUG", raising=False)


def run(argv, capsys) -> tuple[int, str]:
    """(exit status, the one error line); fails unless stderr holds exactly one error line and no traceback."""
    status = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("deberta-jax: error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return status, errors[0].removeprefix("deberta-jax: error: ")


@pytest.mark.parametrize("argv,expected", [
    ([], "the following arguments are required: command (see deberta-jax --help)"),
    (["pretrain", "--config", "tiny_cpu"], "required: --workdir (see deberta-jax pretrain --help)"),
    (["no-such-command"], "invalid choice: 'no-such-command'"),
    (["parity", "hf", "--batch", "0"], "argument --batch: 0 must be >= 1"),
    (["parity", "hf", "--seq-len", "x"], "argument --seq-len: 'x' is not an integer"),
    (RECIPE + ["--set", "no_such_key=1"], "has no key 'no_such_key'"),
    (RECIPE + ["--set", "steps=abc"], "--set steps=abc: expected int"),
    (RECIPE + ["--set", "optimizer.learning_rate=-1"], "PretrainConfig.optimizer.learning_rate=-1.0: must be > 0"),
    (RECIPE + ["--set", "steps"], "expected key=value"),
    (["pretrain", "--config", "no_such_recipe", "--workdir", "unused"], "no pretraining recipe 'no_such_recipe'"),
    (["finetune", "--task", "sst2", "--model", "m", "--workdir", "unused", "--recipe", "no-such"],
     "no published recipe 'no-such'"),
])
def test_usage_errors_exit_2(argv, expected, capsys):
    status, line = run(argv, capsys)
    assert status == 2 and expected in line


def test_a_malformed_recipe_file_names_file_line_and_column(tmp_path, capsys):
    recipe = tmp_path / "recipe.json"
    recipe.write_text('{"steps": 10,\n "seed": }\n')
    status, line = run(["pretrain", "--config", str(recipe), "--workdir", str(tmp_path)], capsys)
    assert status == 2 and line.startswith(f"{recipe}:2:10: invalid JSON")


def test_runtime_errors_exit_1(tmp_path, capsys):
    status, line = run(["convert", str(tmp_path / "missing"), str(tmp_path / "out")], capsys)
    assert status == 1 and "missing/config.json" in line


def test_an_unexpected_exception_is_named(monkeypatch, capsys):
    def broken(args):
        raise KeyError("weight_map")

    monkeypatch.setattr(cli, "cmd_convert", broken)
    status, line = run(["convert", "a", "b"], capsys)
    assert status == 1 and line == "KeyError: 'weight_map' (--debug shows the traceback)"


def test_a_multi_line_message_becomes_one_line(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("first line\n  second line\n")

    monkeypatch.setattr(cli, "cmd_convert", broken)
    assert run(["convert", "a", "b"], capsys) == (1, "first line second line")


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_convert", interrupted)
    assert run(["convert", "a", "b"], capsys) == (130, "interrupted")


@pytest.mark.parametrize("debug", ["flag", "env"])
def test_debug_adds_the_traceback(debug, tmp_path, monkeypatch, capsys):
    argv = ["convert", str(tmp_path / "missing"), str(tmp_path / "out")]
    if debug == "flag":
        argv = ["--debug"] + argv
    else:
        monkeypatch.setenv("DEBERTA_JAX_DEBUG", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "FileNotFoundError" in err
    assert err.splitlines()[-1].startswith("deberta-jax: error: ")


@pytest.mark.subprocess
def test_a_real_process_prints_one_line_and_exits_2(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DEBERTA_JAX_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(__file__), "..", "src"),
                                         env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-m", "deberta_jax.cli", *RECIPE, "--set", "rtd.sharing=shared"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2, result.stderr
    recipe = recipe_path("pretrain", "tiny_cpu")
    assert result.stderr.strip().splitlines()[-1] == (
        f"deberta-jax: error: {recipe}: PretrainConfig.rtd.sharing='shared': must be 'gdes', 'es' or 'nes'")
    assert "Traceback" not in result.stderr and result.stdout == ""
