"""Token embeddings: words [+ absolute positions] [+ token types] -> projection -> LayerNorm -> mask -> dropout."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from deberta_jax.config import DebertaConfig
from deberta_jax.model.layers import dense, embed, layer_norm, word_table_ids

# Epsilon of the affine-free LayerNorm that embeddings go through before a perturbation is added (microsoft/DeBERTa's
# SiFT normalises with it).
PERTURBATION_NORM_EPS = 1e-7


def normalize(x: jnp.ndarray, eps: float) -> jnp.ndarray:
    """LayerNorm without scale or bias over the last axis, statistics in fp32."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
    return ((x32 - mean) / jnp.sqrt(var + eps)).astype(x.dtype)


class DebertaEmbeddings(nn.Module):
    """HF's `embeddings`: word_embeddings, position_embeddings, token_type_embeddings, embed_proj, LayerNorm.

    With `external_word_embeddings` the module owns no word table and the caller passes `inputs_embeds` (a
    discriminator whose table is shared with, or derived from, a generator's).
    """

    config: DebertaConfig
    external_word_embeddings: bool = False

    def setup(self):
        cfg = self.config
        if not self.external_word_embeddings:
            self.word_embeddings = embed(cfg, cfg.padded_vocab_size, cfg.embed_dim, ("vocab", "embed_in"))
        if cfg.position_biased_input:
            self.position_embeddings = embed(cfg, cfg.max_position_embeddings, cfg.embed_dim, ("position", "embed_in"))
        if cfg.type_vocab_size > 0:
            self.token_type_embeddings = embed(cfg, cfg.type_vocab_size, cfg.embed_dim, ("types", "embed_in"))
        if cfg.embed_dim != cfg.hidden_size:
            self.embed_proj = dense(cfg, cfg.hidden_size, ("embed_in", "embed"), use_bias=False)
        self.LayerNorm = layer_norm(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout_prob)

    def attend(self, hidden: jnp.ndarray) -> jnp.ndarray:
        """Logits against the word embedding table (the tied MLM decoder): [..., E] -> [..., padded_vocab]."""
        return self.word_embeddings.attend(hidden)

    def __call__(self, input_ids, token_mask, token_type_ids=None, position_ids=None, inputs_embeds=None,
                 deterministic: bool = True, perturbation=None):
        """
        Args:
          input_ids: int [B, N] (ignored when inputs_embeds is given).
          token_mask: [B, N], 1 for real tokens; the output is zeroed elsewhere.
          token_type_ids, position_ids: int [B, N] or None (zeros and arange).
          inputs_embeds: [B, N, E] replacing the word-embedding lookup.
          perturbation: [B, N, hidden] added to the embeddings after a LayerNorm without affine parameters and
            before the model's own LayerNorm (SiFT's perturbation of normalised embeddings); None leaves the
            embeddings as they are.
        Returns:
          [B, N, hidden] in the compute dtype.
        """
        cfg = self.config
        if inputs_embeds is None:
            if self.external_word_embeddings:
                raise ValueError("this model's word embeddings are external: pass inputs_embeds")
            inputs_embeds = self.word_embeddings(word_table_ids(input_ids, cfg.vocab_size, cfg.padded_vocab_size))
        embeddings = inputs_embeds
        seq_len = embeddings.shape[1]
        if cfg.position_biased_input:
            if position_ids is None:
                if seq_len > cfg.max_position_embeddings:
                    raise ValueError(
                        f"sequence length {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings} "
                        "of the absolute position table")
                position_ids = jnp.arange(seq_len)[None, :]
            embeddings = embeddings + self.position_embeddings(position_ids)
        if cfg.type_vocab_size > 0:
            if token_type_ids is None:
                token_type_ids = jnp.zeros(embeddings.shape[:2], jnp.int32)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        if cfg.embed_dim != cfg.hidden_size:
            embeddings = self.embed_proj(embeddings)
        if perturbation is not None:
            embeddings = normalize(embeddings, PERTURBATION_NORM_EPS) + perturbation.astype(embeddings.dtype)
        embeddings = self.LayerNorm(embeddings)
        embeddings = embeddings * token_mask[..., None].astype(embeddings.dtype)
        return self.dropout(embeddings, deterministic=deterministic)


def rescale_word_table(params: dict, config: DebertaConfig, rms: float) -> tuple[dict, float]:
    """`params` with the word table scaled so that its real rows' RMS is `rms`, and the factor applied.

    The model computes the same function (up to the LayerNorm's epsilon): the word vectors reach the embedding
    LayerNorm alone, and it normalises each row. What changes is how fast Adam turns the rows: its step has an
    absolute size, so a table whose entries pretraining grew (2.6 x the init scale in the tiny recipe) rotates that
    much more slowly per step than a freshly initialised one. Raises ValueError where absolute positions or token
    types are added to the word vectors first, since then the scale is not free.

    Args:
      params: a model's params holding one `word_embeddings/embedding` table [padded_vocab, E] (any head).
      config: the model's config.
      rms: the root mean square wanted of the table's first `config.vocab_size` rows.
    """
    if config.position_biased_input or config.type_vocab_size > 0:
        raise ValueError("the word vectors are added to absolute positions or token types before the LayerNorm "
                         "(position_biased_input / type_vocab_size), so scaling the word table would change the model")
    if not rms > 0:
        raise ValueError(f"rms={rms}: must be > 0")
    found = []

    def scaled(path, leaf):
        names = [getattr(k, "key", None) for k in path]
        if names[-2:] == ["word_embeddings", "embedding"]:
            real = leaf[:config.vocab_size].astype(jnp.float32)
            factor = rms / jnp.sqrt(jnp.mean(real * real))
            found.append(float(factor))
            return (leaf * factor).astype(leaf.dtype)
        return leaf

    out = jax.tree_util.tree_map_with_path(scaled, params)
    if len(found) != 1:
        raise ValueError(f"expected one word_embeddings/embedding table in the params, found {len(found)}")
    return out, found[0]
