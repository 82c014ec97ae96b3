"""Smoke test of the benchmark harness (`python -m benchmarks`) on a tiny 2-layer DeBERTa-v3: one round of the
backbone forward for ours and transformers (and keras-hub when it is installed), JSON keys, and the numerical
check that ours (and keras-hub) compute transformers' output on the same weights."""

import importlib.util
import json

import pytest

from benchmarks.__main__ import main
from benchmarks.cases import resolve_model
from benchmarks.extras import count_ops
from benchmarks.flops import model_flops

HAS_KERAS_HUB = importlib.util.find_spec("keras_hub") is not None and importlib.util.find_spec("keras") is not None


@pytest.mark.reference
def test_bench_smoke_tiny(tmp_path):
    families = "ours,transformers" + (",keras-hub" if HAS_KERAS_HUB else "")
    out = tmp_path / "bench.json"
    rc = main(["--models", "tiny", "--seq-lens", "16", "--batch", "2", "--reps", "1", "--warmup", "0",
               "--workloads", "forward", "--impls", "reference", "--scan-layers", "off", "--families", families,
               "--no-torch-compile", "--no-memory-probe", "--peak-size", "256", "--output", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert {"schema", "machine", "machine_kind", "options", "notes", "cases", "matmul_peak", "outputs"} <= set(result)
    assert result["machine"]["versions"]["jax"] and result["machine"]["cpu_count"] >= 1
    assert result["matmul_peak"]["flops_per_s"] > 0
    (case,) = result["cases"]
    assert (case["model"], case["workload"], case["batch"], case["seq_len"]) == ("tiny", "forward", 2, 16)
    assert case["model_flops"]["total"] > 0
    impls = case["implementations"]
    expected = {"ours[reference]", "transformers-eager"} | ({"keras-hub"} if HAS_KERAS_HUB else set())
    assert set(impls) == expected
    for name, entry in impls.items():
        assert entry["status"] == "ok", (name, entry.get("error"))
        assert entry["reps"] == 1 and entry["median_s"] > 0 and entry["first_call_s"] > 0
        assert entry["model_flops_fraction_of_peak"] > 0
    ours = impls["ours[reference]"]
    assert ours["memory"]["compiled"]["temp"] > 0 and ours["xla_flops"] > 0 and ours["compile_s"] > 0
    check = case["numeric_check"]
    assert check["reference"] == "transformers-eager"
    assert check["results"]["ours[reference]"]["passed"]
    assert check["results"]["ours[reference]"]["max_abs"] <= 1e-4
    if HAS_KERAS_HUB:
        assert check["results"]["keras-hub"]["max_abs"] <= 1e-4
    assert "transformers-eager" in case["ratios"]["ours[reference]"]
    assert (tmp_path / "bench.md").exists() and (tmp_path / "bench_times.png").exists()
    assert not (tmp_path / "bench.partial.json").exists()  # the per-case safety copy goes once the run is complete


def test_flop_formula_and_op_count():
    cfg = resolve_model("deberta-v3-xsmall")
    b, n, h, i, layers, r = 8, 128, 384, 1536, 12, 512
    per_layer = 8 * b * n * h * h + 4 * b * n * h * i + 8 * b * n * n * h + 4 * r * h * h
    assert model_flops(cfg, "forward", b, n)["total"] == layers * per_layer
    m = 19
    head = 2 * b * m * h * h + 2 * b * m * h * cfg.vocab_size
    assert model_flops(cfg, "train", b, n, m)["total"] == 3 * (layers * per_layer + head)
    hlo = "%g = f32[2] gather(f32[4] %a, s32[2] %i)\n%s = f32[4] scatter(%a, %i, %u)\n%x = f32[2] add(%g, %g)"
    assert count_ops(hlo) == {"gather": 1, "scatter": 1}
