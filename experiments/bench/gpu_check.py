"""The Python sections of the prepared GPU check (`experiments/bench/gpu_check.sh`) and its summary.

    python experiments/bench/gpu_check.py {env,pallas,layer,summary} --out PATH [--dry-run] ...

Nothing heavy is imported at module level (deberta_jax's package imports jax and flax): a section that has
nothing to do, such as a library that is not installed, answers in a fraction of a second.

Each section writes one JSON file and rewrites it after every item, so a section stopped by its time box keeps what
it measured. Every file has a top-level "status": "ok", "failed" (a numerical check missed its tolerance),
"error" (an item raised), "skipped" (nothing to do here, e.g. a CUDA-only library on a CPU) or "not_installed".

- env: versions, devices, the datasheet peak of the device, which optional libraries import.
- pallas: the Pallas kernel against the dense path of the model (forward and gradients w.r.t. q, k, v and both
  relative tables; dropout included), in float32 under jax_default_matmul_precision=highest (what
  JAX_DEFAULT_MATMUL_PRECISION=highest sets) and in bfloat16, plus the model's attention_impl="pallas" switch
  against "reference" (last hidden state and parameter gradients). On a GPU the kernels are compiled by Triton;
  on a CPU (the dry run) they run in the Pallas interpreter.
- layer: one DeBERTa-v3 self-attention layer (Q/K/V projections, relative projections, disentangled attention;
  bf16, no dropout) at N = 512 / 2048 / 8192 with B·N = 16384 tokens, forward and forward + backward, for one
  family per process: "jax" (ours per attention_impl, and no-bias flash attention through
  jax.nn.dot_product_attention(implementation="cudnn")), "transformers" (eager DisentangledSelfAttention),
  "flashdeberta" (0.0.8) and "disentangled-flash" (1.1.1). Each family checks its forward against its own
  framework's float32 dense layer on the same weights (generated from one seed, so every family sees the same
  numbers), and records a slice of its output that the summary compares across families.
- summary: merges the section files and the shell's per-section exit codes into summary.json, with a headline of
  the numbers the GPU issue asks for.

Shapes shrink to a few dozen tokens with --dry-run, which is how CI runs the same code on a CPU.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

# The repository root (for benchmarks/) and src/ (for deberta_jax when it is not installed).
_REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path[:0] = [_REPO, os.path.join(_REPO, "src")]

from benchmarks.machine import versions  # noqa: E402
from benchmarks.report import write_json  # noqa: E402

SCHEMA = "deberta-jax-gpu-check/1"
# The shell's sections, in the order it runs them (their priority when time runs short).
SECTIONS = ("env", "pallas", "bench_train", "layer_jax", "layer_flashdeberta", "layer_disentangled_flash",
            "bench_train_dense", "bench_forward", "layer_transformers")
BENCH_SECTIONS = ("bench_train", "bench_train_dense", "bench_forward")
LAYER_FAMILIES = ("jax", "transformers", "flashdeberta", "disentangled-flash")
OPTIONAL_LIBRARIES = {"flashdeberta": ("flashdeberta", "0.0.8"), "disentangled-flash": ("disentangled_flash", "1.1.1")}
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "orbax-checkpoint", "numpy",
            "ml_dtypes", "torch", "transformers", "triton", "flashdeberta", "disentangled-flash", "einops")
# Relative error ||x - ref|| / ||ref|| allowed against the float32 (highest precision) reference.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


# ------------------------------------------------------------------------------------------------- recording
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Record:
    """One section's JSON, rewritten (atomically) after every item."""

    def __init__(self, path: str, section: str, **meta):
        self.path = path
        self.data = {"schema": SCHEMA, "section": section, "status": "running", "started_utc": _now(), **meta,
                     "items": {}}
        self.t0 = time.perf_counter()
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.t0, 2)
        write_json(self.data, self.path)

    def add(self, key: str, item: dict) -> dict:
        self.data["items"][key] = item
        status = item.get("status", "?")
        extra = item.get("error") or item.get("reason") or ""
        print(f"[gpu-check {time.strftime('%H:%M:%S')}] {self.data['section']} {key}: {status} {extra}"[:400],
              flush=True)
        self.write()
        return item

    def run(self, key: str, fn, *args, **kwargs) -> dict:
        """add(key, fn(...)); an exception becomes an error item and the section goes on."""
        t0 = time.perf_counter()
        try:
            item = fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - recorded, the next item runs
            item = {"status": "error", "error": f"{type(e).__name__}: {e}",
                    "traceback": traceback.format_exc().splitlines()[-8:]}
        item.setdefault("seconds", round(time.perf_counter() - t0, 2))
        return self.add(key, item)

    def finish(self, status: str | None = None) -> int:
        states = [i.get("status") for i in self.data["items"].values()]
        if status is None:
            status = "error" if "error" in states else "failed" if "failed" in states else "ok"
        self.data["status"] = status
        self.data["finished_utc"] = _now()
        self.write()
        return 0


def rel_err(x, ref) -> float:
    """||x - ref||_2 / ||ref||_2 in float64 (inf when x holds a NaN or inf)."""
    x = np.asarray(x, np.float64)
    ref = np.asarray(ref, np.float64)
    if x.shape != ref.shape:
        raise ValueError(f"shape {x.shape} vs reference {ref.shape}")
    if not np.all(np.isfinite(x)):
        return float("inf")
    denom = float(np.linalg.norm(ref)) or 1.0
    return float(np.linalg.norm(x - ref)) / denom


# ------------------------------------------------------------------------------------------------------- env
def _nvidia_smi() -> dict:
    query = "name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit"
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return {"status": "unavailable", "error": f"{type(e).__name__}: {e}"}
    return {"status": "ok" if out.returncode == 0 else "error", "fields": query.split(","),
            "rows": [line.split(", ") for line in out.stdout.strip().splitlines()], "stderr": out.stderr.strip()[-300:]}


def section_env(args) -> int:
    rec = Record(args.out, "env", dry_run=args.dry_run)

    def software():
        return {"status": "ok", "versions": versions(PACKAGES), "platform": platform.platform(),
                "executable": sys.executable, "cpu_count": os.cpu_count(),
                "environment": {k: os.environ.get(k) for k in ("JAX_PLATFORMS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                                                               "JAX_DEFAULT_MATMUL_PRECISION", "XLA_FLAGS",
                                                               "PYTHONPATH", "CUDA_VISIBLE_DEVICES")}}

    def jax_devices():
        import jax

        from benchmarks.device_peaks import datasheet_peak

        devices = jax.devices()
        kind = devices[0].device_kind
        return {"status": "ok", "backend": jax.default_backend(), "devices": [f"{d.platform}:{d.device_kind}"
                                                                               for d in devices],
                "default_matmul_precision": jax.config.jax_default_matmul_precision,
                "datasheet_peak_bfloat16": datasheet_peak(kind, "bfloat16"),
                "datasheet_peak_float32": datasheet_peak(kind, "float32"),
                "memory_stats": _jax_memory_stats(devices[0])}

    def torch_devices():
        import torch

        info = {"status": "ok", "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                "torch_cuda": torch.version.cuda}
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(device=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                        multiprocessors=props.multi_processor_count, memory_bytes=props.total_memory,
                        cudnn=torch.backends.cudnn.version())
        return info

    def libraries():
        out = {"status": "ok"}
        for name, (module, wanted) in OPTIONAL_LIBRARIES.items():
            spec = importlib.util.find_spec(module)
            try:
                version = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                version = None
            out[name] = {"importable": spec is not None, "version": version, "wanted": wanted,
                         "location": spec.origin if spec else None}
        return out

    rec.run("software", software)
    rec.run("nvidia_smi", _nvidia_smi)
    rec.run("jax", jax_devices)
    rec.run("torch", torch_devices)
    rec.run("libraries", libraries)
    if args.tiny_config:
        rec.run("tiny_config", _write_tiny_config, args.tiny_config)
    # nvidia-smi is missing on a CPU machine: that is not an error of the check.
    smi = rec.data["items"]["nvidia_smi"]
    if smi.get("status") != "ok":
        smi["status"] = "skipped"
        smi["reason"] = smi.pop("error", "nvidia-smi failed")
    return rec.finish()


def _jax_memory_stats(device) -> dict | None:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU devices have none
        return None
    return {k: stats[k] for k in ("bytes_limit", "bytes_in_use", "peak_bytes_in_use") if stats and k in stats}


def _write_tiny_config(path: str) -> dict:
    """The dry run's bench model: 2 layers of width 32 with 2 heads, so head_dim = 16 (the Pallas minimum)."""
    from benchmarks.cases import resolve_model

    cfg = resolve_model("tiny").replace(num_attention_heads=2)
    cfg.to_json_file(path)
    return {"status": "ok", "path": path, "head_dim": cfg.head_dim}


# ---------------------------------------------------------------------------------------------------- pallas
# name: (batch, q_len, k_len, heads, head_dim, (span, buckets, max_position), terms, (block_q, block_k), rate)
PALLAS_CASES = {
    "v3_n512_blocks32": (2, 512, 512, 12, 64, (256, 256, 512), ("c2p", "p2c"), (32, 32), 0.0),
    "ragged_n200_blocks64x32": (2, 200, 200, 4, 64, (256, 256, 512), ("c2p", "p2c"), (64, 32), 0.0),
    "dropout_n256_blocks32": (2, 256, 256, 4, 64, (256, 256, 512), ("c2p", "p2c"), (32, 32), 0.1),
    "cross_c2p_only_q160_k288_blocks16": (2, 160, 288, 4, 32, (128, -1, -1), ("c2p",), (16, 16), 0.0),
}
# The dry run: one ragged case with dropout (two tiles per axis, padded) runs every kernel path in the interpreter.
PALLAS_CASES_DRY = {
    "tiny_ragged_dropout_blocks16": (2, 24, 24, 2, 16, (8, 8, 32), ("c2p", "p2c"), (16, 16), 0.1),
}


def _pallas_inputs(case, seed: int):
    """Random q, k, v [B, L, H, D], relative tables [2 span, H, D] (None when the term is off), and masks with the
    last batch row padded past 60% of each length (its trailing query rows are fully masked)."""
    batch, q_len, k_len, heads, dim, rel, terms, _, _ = case
    rng = np.random.default_rng(seed)
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    arrays = [normal(batch, q_len, heads, dim), normal(batch, k_len, heads, dim), normal(batch, k_len, heads, dim),
              normal(2 * rel[0], heads, dim) if "c2p" in terms else None,
              normal(2 * rel[0], heads, dim) if "p2c" in terms else None]
    lengths_q, lengths_k = np.full(batch, q_len), np.full(batch, k_len)
    lengths_q[-1], lengths_k[-1] = int(0.6 * q_len), int(0.6 * k_len)
    query_mask = np.arange(q_len)[None] < lengths_q[:, None]
    key_mask = np.arange(k_len)[None] < lengths_k[:, None]
    cotangent = rng.standard_normal((batch, q_len, heads, dim)).astype(np.float32)
    return arrays, query_mask, key_mask, cotangent


def _dense_attention(q, k, v, pos_key, pos_query, query_mask, key_mask, rel, scale, rate, seed):
    """The model's dense path (attention.py): gathered c2p / p2c, masked fp32 softmax, counter dropout."""
    import jax.numpy as jnp

    from deberta_jax.model.attention import (content_to_content, content_to_position, masked_softmax,
                                             position_to_content)
    from deberta_jax.model.counter_dropout import keep_mask
    from deberta_jax.model.relative_positions import relative_embedding_index

    batch, q_len, heads, _ = q.shape
    k_len = k.shape[1]
    index = relative_embedding_index(q_len, k_len, *rel)
    scores = content_to_content(q, k)
    if pos_key is not None:
        scores = scores + content_to_position(q, pos_key, index)
    if pos_query is not None:
        scores = scores + position_to_content(k, pos_query, index)
    probs = masked_softmax(scores / scale, (query_mask[:, :, None] & key_mask[:, None, :])[:, None])
    if rate > 0:
        coords = [jnp.arange(n).reshape([-1 if a == axis else 1 for a in range(4)])
                  for axis, n in enumerate((batch, heads, q_len, k_len))]
        probs = probs * keep_mask(seed, *coords, heads, k_len, rate) / (1 - rate)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(v.dtype), v)


def _fused_attention(q, k, v, pos_key, pos_query, query_mask, key_mask, rel, scale, rate, seed, blocks):
    """The Pallas kernel, fed per-offset tables built as the model builds them."""
    from deberta_jax.model.relative_scores import expand_to_offsets
    from deberta_jax.model.pallas_attention import pallas_attention
    from deberta_jax.model.relative_positions import relative_offset_rows

    rows = relative_offset_rows(q.shape[1], k.shape[1], *rel)
    c2p = None if pos_key is None else expand_to_offsets(pos_key, rows[::-1])
    p2c = None if pos_query is None else expand_to_offsets(pos_query, rows)
    return pallas_attention(q, k, v, c2p, p2c, query_mask, key_mask, scale=scale, block_q=blocks[0],
                            block_k=blocks[1], dropout_rate=rate, dropout_seed=seed)


GRAD_NAMES = ("query", "key", "value", "pos_key", "pos_query")


def _output_and_grads(attention, arrays, query_mask, key_mask, cotangent, **kw):
    """Compiled (context, {name: gradient of <context, cotangent>}) for the present arrays, as fp32 NumPy."""
    import jax
    import jax.numpy as jnp

    present = [i for i, x in enumerate(arrays) if x is not None]

    def loss(*xs):
        full = list(arrays)
        for i, x in zip(present, xs):
            full[i] = x
        out = attention(*full, query_mask, key_mask, **kw)
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    fn = jax.jit(jax.grad(loss, argnums=tuple(range(len(present))), has_aux=True))
    grads, out = fn(*[arrays[i] for i in present])
    jax.block_until_ready((grads, out))
    grads_np = {GRAD_NAMES[i]: np.asarray(g, np.float32) for i, g in zip(present, grads)}
    return np.asarray(out, np.float32), grads_np


def _pallas_case(case, dtype: str, seed: int) -> dict:
    import jax
    import jax.numpy as jnp

    from deberta_jax.model.attention import score_scale

    batch, q_len, k_len, heads, dim, rel, terms, blocks, rate = case
    arrays, query_mask, key_mask, cotangent = _pallas_inputs(case, seed)
    scale = score_scale(dim, terms)
    drop_seed = jnp.uint32(1234 + seed) if rate > 0 else None
    common = dict(rel=rel, scale=scale, rate=rate, seed=drop_seed)
    qm, km, cot = jnp.asarray(query_mask), jnp.asarray(key_mask), jnp.asarray(cotangent)
    cast = [None if x is None else jnp.asarray(x, dtype) for x in arrays]
    # The reference: the dense path in float32 at the highest matmul precision, on the same (rounded) inputs.
    upcast = [None if x is None else x.astype(jnp.float32) for x in cast]
    with jax.default_matmul_precision("highest"):
        ref_out, ref_grads = _output_and_grads(_dense_attention, upcast, qm, km, cot, **common)
    t0 = time.perf_counter()
    if dtype == "float32":
        with jax.default_matmul_precision("highest"):
            out, grads = _output_and_grads(_fused_attention, cast, qm, km, cot, blocks=blocks, **common)
    else:
        out, grads = _output_and_grads(_fused_attention, cast, qm, km, cot, blocks=blocks, **common)
    fused_s = time.perf_counter() - t0
    errors = {"output": rel_err(out, ref_out)} | {f"d_{n}": rel_err(g, ref_grads[n]) for n, g in grads.items()}
    item = {"dtype": dtype, "shape": {"batch": batch, "q_len": q_len, "k_len": k_len, "heads": heads,
                                      "head_dim": dim},
            "relative": {"span": rel[0], "buckets": rel[1], "max_position": rel[2]}, "terms": list(terms),
            "blocks": list(blocks), "dropout": rate, "rel_err": errors, "tolerance": TOLERANCE[dtype],
            "compile_and_first_call_s": round(fused_s, 2)}
    if dtype != "float32":
        # Yardstick: the dense path itself in this dtype, against the same reference.
        dense_out, dense_grads = _output_and_grads(_dense_attention, cast, qm, km, cot, **common)
        item["dense_same_dtype_rel_err"] = ({"output": rel_err(dense_out, ref_out)} |
                                            {f"d_{n}": rel_err(g, ref_grads[n]) for n, g in dense_grads.items()})
    item["max_rel_err"] = max(errors.values())
    item["status"] = _verdict(item["max_rel_err"], dtype, item.get("dense_same_dtype_rel_err"))
    return item


def _verdict(worst: float, dtype: str, dense_same_dtype: dict | None) -> str:
    """ok within the dtype's tolerance, or (bf16) within twice the dense path's own error in that dtype."""
    if worst <= TOLERANCE[dtype]:
        return "ok"
    if dense_same_dtype and worst <= 2 * max(dense_same_dtype.values()):
        return "ok"
    return "failed"


def _model_switch(dtype: str, dry_run: bool) -> dict:
    """DebertaModel with attention_impl="pallas" against "reference": last hidden state and parameter gradients."""
    import jax
    import jax.numpy as jnp
    import flax.linen as nn

    from deberta_jax.config import preset
    from deberta_jax.model.modeling import DebertaModel

    if dry_run:
        cfg = preset("deberta-v3-xsmall", vocab_size=128, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, position_buckets=8)
        batch, seq_len, blocks = 2, 20, 16
    else:
        cfg = preset("deberta-v3-base", vocab_size=1024, num_hidden_layers=2, intermediate_size=1024)
        batch, seq_len, blocks = 2, 384, 32
    rng = np.random.default_rng(7)
    ids = jnp.asarray(rng.integers(5, cfg.vocab_size, (batch, seq_len)), jnp.int32)
    mask = np.ones((batch, seq_len), np.int32)
    mask[-1, int(0.7 * seq_len):] = 0
    mask = jnp.asarray(mask)
    cot = jnp.asarray(rng.standard_normal((batch, seq_len, cfg.hidden_size)), jnp.float32)
    base = cfg.replace(attention_block_q=blocks, attention_block_k=blocks)
    params = nn.meta.unbox(DebertaModel(base).init(jax.random.PRNGKey(0), ids, attention_mask=mask)["params"])

    def run(impl, compute_dtype, precision):
        model = DebertaModel(base.replace(attention_impl=impl, dtype=compute_dtype))

        def loss(p):
            out = model.apply({"params": p}, ids, attention_mask=mask, deterministic=True).last_hidden_state
            return jnp.sum(out.astype(jnp.float32) * cot), out

        with jax.default_matmul_precision(precision):
            grads, out = jax.jit(jax.grad(loss, has_aux=True))(params)
            jax.block_until_ready((grads, out))
        flat = np.concatenate([np.asarray(g, np.float64).ravel() for g in jax.tree_util.tree_leaves(grads)])
        return np.asarray(out, np.float32), flat

    real = np.asarray(mask, bool)  # padded positions' hidden states are not compared (the reference leaves them)

    def errors_of(out, grads):
        return {"last_hidden_state": rel_err(out[real], ref_out[real]), "param_grads": rel_err(grads, ref_grads)}

    # The reference: float32 compute at the highest matmul precision; the bf16 dense path is the yardstick.
    ref_out, ref_grads = run("reference", "float32", "highest")
    errors = errors_of(*run("pallas", dtype, "highest" if dtype == "float32" else None))
    dense = None if dtype == "float32" else errors_of(*run("reference", dtype, None))
    worst = max(errors.values())
    return {"dtype": dtype, "config": {"hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                                       "layers": cfg.num_hidden_layers, "position_buckets": cfg.position_buckets},
            "batch": batch, "seq_len": seq_len, "blocks": [blocks, blocks], "rel_err": errors, "max_rel_err": worst,
            "dense_same_dtype_rel_err": dense, "tolerance": TOLERANCE[dtype],
            "status": _verdict(worst, dtype, dense)}


def section_pallas(args) -> int:
    import jax

    interpret = jax.default_backend() == "cpu"
    rec = Record(args.out, "pallas", dry_run=args.dry_run, backend=jax.default_backend(),
                 device=str(jax.devices()[0]), interpret=interpret,
                 float32_precision="jax_default_matmul_precision=highest (the config JAX_DEFAULT_MATMUL_PRECISION "
                                   "sets), scoped to the float32 pass and to every reference",
                 reference="the dense path (gathered c2p/p2c, fp32 softmax) in float32 at highest precision on the "
                           "same rounded inputs; error = ||x - ref|| / ||ref||")
    cases = PALLAS_CASES_DRY if args.dry_run else PALLAS_CASES
    # Case by case, both dtypes each: a section stopped by its time box has both for the cases it reached.
    for seed, (name, case) in enumerate(cases.items()):
        for dtype in ("float32", "bfloat16"):
            rec.run(f"{dtype}/{name}", _pallas_case, case, dtype, seed)
    for dtype in ("float32", "bfloat16"):
        if args.dry_run:  # CI time: layer_jax runs the model's pallas switch against the reference in the dry run
            rec.add(f"{dtype}/model_attention_impl_switch", {"status": "skipped", "reason": "dry run"})
        else:
            rec.run(f"{dtype}/model_attention_impl_switch", _model_switch, dtype, args.dry_run)
    return rec.finish()


# ----------------------------------------------------------------------------------------------------- layer
# In priority order (per N, the later ones are the first to go when the time box runs out).
LAYER_IMPLS = ("chunked", "pallas:32x32", "no_bias_flash[cudnn]", "reference", "pallas:64x64")
LAYER_IMPLS_DRY = ("chunked", "pallas:16x16", "no_bias_flash[cudnn]", "no_bias_flash[xla]")


def layer_setup(dry_run: bool) -> dict:
    """Shapes of the layer section: v3-base widths, B = tokens / N."""
    if dry_run:
        return {"hidden": 32, "heads": 2, "buckets": 8, "max_position": 32, "seq_lens": [32], "tokens": 64,
                "reps": 2, "warmup": 1}
    return {"hidden": 768, "heads": 12, "buckets": 256, "max_position": 512, "seq_lens": [512, 2048, 8192],
            "tokens": 16384, "reps": 10, "warmup": 2}


def layer_weights(setup: dict, seq_len: int) -> dict[str, np.ndarray]:
    """Deterministic fp32 weights in torch layout, inputs and output cotangent: identical in every process."""
    rng = np.random.default_rng(2024)
    h = setup["hidden"]
    batch = max(1, setup["tokens"] // seq_len)
    out = {}
    for name in ("query_proj", "key_proj", "value_proj"):
        out[f"{name}.weight"] = (rng.standard_normal((h, h)) / np.sqrt(h)).astype(np.float32)
        out[f"{name}.bias"] = (0.02 * rng.standard_normal(h)).astype(np.float32)
    out["rel_embeddings"] = rng.standard_normal((2 * setup["buckets"], h)).astype(np.float32)
    data = np.random.default_rng(seq_len)
    out["hidden_states"] = data.standard_normal((batch, seq_len, h)).astype(np.float32)
    out["cotangent"] = data.standard_normal((batch, seq_len, h)).astype(np.float32)
    return out


def layer_flops(setup: dict, batch: int, seq_len: int, no_bias: bool = False) -> dict:
    """Matmul FLOPs of one attention layer: Q/K/V projections, relative projections and the attention products
    (c2c, c2p, p2c credited as N x N products, and probs x V). Backward = 2 x forward."""
    h, n = setup["hidden"], seq_len
    projections = 3 * 2 * batch * n * h * h
    relative = 0 if no_bias else 2 * 2 * (2 * setup["buckets"]) * h * h
    attention = (4 if no_bias else 8) * batch * n * n * h
    forward = projections + relative + attention
    return {"forward": forward, "train": 3 * forward}


def _hf_config(setup: dict):
    import transformers

    return transformers.DebertaV2Config(
        hidden_size=setup["hidden"], num_attention_heads=setup["heads"], intermediate_size=4 * setup["hidden"],
        relative_attention=True, position_buckets=setup["buckets"], max_relative_positions=-1,
        max_position_embeddings=setup["max_position"], pos_att_type=["p2c", "c2p"], share_att_key=True,
        norm_rel_ebd="layer_norm", attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
        position_biased_input=False, layer_norm_eps=1e-7, vocab_size=128)


def _our_config(setup: dict, impl: str, dtype: str):
    from benchmarks.runners.ours import impl_overrides
    from deberta_jax.config import preset

    return preset("deberta-v3-base", hidden_size=setup["hidden"], num_attention_heads=setup["heads"],
                  position_buckets=setup["buckets"], max_position_embeddings=setup["max_position"],
                  attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, dtype=dtype, param_dtype=dtype,
                  **impl_overrides(impl))


def _timed(call, sync, reps: int, warmup: int) -> dict:
    t0 = time.perf_counter()
    sync(call())
    first = time.perf_counter() - t0
    for _ in range(warmup):
        sync(call())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        sync(call())
        times.append(time.perf_counter() - t0)
    return {"first_call_s": round(first, 4), "times_s": times, "median_s": statistics.median(times),
            "min_s": min(times)}


def _probe(out) -> list:
    """A fixed slice of the output (batch row 0, the first 4 tokens, the first 16 features) for the summary's
    cross-family comparison."""
    return np.asarray(out, np.float32)[0, :4, :16].round(5).tolist()


def _throughput(item: dict, flops: dict, workload: str) -> None:
    if "median_s" in item:
        item["tflops_per_s"] = flops[workload] / item["median_s"] / 1e12


def _layer_jax(rec: Record, setup: dict, impls) -> None:
    import jax
    import jax.numpy as jnp

    from deberta_jax.model.attention import DisentangledSelfAttention

    on_gpu = jax.default_backend() in ("gpu", "cuda", "rocm")

    def params_of(w, dtype):
        return {name: {"kernel": jnp.asarray(w[f"{name}.weight"].T, dtype), "bias": jnp.asarray(w[f"{name}.bias"],
                                                                                                  dtype)}
                for name in ("query_proj", "key_proj", "value_proj")}

    def ours(impl, dtype):
        module = DisentangledSelfAttention(_our_config(setup, impl, dtype))

        def forward(params, hidden, rel, mask):
            return module.apply({"params": params}, hidden, mask, rel, deterministic=True)[0]
        return forward

    def no_bias(implementation):
        heads, dim = setup["heads"], setup["hidden"] // setup["heads"]

        def forward(params, hidden, rel, mask):
            del rel, mask  # no relative terms, no padding
            q, k, v = ((hidden @ params[n]["kernel"] + params[n]["bias"]).reshape(hidden.shape[:2] + (heads, dim))
                       for n in ("query_proj", "key_proj", "value_proj"))
            out = jax.nn.dot_product_attention(q, k, v, implementation=implementation)
            return out.reshape(hidden.shape)
        return forward

    for n in setup["seq_lens"]:
        w = layer_weights(setup, n)
        batch = w["hidden_states"].shape[0]
        mask = jnp.ones((batch, n), jnp.int32)
        probe_ref = None
        try:
            with jax.default_matmul_precision("highest"):
                ref = np.asarray(jax.jit(ours("reference", "float32"))(params_of(w, jnp.float32),
                                                                       jnp.asarray(w["hidden_states"]),
                                                                       jnp.asarray(w["rel_embeddings"]), mask))
            probe_ref = _probe(ref)
        except Exception as e:  # noqa: BLE001
            ref = None
            rec.add(f"N{n}/reference_fp32", {"status": "error", "error": f"{type(e).__name__}: {e}"})
        for impl in impls:
            is_flash = impl.startswith("no_bias_flash")
            implementation = impl[impl.index("[") + 1:-1] if is_flash else None
            if implementation == "cudnn" and not on_gpu:
                for workload in ("forward", "train"):
                    rec.add(f"N{n}/{impl}/{workload}", {"status": "skipped",
                                                        "reason": "cuDNN flash attention needs a CUDA GPU"})
                continue
            fn = no_bias(implementation) if is_flash else ours(impl, "bfloat16")
            params = params_of(w, jnp.bfloat16)
            hidden = jnp.asarray(w["hidden_states"], jnp.bfloat16)
            rel = jnp.asarray(w["rel_embeddings"], jnp.bfloat16)
            cot = jnp.asarray(w["cotangent"], jnp.float32)
            flops = layer_flops(setup, batch, n, no_bias=is_flash)

            def forward_item(fn=fn, params=params, hidden=hidden, rel=rel, flops=flops, is_flash=is_flash):
                compiled = jax.jit(fn).lower(params, hidden, rel, mask).compile()
                item = _timed(lambda: compiled(params, hidden, rel, mask), jax.block_until_ready, setup["reps"],
                              setup["warmup"])
                out = np.asarray(compiled(params, hidden, rel, mask), np.float32)
                item.update(status="ok", batch=batch, seq_len=n, flops=flops["forward"],
                            xla_temp_bytes=_temp_bytes(compiled))
                _throughput(item, flops, "forward")
                if is_flash:
                    item["note"] = "no relative terms: c2c attention only (a lower bound, not the same function)"
                    item["no_bias"] = True
                elif ref is not None:
                    item["rel_err_vs_fp32_reference"] = rel_err(out, ref)
                    item["status"] = "ok" if item["rel_err_vs_fp32_reference"] <= TOLERANCE["bfloat16"] else "failed"
                item["probe"] = _probe(out)
                return item

            def train_item(fn=fn, params=params, hidden=hidden, rel=rel, cot=cot, flops=flops):
                def loss(p, x, r):
                    return jnp.sum(fn(p, x, r, mask).astype(jnp.float32) * cot)
                compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(params, hidden, rel).compile()
                item = _timed(lambda: compiled(params, hidden, rel), jax.block_until_ready, setup["reps"],
                              setup["warmup"])
                item.update(status="ok", batch=batch, seq_len=n, flops=flops["train"],
                            what="forward + backward w.r.t. the projections, the hidden states and the relative "
                                 "embeddings", xla_temp_bytes=_temp_bytes(compiled))
                _throughput(item, flops, "train")
                return item

            rec.run(f"N{n}/{impl}/forward", forward_item)
            rec.run(f"N{n}/{impl}/train", train_item)
        if probe_ref is not None:
            rec.data.setdefault("reference_probe", {})[f"N{n}"] = probe_ref


def _temp_bytes(compiled) -> int | None:
    try:
        return int(compiled.memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001
        return None


def _torch_modules(family: str, hf_cfg):
    """{variant: (forward module, train module)} of a torch family (the same module for both where it can)."""
    if family == "transformers":
        from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

        m = DisentangledSelfAttention(hf_cfg)
        return {"eager": (m, m)}
    if family == "flashdeberta":
        from flashdeberta.model import FlashDisentangledSelfAttention

        m = FlashDisentangledSelfAttention(hf_cfg)
        return {"flashdeberta": (m, m)}
    if family == "disentangled-flash":
        import disentangled_flash

        return {"disentangled-flash": (disentangled_flash.DisentangledFlashAttention(hf_cfg),
                                       disentangled_flash.TritonTrainingDisentangledSelfAttention(hf_cfg))}
    raise ValueError(f"unknown torch family {family!r}")


def _layer_torch(rec: Record, setup: dict, family: str) -> None:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf_cfg = _hf_config(setup)
    rec.data["torch_device"] = device

    def sync(x):
        if device == "cuda":
            torch.cuda.synchronize()
        return x

    def mask_for(kind, batch, n):
        """All ones: transformers' encoder hands its layers a bool [B, 1, N, N]; the libraries take [B, N]."""
        if kind == "transformers":
            return torch.ones((batch, 1, n, n), dtype=torch.bool, device=device)
        return torch.ones((batch, n), dtype=torch.int64, device=device)

    from transformers.models.deberta_v2.modeling_deberta_v2 import DisentangledSelfAttention

    for n in setup["seq_lens"]:
        w = layer_weights(setup, n)
        batch = w["hidden_states"].shape[0]
        state = {k: torch.from_numpy(v) for k, v in w.items() if k.endswith((".weight", ".bias"))}
        ref = None
        try:
            ref_module = DisentangledSelfAttention(hf_cfg).to(device).eval()
            ref_module.load_state_dict(state)
            tf32 = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False  # a float32 reference, not TF32
            try:
                with torch.no_grad():
                    ref = ref_module(torch.from_numpy(w["hidden_states"]).to(device),
                                     mask_for("transformers", batch, n),
                                     rel_embeddings=torch.from_numpy(w["rel_embeddings"]).to(device))[0]
            finally:
                torch.backends.cuda.matmul.allow_tf32 = tf32
            ref = ref.float().cpu().numpy().reshape(batch, n, -1)
            del ref_module
        except Exception as e:  # noqa: BLE001
            rec.add(f"N{n}/reference_fp32", {"status": "error", "error": f"{type(e).__name__}: {e}"})
        flops = layer_flops(setup, batch, n)
        for variant, (fwd_module, train_module) in _torch_modules(family, hf_cfg).items():
            def prepared(module):
                missing, unexpected = module.load_state_dict(state, strict=False)
                if missing or unexpected:
                    raise RuntimeError(f"weights did not load: missing {missing}, unexpected {unexpected}")
                return module.to(device=device, dtype=torch.bfloat16).eval()

            hidden = torch.from_numpy(w["hidden_states"]).to(device, torch.bfloat16)
            rel = torch.from_numpy(w["rel_embeddings"]).to(device, torch.bfloat16)
            cot = torch.from_numpy(w["cotangent"]).to(device, torch.bfloat16)

            def forward_item(module=fwd_module):
                module = prepared(module)
                mask = mask_for(family, batch, n)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()

                def call():
                    with torch.no_grad():
                        return module(hidden, mask, rel_embeddings=rel)[0]
                item = _timed(call, sync, setup["reps"], setup["warmup"])
                out = call().float().cpu().numpy().reshape(batch, n, -1)
                item.update(status="ok", batch=batch, seq_len=n, flops=flops["forward"],
                            module=f"{type(module).__module__}.{type(module).__name__}")
                if family == "disentangled-flash":
                    item["note"] = ("inference module: caches the fused QKV weight and the relative projections at "
                                    "its first call (excluded from the timing, as in its own benchmarks)")
                _throughput(item, flops, "forward")
                if device == "cuda":
                    item["torch_cuda_max_allocated"] = int(torch.cuda.max_memory_allocated())
                if ref is not None:
                    item["rel_err_vs_fp32_reference"] = rel_err(out, ref)
                    item["status"] = "ok" if item["rel_err_vs_fp32_reference"] <= TOLERANCE["bfloat16"] else "failed"
                item["probe"] = _probe(out)
                return item

            def train_item(module=train_module):
                module = prepared(module)
                mask = mask_for(family, batch, n)
                if device == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                x = hidden.clone().requires_grad_(True)
                r = rel.clone().requires_grad_(True)

                def call():
                    module.zero_grad(set_to_none=True)
                    x.grad = r.grad = None
                    out = module(x, mask, rel_embeddings=r)[0]
                    out.reshape(cot.shape).backward(cot)
                    return x.grad
                item = _timed(call, sync, setup["reps"], setup["warmup"])
                item.update(status="ok", batch=batch, seq_len=n, flops=flops["train"],
                            module=f"{type(module).__module__}.{type(module).__name__}",
                            what="forward + backward w.r.t. the projections, the hidden states and the relative "
                                 "embeddings")
                if device == "cuda":
                    item["torch_cuda_max_allocated"] = int(torch.cuda.max_memory_allocated())
                _throughput(item, flops, "train")
                return item

            rec.run(f"N{n}/{variant}/forward", forward_item)
            rec.run(f"N{n}/{variant}/train", train_item)
            if device == "cuda":
                torch.cuda.empty_cache()


def section_layer(args) -> int:
    setup = layer_setup(args.dry_run)
    family = args.family
    rec = Record(args.out, f"layer_{family.replace('-', '_')}", dry_run=args.dry_run, family=family, setup=setup,
                 dtype="bfloat16 weights and activations (fp32 accumulation), dropout off, no padding",
                 timing="median of `reps` synchronised calls after the first call and `warmup` more")
    if family in OPTIONAL_LIBRARIES:
        module, wanted = OPTIONAL_LIBRARIES[family]
        if importlib.util.find_spec(module) is None:
            rec.data["reason"] = (f"{family} is not importable (carry {family}=={wanted} as a wheel in .whl/, see "
                                  "experiments/bench/README.md)")
            return rec.finish("not_installed")
        try:
            rec.data["version"] = importlib.metadata.version(family)
        except importlib.metadata.PackageNotFoundError:
            rec.data["version"] = None
        import torch

        if not torch.cuda.is_available():
            rec.data["reason"] = f"{family} runs Triton kernels: it needs a CUDA GPU"
            return rec.finish("skipped")
    if family == "jax":
        import jax

        rec.data.update(backend=jax.default_backend(), device=str(jax.devices()[0]))
        impls = args.impls.split(",") if args.impls else (LAYER_IMPLS_DRY if args.dry_run else LAYER_IMPLS)
        _layer_jax(rec, setup, impls)
    else:
        _layer_torch(rec, setup, family)
    return rec.finish()


# --------------------------------------------------------------------------------------------------- summary
def _load(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _section_statuses(tsv: str) -> dict:
    """The shell's lines: name, exit code (or 'skipped'), seconds, time box, reason (for a skipped one)."""
    out = {}
    try:
        with open(tsv, encoding="utf-8") as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 4:
                    out[parts[0]] = {"rc": parts[1], "seconds": float(parts[2]), "timeout_s": float(parts[3])}
                    if len(parts) > 4 and parts[4]:
                        out[parts[0]]["reason"] = parts[4]
    except OSError:
        pass
    return out


def _tail(path: str, lines: int = 15) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return [line.rstrip("\n")[:300] for line in f.readlines()[-lines:]]
    except OSError:
        return []


def _bench_status(result: dict) -> str:
    """A bench result has no status of its own: error if a case or an implementation raised, failed if a numerical
    check missed, else ok."""
    states = []
    for case in result.get("cases", []):
        states.append(case.get("status", "ok"))
        states += [e.get("status") for e in case.get("implementations", {}).values()]
        states += ["ok" if c.get("passed") else "failed" for c in
                   case.get("numeric_check", {}).get("results", {}).values()]
    if not result.get("cases"):
        return "error"
    return "error" if "error" in states else "failed" if "failed" in states else "ok"


def _status(name: str, run: dict | None, result: dict | None) -> str:
    """A section's status from the shell's exit code and the section's own file."""
    if run is None:
        return "not_run"
    rc = run["rc"]
    if rc == "skipped":
        return "skipped"
    if rc in ("124", "137"):
        return "timeout"
    if result is None:
        return "error"
    own = _bench_status(result) if name in BENCH_SECTIONS else result.get("status")
    if rc != "0":
        # `python -m benchmarks` exits 1 when a numerical check failed; anything else is a crash.
        return own if own in ("not_installed", "failed") else "error"
    return "error" if own in (None, "running") else own


def _bench_headline(result: dict | None) -> dict:
    if not result:
        return {}
    out = {"device_peak": result.get("device_peak"), "matmul_peak_flops_per_s": result.get("matmul_peak", {})
           .get("flops_per_s"), "cases": {}}
    for case in result.get("cases", []):
        key = f"{case.get('model')}/{case.get('workload')}/B{case.get('batch')}/N{case.get('seq_len')}"
        rows = {}
        for name, e in case.get("implementations", {}).items():
            if e.get("status") != "ok" or "median_s" not in e:
                rows[name] = {"status": e.get("status"), "error": e.get("error")}
                continue
            ratio = case.get("ratios", {}).get(name, {}).get("transformers-eager", {})
            check = case.get("numeric_check", {}).get("results", {}).get(name, {})
            mfu = e.get("mfu")
            peak = (result.get("device_peak") or {}).get("flops_per_s")
            if mfu is None and peak and case.get("model_flops", {}).get("total"):
                mfu = case["model_flops"]["total"] / e["median_s"] / peak  # a partial file has no throughput yet
            rows[name] = {"median_ms": e["median_s"] * 1e3, "mfu": mfu,
                          "fraction_of_measured_peak": e.get("model_flops_fraction_of_peak"),
                          "speedup_vs_transformers_eager": ratio.get("speedup"),
                          "numeric_check_passed": check.get("passed")}
        out["cases"][key] = rows
    return out


def _layer_headline(results: dict) -> dict:
    """{N: {family/variant: {forward_ms, train_ms, rel_err, probe_rel_err_vs_ours_reference}}}."""
    out: dict = {}
    reference_probes = (results.get("layer_jax") or {}).get("reference_probe", {})
    for section, result in results.items():
        if not section.startswith("layer_") or not result:
            continue
        for key, item in result.get("items", {}).items():
            parts = key.split("/")
            if len(parts) != 3:
                continue
            n, variant, workload = parts
            row = out.setdefault(n, {}).setdefault(f"{result.get('family')}:{variant}", {})
            if item.get("status") not in ("ok", "failed"):
                row[workload] = item.get("status")
                continue
            row[f"{workload}_ms"] = item["median_s"] * 1e3
            if "tflops_per_s" in item:
                row[f"{workload}_tflops_per_s"] = item["tflops_per_s"]
            if "rel_err_vs_fp32_reference" in item:
                row["rel_err_vs_fp32_reference"] = item["rel_err_vs_fp32_reference"]
            if "probe" in item and n in reference_probes and not item.get("no_bias"):
                row["probe_rel_err_vs_ours_fp32_reference"] = rel_err(item["probe"], reference_probes[n])
    return out


def section_summary(args) -> int:
    raw = args.raw
    runs = _section_statuses(os.path.join(raw, "sections.tsv"))
    results = {name: _load(os.path.join(raw, f"{name}.json")) for name in SECTIONS}
    sections = {}
    for name in SECTIONS:
        result = results[name]
        entry = {"status": _status(name, runs.get(name), result), **(runs.get(name) or {})}
        if entry["status"] not in ("ok", "skipped", "not_installed"):
            entry["log_tail"] = _tail(os.path.join(raw, f"{name}.log"))
        if result is not None and result.get("reason"):
            entry["reason"] = result["reason"]
        entry["result"] = result
        sections[name] = entry
    pallas = results.get("pallas") or {}
    headline = {
        "pallas": {k: {"status": v.get("status"), "max_rel_err": v.get("max_rel_err"), "error": v.get("error")}
                   for k, v in pallas.get("items", {}).items()},
        "pallas_interpret": pallas.get("interpret"),
        "bench": {"cases": {f"{case} ({name})": rows for name in BENCH_SECTIONS
                            for case, rows in _bench_headline(results.get(name)).get("cases", {}).items()},
                  "device_peak": next((r["device_peak"] for r in (results.get(n) for n in BENCH_SECTIONS)
                                       if r and r.get("device_peak")), None)},
        "layer": _layer_headline(results),
    }
    summary = {"schema": SCHEMA, "dry_run": args.dry_run, "finished_utc": _now(), "budget_s": args.budget,
               "elapsed_s": args.elapsed, "status": {n: s["status"] for n, s in sections.items()},
               "headline": headline, "sections": sections}
    write_json(summary, args.out)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict) -> None:
    print("== gpu check summary" + (" (dry run)" if summary["dry_run"] else ""))
    env = (summary["sections"]["env"].get("result") or {}).get("items", {})
    versions = env.get("software", {}).get("versions", {})
    libraries = env.get("libraries", {})
    print(f"  devices {env.get('jax', {}).get('devices')}; "
          + ", ".join(f"{k} {versions.get(k)}" for k in ("python", "jax", "flax", "torch", "transformers", "triton"))
          + "; " + ", ".join(f"{k} {'importable' if (libraries.get(k) or {}).get('importable') else 'missing'}"
                             for k in OPTIONAL_LIBRARIES))
    for name, status in summary["status"].items():
        s = summary["sections"][name]
        print(f"  {name:26s} {status:14s} {s.get('seconds', '-')} s / {s.get('timeout_s', '-')} s")
    h = summary["headline"]
    checked = {k: v for k, v in h["pallas"].items() if v["status"] != "skipped"}
    bad = [k for k, v in checked.items() if v["status"] != "ok"]
    print(f"pallas: {len(checked) - len(bad)}/{len(checked)} ok" + (f"; not ok: {bad}" if bad else "")
          + (f" ({len(h['pallas']) - len(checked)} skipped)" if len(checked) < len(h["pallas"]) else ""))
    for k, v in checked.items():
        print(f"  {k:48s} {v['status']:7s} max rel err {v['max_rel_err']}" if v.get("max_rel_err") is not None
              else f"  {k:48s} {v['status']:7s} {(v.get('error') or '')[:120]}")
    for section in ("bench",):
        for case, rows in h[section].get("cases", {}).items():
            print(f"{section} {case}")
            for name, r in rows.items():
                if "median_ms" not in r:
                    print(f"  {name:24s} {r.get('status')}: {(r.get('error') or '')[:100]}")
                    continue
                mfu = f"MFU {r['mfu']:.1%}" if r.get("mfu") is not None else "MFU -"
                speed = r.get("speedup_vs_transformers_eager")
                print(f"  {name:24s} {r['median_ms']:9.2f} ms  {mfu:10s} "
                      + (f"x{speed:.2f} vs transformers-eager" if speed else ""))
    for n, rows in h["layer"].items():
        print(f"layer {n}")
        for name, r in rows.items():
            cells = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()]
            print(f"  {name:36s} " + " ".join(cells))


# ------------------------------------------------------------------------------------------------------- cli
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="section", required=True)
    for name in ("env", "pallas", "layer", "summary"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True, help="the JSON file to write")
        p.add_argument("--dry-run", action="store_true", help="tiny shapes (CPU, CI)")
        if name == "env":
            p.add_argument("--tiny-config", help="also write the dry run's bench model config.json here")
        if name == "layer":
            p.add_argument("--family", required=True, choices=LAYER_FAMILIES)
            p.add_argument("--impls", help="comma-separated, for --family jax (default: %s)" % ",".join(LAYER_IMPLS))
        if name == "summary":
            p.add_argument("--raw", required=True, help="the folder of section files and sections.tsv")
            p.add_argument("--budget", type=float)
            p.add_argument("--elapsed", type=float)
    args = parser.parse_args(argv)
    return {"env": section_env, "pallas": section_pallas, "layer": section_layer,
            "summary": section_summary}[args.section](args)


if __name__ == "__main__":
    sys.exit(main())
