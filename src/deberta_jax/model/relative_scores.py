"""The gather-free form of the relative position scores: per-offset tables and the diagonal skew (with its
transpose) that moves per-offset scores into per-pair place. Pure functions on arrays, no parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def expand_to_offsets(pos_table: jnp.ndarray, offset_rows: np.ndarray) -> jnp.ndarray:
    """Per-offset projected relative table: out[o] = pos_table[offset_rows[o]], without a gather.

    Rows that run consecutively (every offset in its own bucket, e.g. N <= position_buckets / 2) are a static slice,
    reversed for a descending run; otherwise the expansion is a one-hot matmul.

    Args:
      pos_table: [R, H, D]; offset_rows: int [O] (static) with values in [0, R).
    Returns:
      [O, H, D] in pos_table's dtype.
    """
    rows = np.asarray(offset_rows)
    steps = np.diff(rows)
    if rows.size and np.all(steps == 1):
        return pos_table[rows[0]: rows[-1] + 1]
    if rows.size and np.all(steps == -1):
        return jnp.flip(pos_table[rows[-1]: rows[0] + 1], axis=0)
    one_hot = jax.nn.one_hot(rows, pos_table.shape[0], dtype=pos_table.dtype)
    return jnp.einsum("or,rhd->ohd", one_hot, pos_table)


def diagonal_skew(scores: jnp.ndarray, width: int) -> jnp.ndarray:
    """Shifts row m of per-offset scores left by (rows - 1 - m): out[..., m, t] = scores[..., m, t - m + rows - 1].

    This is the relative "skew" of Transformer-XL done with pad, reshape and slice only, so it compiles to no
    gather (the TPU-friendly form). Flattened, element (m, t - m + rows - 1) sits at m * (L - 1) + rows - 1 + t
    for row length L, so dropping the first rows - 1 elements and re-reading rows of length L - 1 lines the
    diagonals up as columns.

    Args:
      scores: [..., M, M + width - 1], column c holding the score at offset c - (M - 1) from the row's diagonal.
    Returns:
      [..., M, width].
    """
    rows, length = scores.shape[-2:]
    if length != rows + width - 1:
        raise ValueError(f"diagonal_skew needs {rows + width - 1} columns for {rows} rows and width {width}; "
                         f"got scores of shape {scores.shape}")
    if rows == 1:
        return scores
    lead = scores.shape[:-2]
    flat = scores.reshape(lead + (rows * length,))[..., rows - 1: rows - 1 + rows * (length - 1)]
    return flat.reshape(lead + (rows, length - 1))[..., :width]


def diagonal_skew_transpose(grad: jnp.ndarray) -> jnp.ndarray:
    """Transpose of `diagonal_skew` (pad and reshape only): [..., M, width] -> [..., M, M + width - 1].

    Entry (m, t) goes back to column t - m + M - 1; the columns the skew never read get zeros. Summed over m,
    a column is the total gradient of one offset's score.
    """
    rows, width = grad.shape[-2:]
    if rows == 1:
        return grad
    length = rows + width - 1
    lead = grad.shape[:-2]
    keep = [(0, 0)] * len(lead)
    flat = jnp.pad(grad, keep + [(0, 0), (0, length - 1 - width)]).reshape(lead + (rows * (length - 1),))
    return jnp.pad(flat, keep + [(rows - 1, 1)]).reshape(lead + (rows, length))
