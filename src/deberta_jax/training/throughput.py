"""FLOP counts from the compiled program and the machine's measured matmul peak, for MFU estimates."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def compiled_flops(compiled) -> float | None:
    """FLOPs of one call of a compiled function as XLA counts them (None where the backend gives no count)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # some backends do not implement cost analysis
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def measure_matmul_peak(dtype=jnp.float32, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul on the default device: the denominator of our MFU figures.

    Random operands: constant ones or zeros can run faster than real data on GPUs (less switching power), which
    would inflate the peak. On a GPU, `size` must be large (8192) for the product to outlast launch overheads.
    """
    a, b = jax.random.normal(jax.random.PRNGKey(0), (2, size, size), jnp.float32).astype(dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * size ** 3 / best
