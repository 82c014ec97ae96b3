"""Where XLA keeps the attention's loop buffers on v5e and on v5p: one small RTD step compiled for both chips.

Chunked attention moved ~3.8 x more HBM bytes per row on v5p-8 than on v5e-8 in the full-size compiles (README).
This compiles the same small step (2 layers of 256, 4 heads, N = 512, bf16, data parallel over 4 chips: v5e-4 and
v5p-8 both have 4) per attention_impl for both chips, and reports our HBM-traffic estimate per row beside the bytes
its instructions write (all, and the loop bodies' alone), split by where memory-space assignment placed them
(on-core or HBM). Compiler estimates:

    JAX_PLATFORMS=cpu python experiments/tpu_compile/memory_spaces.py [--rows 8] [--impls chunked,skew,pallas]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import time

SMALL = ["data.seq_len=512", "data.tokenizer_vocab_size=255", "model.dtype=bfloat16",
         "model.overrides.num_hidden_layers=2", "model.overrides.hidden_size=256",
         "model.overrides.intermediate_size=1024", "model.overrides.num_attention_heads=4"]
SLICES = ("v5e-4", "v5p-8")


def compile_small(topology: str, impl: str, rows_per_chip: int) -> dict:
    """Our HBM-traffic estimate of the small step for `topology`'s chips, with the compile time."""
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.tpu.compile import pretrain_step
    from deberta_jax.tpu.hbm_traffic import hbm_traffic
    from deberta_jax.tpu.topologies import get_slice, slice_devices

    spec = get_slice(topology)
    cfg = load_pretrain_config("tiny_cpu", [*SMALL, f"mesh.shape=[{spec.chips},1,1]",
                                            f"data.batch_size={spec.chips * rows_per_chip}",
                                            f"model.overrides.attention_impl={impl}"])
    started = time.perf_counter()
    step = pretrain_step(cfg, slice_devices(spec))
    text = step.step.lower(*step.args).compile().as_text()
    traffic = hbm_traffic(text, largest=4)
    return {"topology": topology, "impl": impl, "rows_per_chip": rows_per_chip,
            "hbm_bytes_per_row": traffic["bytes"] / rows_per_chip, "results": traffic["results"],
            "loop_results": traffic["loop_results"],
            "loops": traffic["loops"]["count"], "largest": traffic["by_source"],
            "compile_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=8, help="rows per chip")
    parser.add_argument("--impls", default="chunked,skew,pallas")
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "memory_spaces", "small_v5e_v5p.json"))
    args = parser.parse_args()
    results = []
    for impl in args.impls.split(","):
        for topology in SLICES:
            result = compile_small(topology, impl, args.rows)
            written, looped = result["results"], result["loop_results"]
            print(f"{impl:8s} {topology}: {result['hbm_bytes_per_row']:.3e} HBM bytes per row; results written "
                  f"{written['on_core']:.3e} bytes on-core, {written['hbm']:.3e} in HBM; by loop bodies "
                  f"{looped['on_core']:.3e} and {looped['hbm']:.3e} ({result['loops']} loops, compile "
                  f"{result['compile_s']} s)", flush=True)
            results.append(result)
    import jax

    from deberta_jax.training.records import write_json

    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    write_json(args.output, {"note": "compiler estimates, not measurements: no TPU ran this", "settings": SMALL,
                             "versions": {"jax": jax.__version__, "libtpu": importlib.metadata.version("libtpu")},
                             "results": results})


if __name__ == "__main__":
    main()
