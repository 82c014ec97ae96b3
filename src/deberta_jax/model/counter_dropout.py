"""Counter-based dropout masks: the keep bit of score (b, h, i, j) is a pure hash of a seed and its coordinates.

Fused attention never holds the [B, H, Q, K] probabilities, so its dropout mask cannot be drawn once and stored:
each tile must regenerate exactly its own bits, in the forward and again in the backward. A stateless integer
hash does that with nothing but uint32 multiply/xor/shift, which lowers the same in XLA, in Pallas kernels and
in a dense test that materialises the whole mask.
"""

from __future__ import annotations

import jax.numpy as jnp

_U32 = jnp.uint32


def _mix(x: jnp.ndarray) -> jnp.ndarray:
    """A 32-bit avalanche hash (the 'lowbias32' constants): every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = x * _U32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * _U32(0x846CA68B)
    return x ^ (x >> 16)


def keep_threshold(rate: float) -> int:
    """Hashes at or above this uint32 value are kept: P(keep) = 1 - rate up to 2**-32."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1); got {rate}")
    return min(int(round(rate * 2.0 ** 32)), 2 ** 32 - 1)


def keep_mask(seed, batch, head, query, key, num_heads: int, key_size: int, rate: float) -> jnp.ndarray:
    """Whether score (batch, head, query, key) survives dropout; the index arguments broadcast together.

    Args:
      seed: uint32 scalar (one per step and layer).
      batch, head, query, key: integer arrays of global coordinates (any broadcastable shapes).
      num_heads, key_size: H and K, to number the (batch, head) rows and the (query, key) pairs.
      rate: dropout probability.
    Returns:
      bool array of the broadcast shape.
    """
    row = _mix(jnp.asarray(seed, _U32) ^ _mix(jnp.asarray(batch, _U32) * _U32(num_heads) + jnp.asarray(head, _U32)))
    pair = jnp.asarray(query, _U32) * _U32(key_size) + jnp.asarray(key, _U32)
    return _mix(row ^ _mix(pair + _U32(0x9E3779B9))) >= _U32(keep_threshold(rate))
