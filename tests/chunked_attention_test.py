"""Chunked (flash-style) disentangled attention against the dense score functions, values and gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deberta_jax.model.attention import content_to_content, content_to_position, masked_softmax, position_to_content
from deberta_jax.model.attention_tiles import TilePlan, table_pads, window_starts
from deberta_jax.model.chunked_attention import chunked_attention
from deberta_jax.model.counter_dropout import keep_mask
from deberta_jax.model.relative_positions import relative_embedding_index, relative_offset_rows
from deberta_jax.model.relative_scores import diagonal_skew, diagonal_skew_transpose, expand_to_offsets

ATOL = 1e-5
LOG_BUCKETS = dict(span=8, buckets=8, max_pos=32)
V1_SPAN = dict(span=16, buckets=-1, max_pos=-1)


def make_inputs(batch, q_len, k_len, heads, dim, span, seed=0, dtype=jnp.float32):
    """Random q, k, v, pos_key, pos_query, plus masks from a padded token mask with one fully masked query."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32).astype(dtype)
    arrays = (normal(batch, q_len, heads, dim), normal(batch, k_len, heads, dim), normal(batch, k_len, heads, dim),
              normal(2 * span, heads, dim), normal(2 * span, heads, dim))
    tokens = np.ones((batch, max(q_len, k_len)), bool)
    tokens[-1, (2 * max(q_len, k_len)) // 3:] = False   # the last sequence is padded
    query_mask, key_mask = tokens[:, :q_len].copy(), tokens[:, :k_len]
    query_mask[0, q_len // 2] = False                      # ... and one query row attends to nothing
    return arrays, jnp.asarray(query_mask), jnp.asarray(key_mask)


def dense_attention(query, key, value, pos_key, pos_query, query_mask, key_mask, *, scale, rel, rate=0.0, seed=None):
    """The dense path: gathered c2p / p2c, `masked_softmax`, the counter dropout mask materialised whole."""
    q_len, k_len = query.shape[1], key.shape[1]
    index = relative_embedding_index(q_len, k_len, rel["span"], rel["buckets"], rel["max_pos"])
    scores = content_to_content(query, key)
    if pos_key is not None:
        scores = scores + content_to_position(query, pos_key, index)
    if pos_query is not None:
        scores = scores + position_to_content(key, pos_query, index)
    probs = masked_softmax(scores / scale, (query_mask[:, :, None] & key_mask[:, None, :])[:, None])
    if rate > 0.0:
        batch, heads = probs.shape[:2]
        keep = keep_mask(seed, jnp.arange(batch)[:, None, None, None], jnp.arange(heads)[:, None, None],
                         jnp.arange(q_len)[:, None], jnp.arange(k_len), heads, k_len, rate)
        probs = probs * keep / (1.0 - rate)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)


def fused_attention(query, key, value, pos_key, pos_query, query_mask, key_mask, *, scale, rel, block_q, block_k,
                    rate=0.0, seed=None):
    """chunked_attention fed the per-offset tables exactly as a caller builds them."""
    rows = relative_offset_rows(query.shape[1], key.shape[1], rel["span"], rel["buckets"], rel["max_pos"])
    c2p = None if pos_key is None else expand_to_offsets(pos_key, rows[::-1])
    p2c = None if pos_query is None else expand_to_offsets(pos_query, rows)
    return chunked_attention(query, key, value, c2p, p2c, query_mask, key_mask, scale=scale, block_q=block_q,
                             block_k=block_k, dropout_rate=rate, dropout_seed=seed)


def output_and_grads(fn, arrays, cotangent):
    """fn's output and its VJP against `cotangent` w.r.t. every array (None tables skipped), jitted."""
    def run(arrays, cotangent):
        out, vjp = jax.vjp(fn, *arrays)
        return out, vjp(cotangent)
    return jax.jit(run)(arrays, cotangent)


def assert_close(mine, theirs, atol=ATOL):
    names = ("output", "d query", "d key", "d value", "d pos_key", "d pos_query")
    flat = lambda x: [x[0], *x[1]]
    for name, a, b in zip(names, flat(mine), flat(theirs)):
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=0, atol=atol,
                                       err_msg=name)


CASES = [  # terms, relative positions, (Q, K), (block_q, block_k)
    (("c2p", "p2c"), LOG_BUCKETS, (37, 37), (16, 16)),    # lengths not divisible by the blocks
    (("c2p", "p2c"), V1_SPAN, (64, 64), (16, 32)),        # divisible, bq != bk, v1-style span
    (("c2p",), LOG_BUCKETS, (37, 37), (64, 8)),           # block_q > Q clamps
    (("p2c",), V1_SPAN, (64, 64), (32, 16)),
    ((), LOG_BUCKETS, (37, 37), (16, 16)),
    (("c2p", "p2c"), LOG_BUCKETS, (24, 37), (16, 64)),    # Q != K: Q padded, block_k > K clamps
]


@pytest.mark.slow
@pytest.mark.parametrize("terms,rel,lengths,blocks", CASES)
def test_matches_dense_path(terms, rel, lengths, blocks):
    (query, key, value, pos_key, pos_query), query_mask, key_mask = make_inputs(2, *lengths, 2, 8, rel["span"])
    arrays = (query, key, value, pos_key if "c2p" in terms else None, pos_query if "p2c" in terms else None)
    scale = float(np.sqrt(8 * (1 + len(terms))))
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=query.shape), jnp.float32)

    dense = lambda *a: dense_attention(*a, query_mask, key_mask, scale=scale, rel=rel)
    fused = lambda *a: fused_attention(*a, query_mask, key_mask, scale=scale, rel=rel, block_q=blocks[0],
                                       block_k=blocks[1])
    assert_close(output_and_grads(fused, arrays, cotangent), output_and_grads(dense, arrays, cotangent))


@pytest.mark.slow
def test_dropout_matches_dense_counter_mask():
    rel = LOG_BUCKETS
    arrays, query_mask, key_mask = make_inputs(2, 37, 37, 2, 8, rel["span"], seed=2)
    cotangent = jnp.asarray(np.random.default_rng(3).normal(size=arrays[0].shape), jnp.float32)
    kwargs = dict(scale=float(np.sqrt(24)), rel=rel, rate=0.1, seed=jnp.uint32(1234))
    dense = lambda *a: dense_attention(*a, query_mask, key_mask, **kwargs)
    fused = lambda *a: fused_attention(*a, query_mask, key_mask, block_q=16, block_k=8, **kwargs)
    assert_close(output_and_grads(fused, arrays, cotangent), output_and_grads(dense, arrays, cotangent))


def test_bf16_inputs_close_to_fp32_dense():
    rel = LOG_BUCKETS
    arrays, query_mask, key_mask = make_inputs(2, 37, 37, 2, 8, rel["span"], seed=4, dtype=jnp.bfloat16)
    scale = float(np.sqrt(24))
    fused = jax.jit(lambda *a: fused_attention(*a, query_mask, key_mask, scale=scale, rel=rel, block_q=16,
                                               block_k=16))
    out = fused(*arrays)
    assert out.dtype == jnp.bfloat16
    dense = jax.jit(lambda *a: dense_attention(*a, query_mask, key_mask, scale=scale, rel=rel))
    reference = dense(*(a.astype(jnp.float32) for a in arrays))
    # bf16 keeps 8 mantissa bits: the output rounding and the bf16 probabilities entering P·V.
    np.testing.assert_allclose(np.asarray(out, np.float32), reference, rtol=0, atol=1e-2)


@pytest.mark.parametrize("q_len,k_len,block_q,block_k", [(37, 37, 16, 16), (37, 21, 16, 8), (21, 37, 8, 16),
                                                         (64, 64, 32, 16)])
def test_window_starts_address_each_offset(q_len, k_len, block_q, block_k):
    """Skewing every tile's window of a table that stores its own offsets must give i - j at every real pair."""
    plan = TilePlan(batch=1, heads=1, head_dim=1, query_len=q_len, key_len=k_len, block_q=block_q, block_k=block_k,
                    scale=1.0, rate=0.0, has_c2p=True, has_p2c=True)
    descending = np.arange(q_len - 1, -k_len, -1, dtype=np.float32)
    rows = plan.padded_offsets
    tables = {True: np.pad(descending, table_pads(plan, True, rows), constant_values=np.nan),
              False: np.pad(descending[::-1], table_pads(plan, False, rows), constant_values=np.nan)}
    for q_tile in range(plan.q_tiles):
        for k_tile in range(plan.k_tiles):
            i = q_tile * block_q + np.arange(block_q)[:, None]
            j = k_tile * block_k + np.arange(block_k)[None, :]
            real = (i < q_len) & (j < k_len)
            c2p_start, p2c_start = window_starts(plan, q_tile * block_q, k_tile * block_k)
            c2p = np.broadcast_to(tables[True][c2p_start: c2p_start + plan.window], (block_q, plan.window))
            p2c = np.broadcast_to(tables[False][p2c_start: p2c_start + plan.window], (block_k, plan.window))
            np.testing.assert_array_equal(np.asarray(diagonal_skew(jnp.asarray(c2p), block_k))[real], (i - j)[real])
            np.testing.assert_array_equal(np.asarray(diagonal_skew(jnp.asarray(p2c), block_q)).T[real],
                                          (i - j)[real])


@pytest.mark.parametrize("rows,width", [(1, 5), (4, 1), (4, 6), (6, 3)])
def test_diagonal_skew_transpose_is_the_linear_transpose(rows, width):
    grad = jnp.asarray(np.random.default_rng(5).normal(size=(2, rows, width)), jnp.float32)
    skew = lambda x: diagonal_skew(x, width)
    (expected,) = jax.linear_transpose(skew, jnp.zeros((2, rows, rows + width - 1)))(grad)
    np.testing.assert_array_equal(diagonal_skew_transpose(grad), expected)


def _largest_per_row(jaxpr, rows: int) -> int:
    """Largest intermediate (elements per batch·head row) anywhere in a jaxpr, sub-jaxprs included."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            largest = max(largest, int(np.prod(var.aval.shape, dtype=np.int64)) // rows)
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, jax.extend.core.Jaxpr):
                    largest = max(largest, _largest_per_row(sub, rows))
    return largest


def _memory_case(n=512, heads=2, dim=16):
    rng = np.random.default_rng(6)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
    arrays = (normal(1, n, heads, dim), normal(1, n, heads, dim), normal(1, n, heads, dim),
              normal(2 * n - 1, heads, dim), normal(2 * n - 1, heads, dim))
    mask = jnp.ones((1, n), bool)
    return arrays, mask


def test_memory_is_linear_in_sequence_length():
    n, heads = 512, 2
    arrays, mask = _memory_case(n, heads)

    def loss(*a):
        return jnp.sum(chunked_attention(*a, mask, mask, scale=4.0, block_q=64, block_k=64, dropout_rate=0.1,
                                         dropout_seed=jnp.uint32(0)))

    def dense_loss(query, key, value, c2p, p2c):
        scores = content_to_content(query, key) + jnp.einsum("bqhd,ohd->bhqo", query, c2p)[..., :n]
        return jnp.sum(masked_softmax(scores, mask[:, None, None]))

    for fn in (loss, jax.grad(loss, argnums=tuple(range(5)))):
        assert _largest_per_row(jax.make_jaxpr(fn)(*arrays).jaxpr, heads) < n * n // 4
    # The walk does see quadratic intermediates when they exist.
    assert _largest_per_row(jax.make_jaxpr(jax.grad(dense_loss))(*arrays).jaxpr, heads) >= n * n


@pytest.mark.slow
def test_compiled_hlo_has_no_gather_or_scatter():
    arrays, query_mask, key_mask = make_inputs(2, 37, 37, 2, 8, 8)
    rows = relative_offset_rows(37, 37, 8, 8, 32)
    tables = (expand_to_offsets(arrays[3], rows[::-1]), expand_to_offsets(arrays[4], rows))

    def loss(query, key, value, c2p, p2c):
        return jnp.sum(chunked_attention(query, key, value, c2p, p2c, query_mask, key_mask, scale=4.0, block_q=16,
                                         block_k=8, dropout_rate=0.1, dropout_seed=jnp.uint32(3)) ** 2)

    for fn in (loss, jax.grad(loss, argnums=tuple(range(5)))):
        hlo = jax.jit(fn).lower(*arrays[:3], *tables).compile().as_text()
        assert "gather(" not in hlo and "scatter(" not in hlo


def test_rejects_dropout_without_seed():
    arrays, query_mask, key_mask = make_inputs(1, 8, 8, 1, 4, 4)
    with pytest.raises(ValueError, match="dropout_seed"):
        chunked_attention(*arrays[:3], None, None, query_mask, key_mask, scale=2.0, block_q=4, block_k=4,
                          dropout_rate=0.1)
