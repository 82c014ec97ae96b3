"""Disentangled self-attention: the score terms as pure functions, and the v1 / v2 projection modules.

Shapes: B batch, Q query length, K key length, H heads, D head_dim, R = 2 * span relative-embedding rows.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from deberta_jax.config import FUSED_ATTENTION_IMPLS, DebertaConfig
from deberta_jax.model.chunked_attention import chunked_attention
from deberta_jax.model.layers import dense, expand_mask
from deberta_jax.model.pallas_attention import pallas_attention
from deberta_jax.model.relative_positions import relative_embedding_index, relative_offset_rows
from deberta_jax.model.relative_scores import diagonal_skew, expand_to_offsets
from deberta_jax.model.remat import CONTEXT, KEY, QUERY, VALUE
from deberta_jax.sharding.activations import HEADS, OFFSET_HEADS, constrain, map_over_shards

_F32 = jnp.float32


def _acc(x: jnp.ndarray):
    """Accumulation dtype for scores: fp32, or the inputs' own dtype when wider (float64)."""
    return jnp.promote_types(x.dtype, _F32)


def content_to_content(query: jnp.ndarray, key: jnp.ndarray) -> jnp.ndarray:
    """c2c[b, h, i, j] = Q_i · K_j, accumulated in fp32.

    Args:
      query: [B, Q, H, D]; key: [B, K, H, D].
    Returns:
      fp32 [B, H, Q, K].
    """
    return jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=_acc(query))


def _heads_to_batch_major(scores: jnp.ndarray) -> jnp.ndarray:
    """[H, B, ...] -> [B, H, ...].

    The position products are written head-major ([H, B, Q, R]): that is the output layout of XLA's batched
    matmul over heads, so no transpose of the large score array follows the matmul. Swapping the two leading
    axes afterwards moves whole rows and fuses into the consumer (on CPU this halves the c2p / p2c cost).
    """
    return jnp.swapaxes(scores, 0, 1)


def content_to_position(query: jnp.ndarray, pos_key: jnp.ndarray, rel_index: jnp.ndarray) -> jnp.ndarray:
    """c2p[b, h, i, j] = Q_i · K_r[idx[i, j]].

    The projection against all R relative rows is a [H, B, Q, R] matmul; `take_along_axis` then picks each
    pair's row. The relative keys carry no batch axis: they are computed once per layer and broadcast.

    Args:
      query: [B, Q, H, D]; pos_key: [R, H, D]; rel_index: int [Q, K] with values in [0, R).
    Returns:
      fp32 [B, H, Q, K].
    """
    scores = jnp.einsum("bqhd,rhd->hbqr", query, pos_key, preferred_element_type=_acc(query))
    index = jnp.broadcast_to(rel_index, scores.shape[:2] + rel_index.shape)
    return _heads_to_batch_major(jnp.take_along_axis(scores, index, axis=-1))


def position_to_content(key: jnp.ndarray, pos_query: jnp.ndarray, rel_index: jnp.ndarray) -> jnp.ndarray:
    """p2c[b, h, i, j] = K_j · Q_r[idx[i, j]].

    Computed key-major ([H, B, K, R]), gathered with the transposed index, then transposed back, which is how the
    reference lays it out.

    Args:
      key: [B, K, H, D]; pos_query: [R, H, D]; rel_index: int [Q, K] with values in [0, R).
    Returns:
      fp32 [B, H, Q, K].
    """
    scores = jnp.einsum("bkhd,rhd->hbkr", key, pos_query, preferred_element_type=_acc(key))
    index_t = rel_index.T
    gathered = jnp.take_along_axis(scores, jnp.broadcast_to(index_t, scores.shape[:2] + index_t.shape), axis=-1)
    return _heads_to_batch_major(jnp.swapaxes(gathered, -1, -2))


def content_to_position_skew(query: jnp.ndarray, pos_key_by_offset: jnp.ndarray, key_size: int) -> jnp.ndarray:
    """c2p without a gather: Q against every offset's relative key, then `diagonal_skew`.

    Args:
      query: [B, Q, H, D]; pos_key_by_offset: [Q + K - 1, H, D] in DESCENDING offset order (row c holds offset
        i - j = Q - 1 - c); key_size: K.
    Returns:
      fp32 [B, H, Q, K], equal to `content_to_position`.
    """
    scores = jnp.einsum("bqhd,ohd->hbqo", query, pos_key_by_offset, preferred_element_type=_acc(query))
    return _heads_to_batch_major(diagonal_skew(scores, key_size))


def position_to_content_skew(key: jnp.ndarray, pos_query_by_offset: jnp.ndarray, query_size: int) -> jnp.ndarray:
    """p2c without a gather: every key against every offset's relative query, skewed key-major, transposed.

    Args:
      key: [B, K, H, D]; pos_query_by_offset: [Q + K - 1, H, D] in ASCENDING offset order (row c holds offset
        i - j = c - (K - 1)); query_size: Q.
    Returns:
      fp32 [B, H, Q, K], equal to `position_to_content`.
    """
    scores = jnp.einsum("bkhd,ohd->hbko", key, pos_query_by_offset, preferred_element_type=_acc(key))
    return _heads_to_batch_major(jnp.swapaxes(diagonal_skew(scores, query_size), -1, -2))


def score_scale(head_dim: int, pos_att_type: tuple[str, ...]) -> float:
    """sqrt(d · (1 + number of position terms)): each added term has the variance of one dot product."""
    return math.sqrt(head_dim * (1 + len(pos_att_type)))


def masked_softmax(scores: jnp.ndarray, pair_mask: jnp.ndarray) -> jnp.ndarray:
    """Softmax over keys in fp32 (float64 for float64 scores) with masked scores set to that dtype's minimum.

    A query row with every key masked comes out uniform, exactly as in the reference.

    Args:
      scores: fp32 [B, H, Q, K]; pair_mask: bool [B, 1, Q, K].
    """
    scores = jnp.where(pair_mask, scores, jnp.finfo(scores.dtype).min)
    return nn.softmax(scores, axis=-1)


def _chunked_context(query, key, value, c2p_table, p2c_table, token, **options):
    """`chunked_attention` with one [B, L] token mask for queries and keys (self-attention)."""
    return chunked_attention(query, key, value, c2p_table, p2c_table, token, token, **options)


def _split_heads(x: jnp.ndarray, heads: int) -> jnp.ndarray:
    """[..., H * D] -> [..., H, D]."""
    return x.reshape(x.shape[:-1] + (heads, x.shape[-1] // heads))


class DisentangledSelfAttention(nn.Module):
    """Self-attention with c2c + c2p + p2c scores (HF's `attention.self`).

    v2/v3 parameters: query_proj, key_proj, value_proj (+ pos_key_proj / pos_query_proj unless share_att_key).
    v1 parameters: in_proj (no bias, per-head interleaved q|k|v), q_bias, v_bias, pos_proj (c2p, no bias),
    pos_q_proj (p2c), and the optional talking-head projections.
    """

    config: DebertaConfig

    def setup(self):
        cfg = self.config
        inner = cfg.num_attention_heads * cfg.head_dim
        terms = cfg.pos_att_type
        if cfg.is_v1:
            self.in_proj = dense(cfg, 3 * inner, ("embed", "qkv"), use_bias=False)
            zeros = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("qkv",))
            self.q_bias = self.param("q_bias", zeros, (inner,), cfg.storage_dtype)
            self.v_bias = self.param("v_bias", zeros, (inner,), cfg.storage_dtype)
            if cfg.relative_attention and "c2p" in terms:
                self.pos_proj = dense(cfg, inner, ("embed", "qkv"), use_bias=False)
            if cfg.relative_attention and "p2c" in terms:
                self.pos_q_proj = dense(cfg, inner, ("embed", "qkv"))
            if cfg.talking_head:
                self.head_logits_proj = dense(cfg, cfg.num_attention_heads, ("heads_in", "heads_out"), use_bias=False)
                self.head_weights_proj = dense(cfg, cfg.num_attention_heads, ("heads_in", "heads_out"), use_bias=False)
        else:
            self.query_proj = dense(cfg, inner, ("embed", "qkv"))
            self.key_proj = dense(cfg, inner, ("embed", "qkv"))
            self.value_proj = dense(cfg, inner, ("embed", "qkv"))
            if cfg.relative_attention and not cfg.share_att_key:
                if "c2p" in terms:
                    self.pos_key_proj = dense(cfg, inner, ("embed", "qkv"))
                if "p2c" in terms:
                    self.pos_query_proj = dense(cfg, inner, ("embed", "qkv"))
        self.pos_dropout = nn.Dropout(cfg.hidden_dropout_prob)
        self.dropout = nn.Dropout(cfg.attention_probs_dropout_prob)

    def _content_projections(self, hidden_states, query_states):
        """Q from query_states, K and V from hidden_states, each [B, L, H, D]."""
        heads = self.config.num_attention_heads
        if self.config.is_v1:
            def fused(x):
                return self.in_proj(x).reshape(x.shape[:-1] + (heads, 3, self.config.head_dim))

            kv = fused(hidden_states)
            q_src = kv if query_states is hidden_states else fused(query_states)
            query, key, value = q_src[..., 0, :], kv[..., 1, :], kv[..., 2, :]
            dtype = query.dtype
            query = query + _split_heads(self.q_bias, heads).astype(dtype)
            value = value + _split_heads(self.v_bias, heads).astype(dtype)
            return query, key, value
        return (_split_heads(self.query_proj(query_states), heads),
                _split_heads(self.key_proj(hidden_states), heads),
                _split_heads(self.value_proj(hidden_states), heads))

    def _position_projections(self, rel_embeddings):
        """Relative keys (for c2p) and queries (for p2c) of the given table rows [U, hidden]: each [U, H, D] or None."""
        cfg = self.config
        heads = cfg.num_attention_heads
        pos_key = pos_query = None
        if cfg.is_v1:
            if "c2p" in cfg.pos_att_type:
                pos_key = self.pos_proj(rel_embeddings)
            if "p2c" in cfg.pos_att_type:
                pos_query = self.pos_q_proj(rel_embeddings)
        elif cfg.share_att_key:
            if "c2p" in cfg.pos_att_type:
                pos_key = self.key_proj(rel_embeddings)
            if "p2c" in cfg.pos_att_type:
                pos_query = self.query_proj(rel_embeddings)
        else:
            if "c2p" in cfg.pos_att_type:
                pos_key = self.pos_key_proj(rel_embeddings)
            if "p2c" in cfg.pos_att_type:
                pos_query = self.pos_query_proj(rel_embeddings)
        split = lambda x: None if x is None else _split_heads(x, heads)
        return split(pos_key), split(pos_query)

    def _relative_rows(self, query_size: int, key_size: int) -> np.ndarray:
        """Static relative-table rows: per pair [Q, K] for "reference", per offset [Q + K - 1] otherwise."""
        cfg = self.config
        args = (query_size, key_size, cfg.relative_span, -1 if cfg.is_v1 else cfg.position_buckets, cfg.max_relative)
        if cfg.attention_impl == "reference":
            return relative_embedding_index(*args)
        return relative_offset_rows(*args)

    @staticmethod
    def _per_offset_tables(pos_key, pos_query, rows):
        """The c2p table in DESCENDING and the p2c table in ASCENDING offset order, each [Q + K - 1, H, D] or None."""
        return (None if pos_key is None else expand_to_offsets(pos_key, rows[::-1]),
                None if pos_query is None else expand_to_offsets(pos_query, rows))

    def _dense_scores(self, query, key, pos_key, pos_query, rows):
        """Unscaled c2c + c2p + p2c, fp32 [B, H, Q, K], with the gather ("reference") or the skew."""
        scores = content_to_content(query, key)
        if self.config.attention_impl == "reference":
            if pos_key is not None:
                scores = scores + content_to_position(query, pos_key, rows)
            if pos_query is not None:
                scores = scores + position_to_content(key, pos_query, rows)
            return scores
        c2p_table, p2c_table = self._per_offset_tables(pos_key, pos_query, rows)
        if c2p_table is not None:
            scores = scores + content_to_position_skew(query, c2p_table, key.shape[1])
        if p2c_table is not None:
            scores = scores + position_to_content_skew(key, p2c_table, query.shape[1])
        return scores

    def _fused_context(self, query, key, value, pos_key, pos_query, rows, attention_mask, deterministic):
        """Context [B, Q, H, D] from the chunked or Pallas kernel ("auto": the one for the platform the step is lowered
        for); the [B, H, Q, K] scores never exist."""
        cfg = self.config
        if attention_mask.ndim != 2:
            raise ValueError(f"attention_impl={cfg.attention_impl!r} takes a [batch, seq] token mask; got shape "
                             f"{attention_mask.shape} (a [batch, query, key] mask needs 'reference' or 'skew')")
        c2p_table, p2c_table = self._per_offset_tables(pos_key, pos_query, rows)
        rate = cfg.attention_probs_dropout_prob
        seed = None
        if not deterministic and rate > 0:
            seed = jax.random.bits(self.make_rng("dropout"), (), jnp.uint32)
        else:
            rate = 0.0
        token = attention_mask != 0
        options = dict(scale=score_scale(cfg.head_dim, cfg.pos_att_type), block_q=cfg.attention_block_q,
                       block_k=cfg.attention_block_k, dropout_rate=rate, dropout_seed=seed)
        chunked = functools.partial(_chunked_context, **options)
        pallas = functools.partial(self._pallas_shards, **options)
        if cfg.attention_impl == "auto":
            # The Mosaic kernels move 2-3 x fewer HBM bytes than chunked on TPU (experiments/tpu_compile); on GPUs
            # the Triton kernels are unmeasured, and on CPUs they would run in the Pallas interpreter.
            return lax.platform_dependent(query, key, value, c2p_table, p2c_table, token, tpu=pallas,
                                          default=chunked)
        kernel = pallas if cfg.attention_impl == "pallas" else chunked
        return kernel(query, key, value, c2p_table, p2c_table, token)

    def _pallas_shards(self, query, key, value, c2p_table, p2c_table, token, **options):
        """`pallas_attention` on each device's rows and heads: XLA cannot partition a Mosaic kernel."""
        present = [t is not None for t in (c2p_table, p2c_table)]

        def shard(first, query, key, value, token, *tables):
            tables = iter(tables)
            c2p, p2c = (next(tables) if used else None for used in present)
            return pallas_attention(query, key, value, c2p, p2c, token, token, first_row=first(0, 0),
                                    first_head=first(0, 2), total_heads=self.config.num_attention_heads, **options)

        tables = tuple(t for t in (c2p_table, p2c_table) if t is not None)
        return map_over_shards(shard, (query, key, value, token, *tables),
                               (HEADS, HEADS, HEADS, HEADS[:2]) + (OFFSET_HEADS,) * len(tables), HEADS,
                               whole=("activation_length",))

    def __call__(self, hidden_states, attention_mask, rel_embeddings, *, query_states=None,
                 deterministic: bool = True):
        """
        Args:
          hidden_states: [B, K, hidden] (keys and values).
          attention_mask: [B, K] token mask (1 = token) or [B, Q, K] (query i may see key j).
          rel_embeddings: [R, hidden] (already LayerNorm'd where configured) or None without relative attention.
          query_states: [B, Q, hidden]; defaults to hidden_states.
        Returns:
          context [B, Q, H * D] in the compute dtype, and the attention probabilities fp32 [B, H, Q, K] (None for
          the fused implementations, which never hold them).
        """
        cfg = self.config
        if query_states is None:
            query_states = hidden_states
        query, key, value = (checkpoint_name(constrain(x, HEADS), name) for x, name in zip(
            self._content_projections(hidden_states, query_states), (QUERY, KEY, VALUE)))
        pos_key = pos_query = rows = None
        if cfg.relative_attention and cfg.pos_att_type:
            rows = self._relative_rows(query.shape[1], key.shape[1])
            # Only rows min..max of the table are ever read: project just those (at N = 128 half of v3's 512).
            first = int(rows.min())
            rel = self.pos_dropout(rel_embeddings, deterministic=deterministic)[first: int(rows.max()) + 1]
            pos_key, pos_query = self._position_projections(rel)
            rows = rows - first

        if cfg.attention_impl in FUSED_ATTENTION_IMPLS:
            context = self._fused_context(query, key, value, pos_key, pos_query, rows, attention_mask,
                                          deterministic)
            return checkpoint_name(context.reshape(context.shape[:2] + (-1,)), CONTEXT), None

        scores = self._dense_scores(query, key, pos_key, pos_query, rows)
        scores = scores / score_scale(cfg.head_dim, cfg.pos_att_type)
        if cfg.talking_head:
            scores = jnp.moveaxis(self.head_logits_proj(jnp.moveaxis(scores, 1, -1)), -1, 1).astype(_acc(scores))
        pair_mask, _ = expand_mask(attention_mask)
        probs = masked_softmax(scores, pair_mask)
        dropped = self.dropout(probs, deterministic=deterministic)
        if cfg.talking_head:
            dropped = jnp.moveaxis(self.head_weights_proj(jnp.moveaxis(dropped, 1, -1)), -1, 1)
        context = jnp.einsum("bhqk,bkhd->bqhd", dropped.astype(value.dtype), value)
        return checkpoint_name(context.reshape(context.shape[:2] + (-1,)), CONTEXT), probs
