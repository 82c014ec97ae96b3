"""Flash-style ("chunked") fused disentangled attention in pure JAX, with a hand-written backward.

The dense path builds fp32 [B, H, Q, K] scores, plus [B, H, Q, Q + K - 1] per-offset position scores. Here the
scores only ever exist one [bq, bk] tile at a time. For a query tile [i0, i0 + bq) and a key tile [j0, j0 + bk)
the offsets i - j span W = bq + bk - 1 consecutive rows of each per-offset table, so a tile's position terms
are a dense matmul against that window (one `dynamic_slice`) followed by the gather-free `diagonal_skew`.
Softmax is online (running max and sum in fp32); the backward recomputes every tile from the saved per-row
statistics, FlashAttention-2 style.

Loops: a sequential loop over query tiles around a `lax.scan` over key tiles, forward and backward. Each step
holds O(B·H·bq·W) values and the carries O(B·H·N·D), so memory is linear in the sequence length. On CPU this
measured no slower than batching every query tile into each key step, and its live tiles are nq times smaller.

Shapes: B batch, Q query length, K key length, H heads, D head_dim; bq / bk the block sizes, nq / nk the tile
counts, Qp = nq·bq and Kp = nk·bk the padded lengths, W = bq + bk - 1, Lp = Qp + Kp - 1.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from deberta_jax.model.attention_tiles import (MASKED_SCORE, TilePlan, dropped, pad_axis, pad_table, table_pads,
                                              window_starts)
from deberta_jax.model.counter_dropout import keep_mask
from deberta_jax.model.relative_scores import diagonal_skew, diagonal_skew_transpose

_F32 = jnp.float32


def chunked_attention(query, key, value, c2p_table, p2c_table, query_mask, key_mask, *, scale: float,
                      block_q: int, block_k: int, dropout_rate: float = 0.0, dropout_seed=None) -> jnp.ndarray:
    """Disentangled attention (c2c + c2p + p2c), softmax, counter-based dropout and the value product, fused.

    Equal to the dense path: s[b, h, i, j] = (Q_i·K_j + Q_i·c2p_table[Q - 1 - (i - j)]
    + K_j·p2c_table[(i - j) + K - 1]) / scale in fp32, pairs not allowed by both masks at the fp32 minimum,
    softmax over j, dropout keep bits from `counter_dropout.keep_mask` at global coordinates, then probs @ V.
    No [B, H, Q, K] array is materialised, forward or backward. Differentiable in query, key, value and the
    tables.

    Args:
      query: [B, Q, H, D]; key, value: [B, K, H, D] (fp32 or bf16).
      c2p_table: [Q + K - 1, H, D] relative keys in DESCENDING offset order (row c: i - j = Q - 1 - c), or None.
      p2c_table: [Q + K - 1, H, D] relative queries in ASCENDING offset order (row c: i - j = c - (K - 1)), or
        None.
      query_mask: bool [B, Q]; key_mask: bool [B, K].
      scale: the score divisor.
      block_q, block_k: tile sizes, clamped to Q and K; the lengths need not be multiples of them.
      dropout_rate: probability dropout; dropout_seed: uint32 scalar, required when the rate is > 0.
    Returns:
      context [B, Q, H, D] in value's dtype.
    """
    q_len, k_len = query.shape[1], key.shape[1]
    plan = TilePlan.checked(query, key, value, c2p_table, p2c_table, query_mask, key_mask, scale=scale,
                            block_q=min(block_q, q_len), block_k=min(block_k, k_len), dropout_rate=dropout_rate,
                            dropout_seed=dropout_seed)
    seed = jnp.asarray(dropout_seed, jnp.uint32) if dropout_rate > 0.0 else None
    return _fused(plan, query, key, value, c2p_table, p2c_table, jnp.asarray(query_mask, bool),
                  jnp.asarray(key_mask, bool), seed)


# ----------------------------------------------------------------------------------------------- layouts

def _to_tiles(x: jnp.ndarray, block: int, count: int) -> jnp.ndarray:
    """[B, L, H, D] -> zero-padded [count, H, B, block, D], tile-major for the loops.

    Head-major inside a tile: every tile matmul then batches over heads with the output in the layout XLA's
    batched matmul writes, including the products against the (batch-free) relative tables.
    """
    batch, length, heads, dim = x.shape
    x = pad_axis(x, 1, 0, count * block - length)
    return x.reshape(batch, count, block, heads, dim).transpose(1, 3, 0, 2, 4)


def _from_tiles(x: jnp.ndarray, length: int) -> jnp.ndarray:
    """[count, H, B, block, D] -> [B, length, H, D] (padding rows dropped)."""
    count, heads, batch, block, dim = x.shape
    return x.transpose(2, 0, 3, 1, 4).reshape(batch, count * block, heads, dim)[:, :length]


def _mask_tiles(mask: jnp.ndarray, block: int, count: int) -> jnp.ndarray:
    """bool [B, L] -> [count, B, block], padding False."""
    mask = pad_axis(mask, 1, 0, count * block - mask.shape[1], False)
    return mask.reshape(mask.shape[0], count, block).transpose(1, 0, 2)


def _add_rows(buffer: jnp.ndarray, rows: jnp.ndarray, start) -> jnp.ndarray:
    """buffer[start : start + len(rows)] += rows, as a dynamic slice and update (no scatter)."""
    current = lax.dynamic_slice_in_dim(buffer, start, rows.shape[0])
    return lax.dynamic_update_slice_in_dim(buffer, current + rows, start, axis=0)


# --------------------------------------------------------------------------------------------- one tile

class _Operands(NamedTuple):
    """The padded, tiled inputs that every tile reads from."""
    query: jnp.ndarray          # [nq, H, B, bq, D]
    key: jnp.ndarray            # [nk, H, B, bk, D]
    value: jnp.ndarray          # [nk, H, B, bk, D]
    query_ok: jnp.ndarray       # bool [nq, B, bq]
    key_ok: jnp.ndarray         # bool [nk, B, bk]
    c2p: jnp.ndarray | None     # [Lp, H, D], descending offsets
    p2c: jnp.ndarray | None     # [Lp, H, D], ascending offsets
    seed: jnp.ndarray | None    # uint32 scalar


class _Tile(NamedTuple):
    """Everything one (query tile, key tile) pair needs."""
    query: jnp.ndarray          # [H, B, bq, D]
    key: jnp.ndarray            # [H, B, bk, D]
    value: jnp.ndarray          # [H, B, bk, D]
    pair_ok: jnp.ndarray        # bool [1, B, bq, bk]
    fill: jnp.ndarray           # fp32 [bk]: the score of a disallowed pair (MASKED_SCORE, or -inf for padding keys)
    c2p: jnp.ndarray | None     # [W, H, D]
    p2c: jnp.ndarray | None     # [W, H, D]
    keep: jnp.ndarray | None    # bool [H, B, bq, bk]


def _operands(plan: TilePlan, query, key, value, c2p_table, p2c_table, query_mask, key_mask, seed) -> _Operands:
    """Pads and tiles the public arguments once, outside the loops."""
    rows = plan.padded_offsets
    return _Operands(_to_tiles(query, plan.block_q, plan.q_tiles), _to_tiles(key, plan.block_k, plan.k_tiles),
                     _to_tiles(value, plan.block_k, plan.k_tiles), _mask_tiles(query_mask, plan.block_q, plan.q_tiles),
                     _mask_tiles(key_mask, plan.block_k, plan.k_tiles), pad_table(c2p_table, plan, True, rows),
                     pad_table(p2c_table, plan, False, rows), seed)


def _tile(plan: TilePlan, ops: _Operands, q_tile, k_tile) -> _Tile:
    """Slices out the (q_tile, k_tile) pair (both int scalars) and regenerates its dropout bits."""
    take = lambda x, i: lax.dynamic_index_in_dim(x, i, keepdims=False)
    query, query_ok = take(ops.query, q_tile), take(ops.query_ok, q_tile)
    key, value, key_ok = take(ops.key, k_tile), take(ops.value, k_tile), take(ops.key_ok, k_tile)
    i0, j0 = q_tile * plan.block_q, k_tile * plan.block_k
    c2p_start, p2c_start = window_starts(plan, i0, j0)
    window = lambda t, start: None if t is None else lax.dynamic_slice_in_dim(t, start, plan.window)
    query_index = i0 + jnp.arange(plan.block_q)
    key_index = j0 + jnp.arange(plan.block_k)
    keep = None
    if plan.rate > 0.0:
        heads, batch = query.shape[:2]
        keep = keep_mask(ops.seed, jnp.arange(batch)[:, None, None], jnp.arange(heads)[:, None, None, None],
                         query_index[:, None], key_index, heads, plan.key_len, plan.rate)
    return _Tile(query, key, value, (query_ok[:, :, None] & key_ok[:, None, :])[None],
                 jnp.where(key_index < plan.key_len, MASKED_SCORE, -jnp.inf).astype(_F32),
                 window(ops.c2p, c2p_start), window(ops.p2c, p2c_start), keep)


def _scores(plan: TilePlan, tile: _Tile) -> jnp.ndarray:
    """Scaled, masked scores of one tile: fp32 [H, B, bq, bk]."""
    raw = jnp.einsum("hbqd,hbkd->hbqk", tile.query, tile.key, preferred_element_type=_F32)
    if tile.c2p is not None:
        by_offset = jnp.einsum("hbqd,whd->hbqw", tile.query, tile.c2p, preferred_element_type=_F32)
        raw = raw + diagonal_skew(by_offset, plan.block_k)
    if tile.p2c is not None:
        by_offset = jnp.einsum("hbkd,whd->hbkw", tile.key, tile.p2c, preferred_element_type=_F32)
        raw = raw + jnp.swapaxes(diagonal_skew(by_offset, plan.block_q), -1, -2)
    return jnp.where(tile.pair_ok, raw / plan.scale, tile.fill)


def _score_grads(tile: _Tile, grad: jnp.ndarray):
    """Backpropagates d(raw scores) of one tile into its query, key and the two table windows.

    Args:
      grad: fp32 [H, B, bq, bk], already masked and divided by the scale.
    Returns:
      fp32 (d query [H, B, bq, D], d key [H, B, bk, D], d c2p window [W, H, D] or None, d p2c window or None).
    """
    # As in FlashAttention-2, dS enters the matmuls in the inputs' dtype, accumulating in fp32.
    dtype = tile.query.dtype
    d_query = jnp.einsum("hbqk,hbkd->hbqd", grad.astype(dtype), tile.key, preferred_element_type=_F32)
    d_key = jnp.einsum("hbqk,hbqd->hbkd", grad.astype(dtype), tile.query, preferred_element_type=_F32)
    d_c2p = d_p2c = None
    if tile.c2p is not None:
        by_offset = diagonal_skew_transpose(grad).astype(dtype)
        d_query = d_query + jnp.einsum("hbqw,whd->hbqd", by_offset, tile.c2p, preferred_element_type=_F32)
        d_c2p = jnp.einsum("hbqw,hbqd->whd", by_offset, tile.query, preferred_element_type=_F32)
    if tile.p2c is not None:
        by_offset = diagonal_skew_transpose(jnp.swapaxes(grad, -1, -2)).astype(dtype)
        d_key = d_key + jnp.einsum("hbkw,whd->hbkd", by_offset, tile.p2c, preferred_element_type=_F32)
        d_p2c = jnp.einsum("hbkw,hbkd->whd", by_offset, tile.key, preferred_element_type=_F32)
    return d_query, d_key, d_c2p, d_p2c


# ------------------------------------------------------------------------------------ forward / backward

def _forward(plan: TilePlan, ops: _Operands):
    """Online softmax over key tiles, one query tile at a time.

    Returns:
      fp32 context tiles [nq, H, B, bq, D] and the per-row max and sum of exp(score - max), [nq, H, B, bq].
    """
    def query_tile(q_tile):
        def step(carry, k_tile):
            row_max, row_sum, acc = carry
            tile = _tile(plan, ops, q_tile, k_tile)
            scores = _scores(plan, tile)
            # Key tile 0 holds key 0, whose score is finite, so the -inf start rescales to exactly zero.
            new_max = jnp.maximum(row_max, scores.max(axis=-1))
            rescale = jnp.exp(row_max - new_max)
            probs = jnp.exp(scores - new_max[..., None])
            weights = dropped(probs, tile.keep, plan.rate).astype(tile.value.dtype)
            update = jnp.einsum("hbqk,hbkd->hbqd", weights, tile.value, preferred_element_type=_F32)
            return (new_max, rescale * row_sum + probs.sum(axis=-1), rescale[..., None] * acc + update), None

        stats = ops.query.shape[1:4]
        init = (jnp.full(stats, -jnp.inf, _F32), jnp.zeros(stats, _F32), jnp.zeros(ops.query.shape[1:], _F32))
        (row_max, row_sum, acc), _ = lax.scan(step, init, jnp.arange(plan.k_tiles))
        return acc / row_sum[..., None], row_max, row_sum

    return lax.map(query_tile, jnp.arange(plan.q_tiles))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(plan, query, key, value, c2p_table, p2c_table, query_mask, key_mask, seed):
    return _fused_fwd(plan, query, key, value, c2p_table, p2c_table, query_mask, key_mask, seed)[0]


def _fused_fwd(plan, query, key, value, c2p_table, p2c_table, query_mask, key_mask, seed):
    ops = _operands(plan, query, key, value, c2p_table, p2c_table, query_mask, key_mask, seed)
    context, row_max, row_sum = _forward(plan, ops)
    context = _from_tiles(context, plan.query_len).astype(value.dtype)
    # Max and sum stay apart instead of one logsumexp: in a fully masked row the max is the fp32 minimum, which
    # would swallow log(sum) and turn the uniform 1/K probabilities into ones.
    return context, (query, key, value, c2p_table, p2c_table, query_mask, key_mask, seed, context, row_max,
                     row_sum)


def _fused_bwd(plan, residuals, d_context):
    *inputs, context, row_max, row_sum = residuals
    query, key, value, c2p_table, p2c_table = inputs[:5]
    ops = _operands(plan, *inputs)
    d_out = _to_tiles(d_context, plan.block_q, plan.q_tiles)
    # Δ_i = Σ_j P_ij dP_ij = dO_i · O_i, dropout included, because O is built from the dropped probabilities.
    delta = jnp.einsum("nhbqd,nhbqd->nhbq", d_out, _to_tiles(context, plan.block_q, plan.q_tiles),
                       preferred_element_type=_F32)
    inv_sum = 1.0 / row_sum

    def query_tile(carry, xs):
        d_key, d_value, d_c2p, d_p2c = carry
        q_tile, d_out_q, delta_q, max_q, inv_sum_q = xs

        def step(carry, k_tile):
            d_query, d_c2p, d_p2c = carry
            tile = _tile(plan, ops, q_tile, k_tile)
            probs = jnp.exp(_scores(plan, tile) - max_q[..., None]) * inv_sum_q[..., None]
            weights = dropped(probs, tile.keep, plan.rate).astype(d_out_q.dtype)
            d_value_k = jnp.einsum("hbqk,hbqd->hbkd", weights, d_out_q, preferred_element_type=_F32)
            d_probs = dropped(jnp.einsum("hbqd,hbkd->hbqk", d_out_q, tile.value, preferred_element_type=_F32),
                              tile.keep, plan.rate)
            # Disallowed pairs sit behind a `where` in the forward, so their raw scores get no gradient.
            d_raw = jnp.where(tile.pair_ok, probs * (d_probs - delta_q[..., None]), 0.0) / plan.scale
            d_query_k, d_key_k, d_c2p_w, d_p2c_w = _score_grads(tile, d_raw)
            c2p_start, p2c_start = window_starts(plan, q_tile * plan.block_q, k_tile * plan.block_k)
            if d_c2p_w is not None:
                d_c2p = _add_rows(d_c2p, d_c2p_w, c2p_start)
            if d_p2c_w is not None:
                d_p2c = _add_rows(d_p2c, d_p2c_w, p2c_start)
            return (d_query + d_query_k, d_c2p, d_p2c), (d_key_k, d_value_k)

        init = (jnp.zeros(d_out_q.shape, _F32), d_c2p, d_p2c)
        (d_query, d_c2p, d_p2c), (d_key_q, d_value_q) = lax.scan(step, init, jnp.arange(plan.k_tiles))
        return (d_key + d_key_q, d_value + d_value_q, d_c2p, d_p2c), d_query

    zeros = lambda x: None if x is None else jnp.zeros(x.shape, _F32)
    init = (zeros(ops.key), zeros(ops.value), zeros(ops.c2p), zeros(ops.p2c))
    (d_key, d_value, d_c2p, d_p2c), d_query = lax.scan(
        query_tile, init, (jnp.arange(plan.q_tiles), d_out, delta, row_max, inv_sum))

    def table_grad(grad, table, descending):
        if table is None:
            return None
        before = table_pads(plan, descending, plan.padded_offsets)[0]
        return grad[before: before + table.shape[0]].astype(table.dtype)

    # Masks and seed are not differentiable: None stands for their (float0) zero cotangents.
    return (_from_tiles(d_query, plan.query_len).astype(query.dtype),
            _from_tiles(d_key, plan.key_len).astype(key.dtype),
            _from_tiles(d_value, plan.key_len).astype(value.dtype),
            table_grad(d_c2p, c2p_table, True), table_grad(d_p2c, p2c_table, False), None, None, None)


_fused.defvjp(_fused_fwd, _fused_bwd)
