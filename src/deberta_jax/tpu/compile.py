"""Ahead-of-time compilation of the real train step for a device list (a TPU slice's, from libtpu, or any other),
and what the compiler says of it: memory per chip, FLOPs and bytes, the roofline, collectives.

    deberta-jax compile --config v3_base --topology v5e-8 [--finetune mnli] [--set data.batch_size=256]

The step is the one `pretrain` / `finetune` run (the same objective, optimizer, shardings and jitted step), lowered
against abstract arguments: no parameter is ever allocated, and no tokenizer is read (the vocabulary size comes
from the recipe). Every figure is the compiler's estimate for hardware that was not used, with the compiler's
blind spots: a while loop's body is counted once however often it runs (the chunked attention's tile loops,
`scan_layers`; `while_loops` says how many there are), and the gathers and scatters of the reference attention
(and of its gradient) weigh in "bytes accessed" as XLA's cost model charges them. XLA's `optimal_seconds` can come
out negative and is not used.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from deberta_jax.config import DebertaConfig, preset
from deberta_jax.data.glue.tasks import get_task
from deberta_jax.data.masking import mask_batch
from deberta_jax.finetuning.train import (
    STEP_BATCH_KEYS, FinetuneConfig, finetune_optimizer, make_loss_fn, model_overrides,
)
from deberta_jax.model.modeling import abstract_params, build_model
from deberta_jax.pretraining.config import PretrainConfig
from deberta_jax.pretraining.train import build_objective, model_config, pretrain_optimizer, step_batch
from deberta_jax.sharding.mesh import check_batch_divides, make_mesh
from deberta_jax.sharding.rules import DroppedAxes, batch_sharding, dropped_axes
from deberta_jax.tpu import hlo, roofline
from deberta_jax.tpu.hbm_traffic import hbm_traffic
from deberta_jax.tpu.topologies import ChipSpec
from deberta_jax.training.compiler_options import mesh_compiler_options
from deberta_jax.training.train_step import abstract_train_state, boxed_train_state, make_train_step

ESTIMATE_NOTE = ("compiler estimates (XLA's memory and cost analysis of the compiled program) for hardware that was "
                 "not used: nothing here is a measurement")
# The learning-rate schedule's length changes no shape of the step.
_SCHEDULE_STEPS = 1000
# Ids of the dummy row that shapes the masking: above the four specials of a v3 tokenizer.
_FIRST_PLAIN_ID = 5


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """A train step ready to lower: the jitted step, its abstract (state, batch), and what it computes."""

    step: Any
    args: tuple
    model_flops: float     # per step, all chips together (roofline.py)
    describe: dict         # what was compiled: kind, model, batch, mesh ...
    replicated: tuple[DroppedAxes, ...] = ()  # state leaves a mesh axis does not divide (sharding/rules.py)


def recipe_vocab_size(cfg: PretrainConfig) -> int:
    """The vocabulary a recipe's run would have, without its tokenizer: `model.overrides.vocab_size` when set; a
    tokenizer trained on the corpus has `data.tokenizer_vocab_size` pieces plus [MASK]; a given tokenizer (a
    released v3 spm.model) is taken to fill the preset's table (128100 rows for v3)."""
    if "vocab_size" in cfg.model.overrides:
        return int(cfg.model.overrides["vocab_size"])
    if not cfg.data.tokenizer:
        return cfg.data.tokenizer_vocab_size + 1
    return preset(cfg.model.preset).vocab_size


def _abstract(leaf_shape: tuple, dtype, sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(leaf_shape), jnp.dtype(dtype), sharding=sharding)


def _param_count(state) -> int:
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(state.params)))


def pretrain_step(cfg: PretrainConfig, devices: Sequence) -> StepSpec:
    """The pretraining step of recipe `cfg` over `devices`, sharded by the recipe's mesh."""
    vocab = recipe_vocab_size(cfg)
    model, loss_fn, init_args, mode = build_objective(cfg, model_config(cfg, vocab))
    mesh = make_mesh(cfg.mesh.shape, devices=devices)
    check_batch_divides(cfg.data.micro_batch_size, mesh, "micro-batch (data.batch_size / data.grad_accum_steps)")
    schedule, optimizer = pretrain_optimizer(cfg)
    state, shardings = abstract_train_state(model, init_args, optimizer, mesh)
    options = mesh_compiler_options(cfg.compiler, mesh, "PretrainConfig.compiler")
    step = make_train_step(loss_fn, optimizer, schedule, shardings, mesh, compiler_options=options)

    # One row through the real masking and batch assembly gives every leaf's dtype and trailing shape.
    seq_len = cfg.data.seq_len
    ids = np.arange(seq_len, dtype=np.int32)[None] % (vocab - _FIRST_PLAIN_ID - 1) + _FIRST_PLAIN_ID
    rows = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    masked = mask_batch(ids, rows["attention_mask"], np.random.default_rng(0), cfg.masking,
                        special_ids=range(_FIRST_PLAIN_ID), mask_id=vocab - 1, vocab_size=vocab, mode=mode)
    one_row = step_batch(rows, masked, mode, accumulation=1)
    sharding = batch_sharding(mesh, leading_axes=1)
    leading = (cfg.data.grad_accum_steps, cfg.data.micro_batch_size)
    batch = {k: _abstract(leading + v.shape[2:], v.dtype, sharding) for k, v in one_row.items()}

    predictions = cfg.masking.num_predictions(seq_len)
    if cfg.objective == "rtd":
        flops = roofline.rtd_step_flops(model.generator_config, model.discriminator_config, cfg.data.batch_size,
                                        seq_len, predictions, cfg.rtd.generator_emd_steps)
        model_cfg = model.discriminator_config
    else:
        flops = roofline.mlm_step_flops(model.config, cfg.data.batch_size, seq_len, predictions, cfg.emd.steps)
        model_cfg = model.config
    describe = {"kind": "pretrain", "objective": cfg.objective, **_model_fields(cfg.model.preset, model_cfg),
                "params": _param_count(state), "batch_size": cfg.data.batch_size, "seq_len": seq_len,
                "grad_accum_steps": cfg.data.grad_accum_steps, "mesh": dict(mesh.shape), "compiler_options": options}
    return StepSpec(step, (state, batch), flops, describe,
                    tuple(dropped_axes(boxed_train_state(model, init_args, optimizer), mesh)))


def finetune_step(recipe: PretrainConfig, cfg: FinetuneConfig, devices: Sequence) -> StepSpec:
    """The fine-tuning step of `cfg` (task, batch_size, max_length, mesh, SiFT) on a sequence-classification model
    of the recipe's preset, built as `finetune` builds it from the recipe's HF export: the JAX-only fields
    (attention_impl, remat, scan_layers) do not travel in HF files, so they are the defaults."""
    exported = model_config(recipe, recipe_vocab_size(recipe))
    model = build_model(DebertaConfig.from_hf_dict(exported.to_hf_dict(), **model_overrides(cfg)),
                        "sequence_classification")
    mesh = make_mesh(cfg.mesh.shape, devices=devices)
    check_batch_divides(cfg.batch_size, mesh, "batch_size")
    schedule, optimizer = finetune_optimizer(cfg, abstract_params(model), model.config.num_hidden_layers,
                                             _SCHEDULE_STEPS)
    init_args = (jnp.zeros((1, 8), jnp.int32),)
    state, shardings = abstract_train_state(model, init_args, optimizer, mesh)
    options = mesh_compiler_options(cfg.compiler, mesh, "FinetuneConfig.compiler")
    step = make_train_step(make_loss_fn(model, cfg), optimizer, schedule, shardings, mesh, compiler_options=options)

    sharding = batch_sharding(mesh, leading_axes=1)
    rows, length = (1, cfg.batch_size), cfg.max_length
    label_dtype = np.float32 if get_task(cfg.task).is_regression else np.int32
    shapes = {"input_ids": (rows + (length,), np.int32), "token_type_ids": (rows + (length,), np.int32),
              "attention_mask": (rows + (length,), np.int32), "labels": (rows, label_dtype),
              "weights": (rows, np.float32)}
    batch = {k: _abstract(*shapes[k], sharding) for k in STEP_BATCH_KEYS}
    flops = roofline.classification_step_flops(model.config, cfg.batch_size, length)
    describe = {"kind": "finetune", "task": cfg.task, **_model_fields(recipe.model.preset, model.config),
                "params": _param_count(state), "batch_size": cfg.batch_size, "seq_len": length,
                "sift": cfg.sift.enabled, "mesh": dict(mesh.shape), "compiler_options": options}
    return StepSpec(step, (state, batch), flops, describe,
                    tuple(dropped_axes(boxed_train_state(model, init_args, optimizer), mesh)))


def _model_fields(preset_name: str, cfg: DebertaConfig) -> dict:
    return {"preset": preset_name, "attention_impl": cfg.attention_impl, "dtype": cfg.dtype, "remat": cfg.remat,
            "scan_layers": cfg.scan_layers, "vocab_size": cfg.vocab_size}


def _is_out_of_memory(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Ran out of memory" in text


def compile_report(spec: StepSpec, chip: ChipSpec, chips: int) -> dict:
    """Lowers and compiles `spec` and reads the compiler's analyses, per chip: memory against the chip's HBM,
    FLOPs and bytes, the roofline step time and MFU, collectives and gathers. A program the compiler rejects for
    want of memory gives `fits: False` with the compiler's message instead of the analyses."""
    report = {"note": ESTIMATE_NOTE, "step": spec.describe, "chip": dataclasses.asdict(chip), "chips": chips,
              "versions": _versions(), "replicated": replicated_summary(spec.replicated)}
    t0 = time.perf_counter()
    try:
        compiled = spec.step.lower(*spec.args).compile()
    except Exception as error:  # the TPU compiler refuses a program that cannot fit in HBM
        if not _is_out_of_memory(error):
            raise
        report.update(compile_seconds=round(time.perf_counter() - t0, 1),
                      memory_per_chip={"fits": False, "compiler_error": " ".join(str(error).split())[:600]})
        return report
    report["compile_seconds"] = round(time.perf_counter() - t0, 1)
    report["memory_per_chip"] = memory_per_chip(compiled.memory_analysis(), chip.hbm_bytes)
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    flops, accessed = float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0))
    report["cost_per_chip"] = {"flops": flops, "bytes_accessed": accessed,
                              "transcendentals": float(cost.get("transcendentals", 0.0))}
    report["model_flops_per_step"] = spec.model_flops
    report["compiled_over_model_flops"] = flops * chips / spec.model_flops if spec.model_flops else None
    report["roofline"] = roofline.roofline(spec.model_flops, flops, accessed, chips, chip.peak_bf16_flops,
                                           chip.hbm_bandwidth)
    text = compiled.as_text()
    report["collectives"] = hlo.collective_summary(text)
    report["gathers"] = hlo.count_op(text, "gather")
    report["while_loops"] = hlo.count_op(text, "while")
    # Our estimate beside XLA's: loops weighted by their trip counts, on-core arrays free (tpu/hbm_traffic.py).
    report["hbm_traffic"] = hbm_traffic(text)
    # Its compute side takes our loop-weighted matmul FLOPs where XLA's loop-blind count is lower.
    report["roofline_hbm_traffic"] = roofline.roofline(
        spec.model_flops, max(flops, report["hbm_traffic"]["matmul_flops"]), report["hbm_traffic"]["bytes"], chips,
        chip.peak_bf16_flops, chip.hbm_bandwidth)
    return report


def replicated_summary(dropped: Sequence[DroppedAxes]) -> dict:
    """The bytes per chip that mesh axes dropped from state leaves cost (sharding/rules.py replicates a dimension an
    axis does not divide), in all and per parameter (its optimizer moments included), largest first."""
    per_param: dict[str, dict] = {}
    for leaf in dropped:
        entry = per_param.setdefault(leaf.param, {"param": leaf.param, "shape": list(leaf.shape),
                                                  "dropped": [f"{axis} on dim {dim}" for dim, axis in leaf.dropped],
                                                  "extra_bytes_per_chip": 0})
        entry["extra_bytes_per_chip"] += leaf.extra_bytes_per_chip
    params = sorted(per_param.values(), key=lambda e: -e["extra_bytes_per_chip"])
    return {"extra_bytes_per_chip": sum(e["extra_bytes_per_chip"] for e in params), "params": params}


def memory_per_chip(stats, hbm_bytes: float) -> dict:
    """Bytes of one chip's program from XLA's memory analysis: arguments + outputs − aliased (the donated state)
    + temporaries + generated code, and whether that total fits in `hbm_bytes`."""
    parts = {"arguments": stats.argument_size_in_bytes, "outputs": stats.output_size_in_bytes,
             "aliased": stats.alias_size_in_bytes, "temp": stats.temp_size_in_bytes,
             "generated_code": stats.generated_code_size_in_bytes}
    total = parts["arguments"] + parts["outputs"] - parts["aliased"] + parts["temp"] + parts["generated_code"]
    return {**{k: int(v) for k, v in parts.items()}, "total": int(total), "hbm": int(hbm_bytes),
            "hbm_fraction": total / hbm_bytes, "fits": bool(total <= hbm_bytes)}


def _versions() -> dict:
    # LIBTPU_INIT_ARGS carries the TPU compiler's flags (read when libtpu loads): they change the program.
    versions = {"jax": jax.__version__, "libtpu_init_args": os.environ.get("LIBTPU_INIT_ARGS", "")}
    try:
        versions["libtpu"] = importlib.metadata.version("libtpu")
    except importlib.metadata.PackageNotFoundError:
        versions["libtpu"] = None
    return versions
