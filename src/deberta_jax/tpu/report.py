"""`deberta-jax compile`: from a recipe and a slice name to the compiler's report, and that report as text."""

from __future__ import annotations

import json
from typing import Sequence

from deberta_jax.tpu.topologies import get_slice, slice_devices

GIB = 2.0 ** 30


def compile_for_topology(config: str, topology: str, finetune_task: str | None = None,
                         overrides: Sequence[str] = ()) -> dict:
    """The report of `compile_report` for recipe `config` on TPU slice `topology`: its pretraining step, or with
    `finetune_task` the fine-tuning step of that GLUE task (then `overrides` set FinetuneConfig keys)."""
    from deberta_jax.finetuning.train import finetune_config
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.tpu.compile import compile_report, finetune_step, pretrain_step

    spec = get_slice(topology)
    if finetune_task:
        recipe = load_pretrain_config(config)
        step_cfg = finetune_config(finetune_task, recipe.model.preset, overrides=overrides)
        step = finetune_step(recipe, step_cfg, slice_devices(spec))
    else:
        step = pretrain_step(load_pretrain_config(config, overrides), slice_devices(spec))
    report = compile_report(step, spec.chip, spec.chips)
    report["topology"] = {"name": spec.name, "libtpu_topology": spec.topology, "chips": spec.chips}
    report["step"]["recipe"] = config
    return report


def _gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def summary_lines(report: dict) -> list[str]:
    """The report in a few lines of text, headed by what it is: estimates, not measurements."""
    step, chip = report["step"], report["chip"]
    what = (f"{step['objective'].upper()} pretraining" if step["kind"] == "pretrain"
            else f"{step['task']} fine-tuning")
    mesh = " ".join(f"{k}={v}" for k, v in step["mesh"].items())
    lines = [f"{step['preset']} {what} step ({step['attention_impl']} attention, {step['dtype']}), batch "
             f"{step['batch_size']} x {step['seq_len']}, mesh {mesh}, on {report['topology']['name']} "
             f"({report['chips']} x TPU {chip['name']})",
             "COMPILER ESTIMATES, not measurements: XLA's analysis of the compiled program; no TPU ran it",
             f"  compile time     {report['compile_seconds']:.1f} s"]
    flags = report.get("versions", {}).get("libtpu_init_args")  # absent from reports of earlier versions
    if flags:
        lines.append(f"  compiler flags   LIBTPU_INIT_ARGS={flags}")
    options = step.get("compiler_options")  # the recipe's compiler.tpu (absent from reports of earlier versions)
    if options:
        lines.append("  compiler options " + " ".join(f"{k}={json.dumps(v)}" for k, v in options.items()))
    memory = report["memory_per_chip"]
    if "compiler_error" in memory:
        return lines + [f"  memory per chip  does not fit: {memory['compiler_error']}"]
    lines.append(f"  memory per chip  {_gib(memory['total'])} of {_gib(memory['hbm'])} HBM "
                 f"({100 * memory['hbm_fraction']:.0f} %): {'fits' if memory['fits'] else 'DOES NOT FIT'} "
                 f"[arguments {_gib(memory['arguments'])}, outputs {_gib(memory['outputs'])}, aliased "
                 f"{_gib(memory['aliased'])}, temp {_gib(memory['temp'])}]")
    replicated = report["replicated"]
    if replicated["params"]:
        largest = ", ".join(f"{e['param']} ({', '.join(e['dropped'])}: {_gib(e['extra_bytes_per_chip'])})"
                            for e in replicated["params"][:3])
        more = len(replicated["params"]) - 3
        lines.append(f"  replicated       {_gib(replicated['extra_bytes_per_chip'])} per chip of state that a mesh "
                     f"axis does not divide: {largest}{f' and {more} more' if more > 0 else ''}")
    cost, bound = report["cost_per_chip"], report["roofline"]
    lines.append(f"  per chip         {cost['flops']:.3e} FLOP, {cost['bytes_accessed']:.3e} bytes accessed")
    lines.append(f"  roofline step    {bound['step_seconds'] * 1e3:.1f} ms, {bound['bound']}-bound (compute "
                 f"{bound['compute_seconds'] * 1e3:.1f} ms, HBM {bound['memory_seconds'] * 1e3:.1f} ms)")
    lines.append(f"  roofline MFU     {100 * bound['mfu']:.1f} % of {chip['peak_bf16_flops']:.3g} FLOP/s per chip "
                 f"(model {report['model_flops_per_step']:.3e} FLOP per step; compiled/model "
                 f"{report['compiled_over_model_flops']:.2f})"
                 + (": below 1, so XLA missed the work its loops repeat; not an MFU"
                    if report["while_loops"] and report["compiled_over_model_flops"] < 1 else ""))
    kinds = report["collectives"]["by_kind"]
    used = [f"{kind} {v['count']} ({_gib(v['operand_bytes'])})" for kind, v in kinds.items() if v["count"]]
    lines.append(f"  collectives      {', '.join(used) or 'none'} (operand bytes per chip, each op counted once)")
    lines.append(f"  gathers          {report['gathers']}")
    if report["while_loops"]:
        lines.append(f"  while loops      {report['while_loops']}: XLA counts a loop body once, so the FLOPs, bytes "
                     "and roofline above undercount what the loops repeat")
    if "hbm_traffic" in report:
        traffic, other = report["hbm_traffic"], report["roofline_hbm_traffic"]
        unknown = traffic["loops"]["unknown_trip_counts"]
        matmul = f", {traffic['matmul_flops']:.3e} matmul FLOP" if "matmul_flops" in traffic else ""
        lines.append(f"  HBM traffic      {traffic['bytes']:.3e} bytes{matmul} (our estimate from the HLO: loops x trip "
                     f"counts{f', {unknown} unknown counted once' if unknown else ''}; on-core arrays free): roofline "
                     f"{other['step_seconds'] * 1e3:.1f} ms, MFU {100 * other['mfu']:.1f} %")
        for entry in traffic["by_source"][:6]:
            lines.append(f"    {entry['bytes']:.2e}  {entry['source']}")
        if "results" in traffic:  # absent from reports of earlier versions
            written, looped = traffic["results"], traffic["loop_results"]
            lines.append(f"  results written  {written['on_core']:.3e} bytes on-core, {written['hbm']:.3e} in HBM "
                         f"(loop bodies: {looped['on_core']:.3e} and {looped['hbm']:.3e}; x trip counts, where "
                         "memory-space assignment put them)")
    return lines
