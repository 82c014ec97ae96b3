"""Token embeddings: words [+ absolute positions] [+ token types] -> projection -> LayerNorm -> mask -> dropout."""

from __future__ import annotations

import flax.linen as nn
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
