"""Parameterised building blocks shared by every DeBERTa module, each tagged with logical axis names.

Logical names (mapped to mesh axes by the sharding rules): "vocab", "embed" (hidden width), "embed_in" (the word
embedding width when it differs), "qkv" (heads x head_dim), "mlp", "rel" (relative-embedding rows), "position",
"types", "norm", "conv_width", "classes".
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from deberta_jax.config import DebertaConfig


def _kernel_init(config: DebertaConfig, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(config.initializer_range), axes)


def dense(config: DebertaConfig, features: int, axes: tuple[str, str], *, use_bias: bool = True,
          name: str | None = None) -> nn.Dense:
    """A Linear layer: kernel [in, out] (torch stores [out, in]), computed in `config.dtype`."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=config.compute_dtype,
        param_dtype=config.storage_dtype,
        kernel_init=_kernel_init(config, axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
        name=name,
    )


def word_table_ids(ids: jnp.ndarray, vocab_size: int, rows: int) -> jnp.ndarray:
    """int [...] token ids -> the rows a word-table lookup of a `rows`-row (padded) table should read: what an
    unpadded table of `vocab_size` rows would read. Ids in [-vocab_size, 0) wrap to the end of the real vocabulary;
    ids outside [-vocab_size, vocab_size) point past the table, where the lookup fills NaN. So a padded row is never
    read: an id the vocabulary does not have still poisons its sequence instead of reading a zero row silently."""
    if rows == vocab_size:
        return ids
    ids = jnp.where(ids < 0, ids + vocab_size, ids)
    return jnp.where((ids < 0) | (ids >= vocab_size), rows, ids)


def embed(config: DebertaConfig, num: int, features: int, axes: tuple[str, str], name: str | None = None) -> nn.Embed:
    return nn.Embed(
        num,
        features,
        dtype=config.compute_dtype,
        param_dtype=config.storage_dtype,
        embedding_init=_kernel_init(config, axes),
        name=name,
    )


def layer_norm(config: DebertaConfig, axis_name: str = "norm", name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with statistics in fp32 and the exact (centred) variance, as torch computes it."""
    return nn.LayerNorm(
        epsilon=config.layer_norm_eps,
        dtype=config.compute_dtype,
        param_dtype=config.storage_dtype,
        use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)),
        name=name,
    )


def expand_mask(attention_mask: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Splits a user mask into the pairwise mask attention uses and the per-token mask.

    Args:
      attention_mask: [batch, seq] (token i is real) or [batch, query, key] (query i may see key j).
    Returns:
      pair_mask: bool [batch, 1, query, key]; a 2-D mask m becomes m_i * m_j as in the reference.
      token_mask: [batch, seq] with 1 for tokens that any query sees (for 3-D masks: a column sum > 0).
    """
    if attention_mask.ndim == 2:
        token = attention_mask
        pair = (attention_mask[:, None, :, None] * attention_mask[:, None, None, :]) != 0
    elif attention_mask.ndim == 3:
        token = (attention_mask.sum(-2) > 0).astype(attention_mask.dtype)
        pair = attention_mask[:, None, :, :] != 0
    else:
        raise ValueError(f"attention_mask must be [batch, seq] or [batch, query, key]; got shape {attention_mask.shape}")
    return pair, token
