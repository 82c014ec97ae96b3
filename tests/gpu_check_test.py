"""The prepared GPU check (experiments/bench/gpu_check.sh) in its CPU dry run: the same sections and code with
tiny shapes. Every section must report a status, the JAX sections must pass, and the summary must carry the
numbers the GPU run is for (Pallas errors, the bench's MFU fields, the layer timings)."""

import json
import os
import subprocess
import sys
import tarfile

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.reference, pytest.mark.subprocess]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "bench", "gpu_check.sh")
SECTIONS = ("env", "pallas", "bench_train", "layer_jax", "layer_flashdeberta", "layer_disentangled_flash",
            "bench_train_dense", "bench_forward", "layer_transformers")
RUN_IN_DRY_RUN = ("env", "pallas", "bench_train", "layer_jax", "layer_transformers")
STATUSES = {"ok", "failed", "error", "timeout", "skipped", "not_installed", "not_run"}


def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "GPU_CHECK_PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(tmp_path / "no-wheels")}
    proc = subprocess.run(["bash", SCRIPT, "--dry-run", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # What the device tool brings back: a handful of files, none deeper than OUTDIR itself.
    assert sorted(os.listdir(out)) == ["bench.md", "gpu_check.log", "raw.tar.gz", "summary.json"]
    with tarfile.open(out / "raw.tar.gz") as tar:
        names = set(tar.getnames())
    assert {f"raw/{s}.json" for s in RUN_IN_DRY_RUN} <= names

    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True
    assert set(summary["status"]) == set(SECTIONS)
    assert set(summary["status"].values()) <= STATUSES
    log = "\n".join(f"{k}: {v}" for k, v in summary["status"].items())
    for name in RUN_IN_DRY_RUN:
        assert summary["status"][name] == "ok", log + "\n" + "\n".join(summary["sections"][name].get("log_tail", []))
    for name in ("layer_flashdeberta", "layer_disentangled_flash"):  # CUDA-only libraries
        assert summary["status"][name] in ("not_installed", "skipped"), log
    for name in ("bench_train_dense", "bench_forward"):  # GPU only: the dry run's bench_train runs both workloads
        assert summary["status"][name] == "skipped" and "dry run" in summary["sections"][name]["reason"], log
    for name in SECTIONS:
        section = summary["sections"][name]
        assert section["seconds"] <= section["timeout_s"] + 11  # timeout -k 10

    head = summary["headline"]
    assert head["pallas_interpret"] is True  # on a CPU the kernels run in the Pallas interpreter
    checked = {k: v for k, v in head["pallas"].items() if v["status"] != "skipped"}  # the model switch: GPU only
    assert checked and all(v["status"] == "ok" and v["max_rel_err"] < 2e-2 for v in checked.values()), checked
    assert any(k.startswith("float32/") for k in checked) and any(k.startswith("bfloat16/") for k in checked)
    (train,) = [rows for case, rows in head["bench"]["cases"].items() if "/train/" in case]
    (forward,) = [rows for case, rows in head["bench"]["cases"].items() if "/forward/" in case]
    for rows in (train, forward):
        assert {"ours[chunked:16x16]", "transformers-eager"} <= set(rows)
        assert all(r.get("median_ms", 0) > 0 for r in rows.values()), rows
        assert rows["ours[chunked:16x16]"]["speedup_vs_transformers_eager"] > 0
        assert rows["ours[chunked:16x16]"]["mfu"] is None  # no datasheet peak for a CPU
    layer = head["layer"]["N32"]
    for name in ("jax:chunked", "jax:pallas:16x16", "jax:no_bias_flash[xla]", "transformers:eager"):
        assert layer[name]["forward_ms"] > 0 and layer[name]["train_ms"] > 0, (name, layer[name])
    assert layer["jax:no_bias_flash[cudnn]"]["forward"] == "skipped"
    for name in ("jax:chunked", "jax:pallas:16x16", "transformers:eager"):
        assert layer[name]["rel_err_vs_fp32_reference"] < 2e-2
        assert layer[name]["probe_rel_err_vs_ours_fp32_reference"] < 2e-2  # same function across frameworks
