"""A checkpoint save that fails mid-run (here: the checkpoints folder replaced by a file, as a lost mount or a full
disk would fail it) ends the real command within seconds, with one line naming the folder, exit status 1."""

import os
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TINY = ('model.overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, '
        '"intermediate_size": 64, "position_buckets": 8, "max_relative_positions": 32}')


def test_a_failed_save_ends_the_command_in_one_line(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    command = [sys.executable, "-m", "deberta_jax.cli", "pretrain", "--config", "tiny_cpu", "--workdir",
               str(tmp_path / "run"), "--set", "steps=100000", "--set", "loop.checkpoint_every=2",
               "--set", "data.seq_len=32", "--set", "data.batch_size=4", "--set", "data.tokenizer_vocab_size=500",
               "--set", TINY]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (checkpoints / "4").is_dir():
            assert process.poll() is None and time.monotonic() < deadline, "the run never wrote step 4"
            time.sleep(0.2)
        os.rename(checkpoints, tmp_path / "moved")  # atomic, whatever orbax is writing at the moment
        checkpoints.write_text("not a directory")
        started = time.monotonic()
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert time.monotonic() - started < 60
    assert process.returncode == 1, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("deberta-jax: error:")]
    assert len(errors) == 1 and errors[0].startswith(f"deberta-jax: error: could not write a checkpoint in {checkpoints}")
    assert "Traceback" not in stderr and "ERROR" not in stderr
