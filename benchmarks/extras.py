"""Compile-only measurements of our model: nothing here runs a step or allocates the model's weights.

- `compile_scan`: seconds to lower and to compile one train step with scan_layers off and on.
- `gather_counts`: `gather` / `scatter` instructions in the compiled HLO of the backbone forward and of its grad,
  per attention_impl (the reference gathers c2p / p2c with take_along_axis; gather-free variants should not).
- `memory_curve`: XLA's temp bytes of a small backbone's forward + backward at growing N, per attention_impl.

Every measurement first checks that the setting is wired into the model: a setting whose lowered program is
identical to the baseline's ("reference", scan off) is recorded as an error entry instead of a number.
"""

from __future__ import annotations

import time
from typing import Callable

from benchmarks.report import error_entry, not_wired_entry
from benchmarks.runners.base import compiled_memory
from benchmarks.runners.ours import impl_overrides, ours_forward_fn

Log = Callable[[str], None]


def _abstract_inputs(batch: int, seq_len: int):
    import jax
    import jax.numpy as jnp

    ids = jax.ShapeDtypeStruct((batch, seq_len), jnp.int32)
    return ids, ids


def _forward_and_grad(cfg, batch: int, seq_len: int):
    """(forward jit, grad jit, abstract args) of the backbone; grad is of sum(last_hidden_state) w.r.t. params."""
    import jax
    import jax.numpy as jnp

    from deberta_jax.model.modeling import DebertaModel, abstract_params

    model = DebertaModel(cfg)
    forward = ours_forward_fn(model)
    params = abstract_params(model)
    ids, mask = _abstract_inputs(batch, seq_len)

    def loss(p, ids, mask):
        return forward(p, ids, mask).astype(jnp.float32).sum()

    return jax.jit(forward), jax.jit(jax.grad(loss)), (params, ids, mask)


def count_ops(hlo_text: str) -> dict[str, int]:
    lines = hlo_text.splitlines()
    return {op: sum(f" {op}(" in line for line in lines) for op in ("gather", "scatter")}


def gather_counts(cfg, impls: list[str], seq_len: int, log: Log) -> dict:
    """Per impl: {"forward": {"gather": n, "scatter": n}, "grad": {...}} of the compiled backbone (batch 1).
    "reference" is always counted: it is the baseline the other impls are compared with."""
    out = {"model_layers": cfg.num_hidden_layers, "seq_len": seq_len, "batch": 1,
           "counted": "lines of the compiled HLO text (fusion bodies included) containing ' gather(' / ' scatter('",
           "note": "the word-embedding lookup is one gather in forward and one scatter(-add) in grad for every impl",
           "impls": {}}
    baseline_text = None
    for impl in ["reference"] + [i for i in impls if i != "reference"]:
        log(f"gather-count: attention_impl={impl} N={seq_len}")
        try:
            fwd, grad, args = _forward_and_grad(cfg.replace(**impl_overrides(impl)), 1, seq_len)
            lowered = fwd.lower(*args)
            text = lowered.as_text()
            if impl == "reference":
                baseline_text = text
            elif text == baseline_text:
                out["impls"][impl] = not_wired_entry(f"attention_impl={impl!r}", "attention_impl='reference'")
                continue
            entry = {"status": "ok"}
            t0 = time.perf_counter()
            entry["forward"] = count_ops(lowered.compile().as_text())
            entry["grad"] = count_ops(grad.lower(*args).compile().as_text())
            entry["compile_s"] = round(time.perf_counter() - t0, 2)
            out["impls"][impl] = entry
        except Exception as e:  # noqa: BLE001 - an impl that fails is a result
            out["impls"][impl] = error_entry(e, "compile")
    return out


def memory_curve(cfg, impls: list[str], seq_lens: list[int], log: Log) -> dict:
    """Per impl and N: XLA's compiled memory (temp / argument / output bytes) of forward + backward, batch 1."""
    import jax

    out = {"model": {"hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
                     "num_attention_heads": cfg.num_attention_heads, "vocab_size": cfg.vocab_size,
                     "dtype": cfg.dtype},
           "what": "jit(grad(sum(backbone(ids).last_hidden_state))).lower(abstract).compile().memory_analysis(), "
                   "batch 1, compiled only (never run)",
           "seq_lens": list(seq_lens), "backend": jax.default_backend(), "impls": {}}
    baseline_text = None
    for impl in ["reference"] + [i for i in impls if i != "reference"]:
        rows = {}
        try:
            fwd, _, args = _forward_and_grad(cfg.replace(**impl_overrides(impl)), 1, min(seq_lens))
            text = fwd.lower(*args).as_text()
        except Exception as e:  # noqa: BLE001
            if impl in impls:
                out["impls"][impl] = error_entry(e, "lower")
            continue
        if impl == "reference":
            baseline_text = text
        elif text == baseline_text:
            out["impls"][impl] = not_wired_entry(f"attention_impl={impl!r}", "attention_impl='reference'")
            continue
        if impl not in impls:
            continue
        for n in seq_lens:
            log(f"memory-curve: attention_impl={impl} N={n} (compile only)")
            try:
                _, grad, args = _forward_and_grad(cfg.replace(**impl_overrides(impl)), 1, n)
                t0 = time.perf_counter()
                compiled = grad.lower(*args).compile()
                rows[str(n)] = {**compiled_memory(compiled), "compile_s": round(time.perf_counter() - t0, 2)}
                del compiled
            except Exception as e:  # noqa: BLE001
                rows[str(n)] = error_entry(e, "compile")
        out["impls"][impl] = {"status": "ok", "by_seq_len": rows}
    return out


def _abstract_train_step(cfg, batch: int, seq_len: int, masked: int):
    """(jitted production train step, abstract state, abstract batch) without allocating anything."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from deberta_jax.pretraining.emd import DebertaForMLMPretraining
    from deberta_jax.pretraining.objectives import mlm_loss_fn
    from deberta_jax.sharding.mesh import make_mesh
    from deberta_jax.sharding.rules import DEFAULT_RULES, logical_shardings
    from deberta_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
    from deberta_jax.training.train_step import TrainState, make_train_step

    model = DebertaForMLMPretraining(cfg, emd_steps=0)
    schedule = learning_rate_schedule(OptimizerConfig(), 10 ** 6)
    optimizer = make_optimizer(OptimizerConfig(), schedule)
    mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
    ids = jnp.zeros((1, seq_len), jnp.int32)

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        boxed = model.init(init_rng, ids)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=boxed, opt_state=optimizer.init(boxed),
                          rng=state_rng)

    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = logical_shardings(boxed, mesh, DEFAULT_RULES)
    state = nn.meta.unbox(boxed)
    step = make_train_step(mlm_loss_fn(model), optimizer, schedule, shardings, mesh)
    s = jax.ShapeDtypeStruct
    batch_spec = {"input_ids": s((1, batch, seq_len), jnp.int32), "attention_mask": s((1, batch, seq_len), jnp.int32),
                  "masked_positions": s((1, batch, masked), jnp.int32),
                  "masked_labels": s((1, batch, masked), jnp.int32),
                  "masked_weights": s((1, batch, masked), jnp.float32)}
    return step, state, batch_spec


def compile_scan(cfg, model_name: str, batch: int, seq_len: int, masked: int, log: Log) -> dict:
    """Seconds to lower and compile the production MLM train step with scan_layers off and on."""
    from deberta_jax.training.throughput import compiled_flops

    out = {"model": model_name, "batch": batch, "seq_len": seq_len, "dtype": cfg.dtype,
           "what": "make_train_step(mlm_loss_fn) lowered from abstract state (nothing allocated) and compiled",
           "scan_layers": {}}
    texts = {}
    for scan in (False, True):
        key = "on" if scan else "off"
        log(f"compile-scan: {model_name} train step, scan_layers={key}")
        try:
            step, state, batch_spec = _abstract_train_step(cfg.replace(scan_layers=scan), batch, seq_len, masked)
            t0 = time.perf_counter()
            lowered = step.lower(state, batch_spec)
            lower_s = time.perf_counter() - t0
            texts[scan] = lowered.as_text()
            if scan and texts.get(False) == texts[scan]:
                out["scan_layers"][key] = not_wired_entry("scan_layers=True", "scan_layers=False")
                continue
            t0 = time.perf_counter()
            compiled = lowered.compile()
            out["scan_layers"][key] = {"status": "ok", "lower_s": round(lower_s, 2),
                                       "compile_s": round(time.perf_counter() - t0, 2),
                                       "xla_flops": compiled_flops(compiled), "memory": compiled_memory(compiled)}
        except Exception as e:  # noqa: BLE001
            out["scan_layers"][key] = error_entry(e, "compile")
    return out
