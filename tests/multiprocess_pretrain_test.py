"""Pretraining as 2 JAX processes x 2 devices equals 1 process x 4 devices: same masks (keyed by global row), same
batches, same losses and parameters. Both run through `deberta-jax launch`, with real processes and gloo."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TINY = ('model.overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, '
        '"intermediate_size": 64, "position_buckets": 8, "max_relative_positions": 32}')


def _launch(workdir, processes: int, devices: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "deberta_jax.cli", "launch", "--processes", str(processes),
               "--devices-per-process", str(devices), "--", "pretrain", "--config", "tiny_cpu", "--workdir",
               str(workdir), "--set", "steps=6", "--set", "loop.checkpoint_every=3", "--set", "loop.log_every=1",
               "--set", "data.seq_len=32", "--set", "data.batch_size=8", "--set", "data.tokenizer_vocab_size=500",
               "--set", TINY]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_two_processes_train_as_one(tmp_path):
    runs, outputs = {}, {}
    for name, processes, devices in (("two", 2, 2), ("one", 1, 4)):
        result = _launch(tmp_path / name, processes, devices)
        assert result.returncode == 0, result.stdout[-3000:]
        runs[name], outputs[name] = tmp_path / name, result.stdout
    assert "[1] " in outputs["two"] and "[1] " not in outputs["one"]  # each process's lines carry its index
    losses = {name: [json.loads(line)["loss"] for line in open(path / "metrics.jsonl")] for name, path in runs.items()}
    assert len(losses["one"]) == 6  # written once, by process 0
    np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5, atol=0)
    two, one = (load_file(str(path / "export" / "discriminator" / "model.safetensors")) for path in runs.values())
    assert set(two) == set(one)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-5, err_msg=key)


def test_the_launcher_fails_when_a_process_fails(tmp_path):
    result = subprocess.run([sys.executable, "-m", "deberta_jax.cli", "launch", "--processes", "2", "--", "pretrain",
                             "--config", "no_such_recipe", "--workdir", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "[0] deberta-jax: error: no pretraining recipe 'no_such_recipe'" in result.stdout
    assert "exited with status 2; stopped the others" in result.stderr
