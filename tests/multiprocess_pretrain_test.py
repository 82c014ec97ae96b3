"""Pretraining as 2 JAX processes x 2 devices equals 1 process x 4 devices: same masks (keyed by global row), same
batches, same losses and parameters. Both run through `deberta-jax launch`, with real processes and gloo."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

TINY = ('model.overrides={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, '
        '"intermediate_size": 64, "position_buckets": 8, "max_relative_positions": 32}')


def _command(workdir, processes: int, devices: int, steps: int = 6, checkpoint_every: int = 3) -> list[str]:
    return [sys.executable, "-m", "deberta_jax.cli", "launch", "--processes", str(processes),
            "--devices-per-process", str(devices), "--", "pretrain", "--config", "tiny_cpu", "--workdir", str(workdir),
            "--set", f"steps={steps}", "--set", f"loop.checkpoint_every={checkpoint_every}", "--set",
            "loop.log_every=1", "--set", "data.seq_len=32", "--set", "data.batch_size=8", "--set",
            "data.tokenizer_vocab_size=500", "--set", TINY]


def _launch(workdir, processes: int, devices: int, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_command(workdir, processes, devices, **kwargs), capture_output=True, text=True,
                          timeout=600)


def _losses(workdir) -> list[float]:
    return [json.loads(line)["loss"] for line in open(workdir / "metrics.jsonl")]


def test_two_processes_train_as_one(tmp_path):
    runs, outputs = {}, {}
    for name, processes, devices in (("two", 2, 2), ("one", 1, 4)):
        result = _launch(tmp_path / name, processes, devices)
        assert result.returncode == 0, result.stdout[-3000:]
        runs[name], outputs[name] = tmp_path / name, result.stdout
    assert "[1] " in outputs["two"] and "[1] " not in outputs["one"]  # each process's lines carry its index
    losses = {name: _losses(path) for name, path in runs.items()}
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


def _child_with_process_id(launcher_pid: int, process_id: int) -> int:
    """The pid of the launcher's child that runs as JAX process `process_id` (read from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            parent = int(open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()[1])
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        if parent == launcher_pid and f"JAX_PROCESS_ID={process_id}".encode() in environ:
            return int(pid)
    raise LookupError(f"no child of {launcher_pid} runs JAX process {process_id}")


@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="finds the launcher's children through /proc")
def test_kill_9_of_one_process_then_resume_trains_as_an_uninterrupted_run(tmp_path):
    steps = dict(steps=24, checkpoint_every=4)
    straight = _launch(tmp_path / "straight", 2, 2, **steps)
    assert straight.returncode == 0, straight.stdout[-3000:]

    workdir = tmp_path / "killed"
    launcher = subprocess.Popen(_command(workdir, 2, 2, **steps), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    deadline = time.monotonic() + 300
    while not (workdir / "checkpoints" / "8").is_dir():  # orbax renames a step's directory once it is complete
        assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before its second checkpoint"
        time.sleep(0.05)
    os.kill(_child_with_process_id(launcher.pid, 1), signal.SIGKILL)
    out, err = launcher.communicate(timeout=120)  # the launcher stops process 0, which waits on process 1
    assert launcher.returncode == 128 + signal.SIGKILL
    assert "process 1 was killed by SIGKILL; stopped the others" in err
    checkpointed = max(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())
    assert 8 <= checkpointed < 24

    resumed = subprocess.run(_command(workdir, 2, 2, **steps) + ["--resume"], capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"resumed from step {checkpointed}" in resumed.stdout
    np.testing.assert_array_equal(_losses(workdir), _losses(tmp_path / "straight"))


# Loaded by every process of the launch below (sitecustomize runs at interpreter start): each records the example
# indices of the rows it reads, per step, without a hook in the library.
_RECORD_ROWS = '''
import json, os
from deberta_jax.data import prepared_batches

_next = prepared_batches.PreparedBatches.__next__

def _recording_next(self):
    batch = _next(self)
    with open(os.path.join(os.environ["ROWS_DIR"], f"rows-{os.environ['JAX_PROCESS_ID']}.jsonl"), "a") as f:
        f.write(json.dumps(batch["example_index"].tolist()) + "\\n")
    return batch

prepared_batches.PreparedBatches.__next__ = _recording_next
'''


def test_two_processes_read_disjoint_blocks_of_each_prepared_global_batch(tmp_path):
    from deberta_jax.data.prepared import TextFiles, prepare
    from deberta_jax.data.prepared_batches import PreparedBatches
    from deberta_jax.recipes import bundled_corpus
    from deberta_jax.tokenization.training import train_spm_tokenizer

    tokenizer = train_spm_tokenizer([bundled_corpus()], str(tmp_path / "tokenizer"), 500)
    prepare(TextFiles.open([bundled_corpus()]), tokenizer, 32, tmp_path / "prepared", shards=3, log=lambda *a: None)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_RECORD_ROWS)
    env = {**os.environ, "ROWS_DIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(
        [str(hook)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
    command = _command(tmp_path / "run", 2, 2, steps=4, checkpoint_every=4) + [
        "--set", "data.corpus=[]", "--set", f"data.prepared={tmp_path / 'prepared'}", "--set",
        f"data.tokenizer={tmp_path / 'tokenizer'}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:]
    rows = [[json.loads(line) for line in open(tmp_path / f"rows-{p}.jsonl")] for p in range(2)]
    assert len(rows[0]) == len(rows[1]) == 4  # one batch per step
    expected = PreparedBatches(tmp_path / "prepared", 8, seed=0)  # tiny_cpu's seed, one process
    for first, second in zip(rows[0][:4], rows[1][:4]):
        assert len(first) == len(second) == 4 and not set(first) & set(second)
        assert first + second == next(expected)["example_index"].tolist()
