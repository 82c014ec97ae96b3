"""Relative positions and their embedding-row indices, as pure functions of static sequence lengths.

Everything here runs at trace time with NumPy: the outputs are constants folded into the compiled program, so
static shapes are preserved and no index arithmetic runs on the device.
"""

import numpy as np


def make_log_bucket_position(relative_pos: np.ndarray, bucket_size: int, max_position: int) -> np.ndarray:
    """Maps relative positions to log-spaced buckets (DeBERTa v2/v3).

    Offsets with |r| < bucket_size // 2 stay exact; larger ones are compressed logarithmically so that
    |r| = max_position - 1 lands on bucket_size - 1. The arithmetic is float32, as in the reference, so bucket
    edges round the same way.

    Args:
      relative_pos: integer array of offsets, any shape.
    Returns:
      int64 array of the same shape, values in [-(bucket_size - 1), bucket_size - 1] for |r| < max_position.
    """
    rel = np.asarray(relative_pos, dtype=np.int64)
    sign = np.sign(rel)
    mid = bucket_size // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel)).astype(np.float32)
    scale = np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(np.log(abs_pos / np.float32(mid)) / scale * np.float32(mid - 1)) + np.float32(mid)
    bucket = np.where(abs_pos <= mid, rel.astype(np.float32), log_pos * sign)
    return bucket.astype(np.int64)


def build_relative_position(query_size: int, key_size: int, bucket_size: int = -1,
                            max_position: int = -1) -> np.ndarray:
    """Relative position `rel[i, j] = i - j` (query minus key), log-bucketed when both sizes are > 0.

    Returns:
      int64 array [query_size, key_size].
    """
    rel = np.arange(query_size, dtype=np.int64)[:, None] - np.arange(key_size, dtype=np.int64)[None, :]
    if bucket_size > 0 and max_position > 0:
        rel = make_log_bucket_position(rel, bucket_size, max_position)
    return rel


def relative_embedding_index(query_size: int, key_size: int, span: int, bucket_size: int = -1,
                             max_position: int = -1) -> np.ndarray:
    """Row of the relative-embedding table that pair (i, j) reads, for both c2p and p2c.

    `idx[i, j] = clamp(bucket(i - j) + span, 0, 2 * span - 1)`. c2p reads K_r[idx[i, j]] for query i; p2c reads
    Q_r[idx[i, j]] for key j (the reference gathers with the key's own offset, negated, which is the same row
    because buckets are odd in r). For v1 the reference slices the table to a span of min(max(Lq, Lk), k);
    indexing the full table with span k gives the same rows.

    Returns:
      int32 array [query_size, key_size] with values in [0, 2 * span).
    """
    rel = build_relative_position(query_size, key_size, bucket_size, max_position)
    return np.clip(rel + span, 0, 2 * span - 1).astype(np.int32)


def relative_offset_rows(query_size: int, key_size: int, span: int, bucket_size: int = -1,
                         max_position: int = -1) -> np.ndarray:
    """Relative-table row for each offset d = i - j, in ascending order d = -(key_size - 1) ... query_size - 1.

    Every pair index depends on the offset alone: `relative_embedding_index(...)[i, j] == rows[i - j + key_size - 1]`.
    Expanding a projected table by these rows once (`relative_scores.expand_to_offsets`, no batch axis) turns c2p/p2c
    into dense per-offset scores that `diagonal_skew` shifts into place without a gather.

    Returns:
      int32 array [query_size + key_size - 1] with values in [0, 2 * span).
    """
    offsets = np.arange(-(key_size - 1), query_size, dtype=np.int64)
    if bucket_size > 0 and max_position > 0:
        offsets = make_log_bucket_position(offsets, bucket_size, max_position)
    return np.clip(offsets + span, 0, 2 * span - 1).astype(np.int32)
