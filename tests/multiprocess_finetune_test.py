"""Fine-tuning and prediction as 2 JAX processes x 2 devices equal 1 process x 4 devices: the same batches, losses,
parameters and dev metrics, and a dev/test split whose size no batch or process count divides is covered once."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from generated_glue import make_glue_and_model

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]


@pytest.fixture(scope="module")
def glue_dir_and_model(tmp_path_factory):
    # 45 dev and 37 test examples: the last batch of 8 is partial, and its padding splits unevenly over processes.
    return make_glue_and_model(tmp_path_factory.mktemp("generated"), train=96, dev=45, test=37)


def _launch(processes: int, devices: int, command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deberta_jax.cli", "launch", "--processes", str(processes),
                           "--devices-per-process", str(devices), "--", *command],
                          capture_output=True, text=True, timeout=600)


def test_two_processes_finetune_and_predict_as_one(glue_dir_and_model, tmp_path):
    glue_dir, model_dir = glue_dir_and_model
    for name, processes, devices in (("two", 2, 2), ("one", 1, 4)):
        workdir = tmp_path / name
        result = _launch(processes, devices, [
            "finetune", "--task", "sst2", "--model", str(model_dir), "--data", str(glue_dir), "--workdir",
            str(workdir), "--set", "epochs=2", "--set", "batch_size=8", "--set", "eval_batch_size=8",
            "--set", "max_length=32", "--set", "optimizer.learning_rate=1e-3", "--set", "eval_every=6",
            "--set", "loop.log_every=1", "--set", "loop.checkpoint_every=6"])
        assert result.returncode == 0, result.stdout[-3000:]
        result = _launch(processes, devices, ["predict", "--task", "sst2", "--model", str(workdir / "export"),
                                              "--data", str(glue_dir), "--out", str(workdir / "submission")])
        assert result.returncode == 0, result.stdout[-3000:]
        assert result.stdout.count("wrote ") == 1  # by process 0 only
    two, one = tmp_path / "two", tmp_path / "one"
    rows = {d: [json.loads(line) for line in open(d / "metrics.jsonl")] for d in (two, one)}
    assert [r["step"] for r in rows[one]] == list(range(1, 25))  # 96 / 8 x 2 epochs, logged once
    np.testing.assert_allclose([r["loss"] for r in rows[two]], [r["loss"] for r in rows[one]], rtol=1e-5, atol=0)
    summaries = {d: json.loads((d / "metrics.json").read_text()) for d in (two, one)}
    assert len(summaries[one]["evaluations"]) == 4
    assert summaries[two]["evaluations"] == summaries[one]["evaluations"]  # dev metrics equal, every evaluation
    exported = {d: load_file(str(d / "export" / "model.safetensors")) for d in (two, one)}
    for key in exported[one]:
        np.testing.assert_allclose(exported[two][key], exported[one][key], rtol=0, atol=1e-5, err_msg=key)
    submissions = {d: list(csv.reader(open(d / "submission" / "SST-2.tsv"), delimiter="\t")) for d in (two, one)}
    assert submissions[two] == submissions[one]
    assert [int(r[0]) for r in submissions[one][1:]] == list(range(37))  # every test example once, in order
