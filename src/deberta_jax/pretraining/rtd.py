"""Replaced-token detection (DeBERTaV3): an MLM generator, a discriminator and how they share embeddings.

Sharing modes:
  "gdes": discriminator table = stop_gradient(E_generator) + E_delta, E_delta initialised to zero, so the RTD loss
          reaches only E_delta and the generator table learns from MLM alone (gradient-disentangled sharing);
  "es":   one table for both, trained by both losses;
  "nes":  separate tables.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from deberta_jax.activations import ACTIVATIONS
from deberta_jax.config import DebertaConfig
from deberta_jax.model.layers import dense, layer_norm, word_table_ids
from deberta_jax.model.modeling import DebertaModel
from deberta_jax.pretraining.emd import DebertaForMLMPretraining

SHARING_MODES = ("gdes", "es", "nes")


class RTDHead(nn.Module):
    """LayerNorm(h_cls + h) -> dense -> act -> one logit per token. [B, N, hidden] -> [B, N]."""

    config: DebertaConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        x = layer_norm(cfg, name="LayerNorm")(hidden[:, :1] + hidden)
        x = ACTIVATIONS[cfg.hidden_act](dense(cfg, cfg.hidden_size, ("embed", "mlp"), name="dense")(x))
        return dense(cfg, 1, ("mlp", "classes"), name="classifier")(x)[..., 0]


def generator_config(discriminator: DebertaConfig, depth_ratio: float = 0.5, **changes) -> DebertaConfig:
    """The generator of the v3 recipe: same width, `depth_ratio` of the depth (xsmall 12 -> 6, large 24 -> 12)."""
    layers = max(1, int(round(discriminator.num_hidden_layers * depth_ratio)))
    return discriminator.replace(num_hidden_layers=layers, **changes)


class ReplacedTokenDetection(nn.Module):
    """Params: `generator` (a DebertaForMaskedLM, plus the EMD's position table when `generator_emd_steps` > 0),
    `discriminator` (a backbone), `rtd_head`, and for gdes `embedding_delta` [padded_vocab, embedding_size]."""

    generator_config: DebertaConfig
    discriminator_config: DebertaConfig
    sharing: str = "gdes"
    generator_emd_steps: int = 0

    def setup(self):
        gen, disc = self.generator_config, self.discriminator_config
        if self.sharing not in SHARING_MODES:
            raise ValueError(f"sharing must be one of {SHARING_MODES}; got {self.sharing!r}")
        tables = [(c.vocab_size, c.padded_vocab_size, c.embed_dim) for c in (gen, disc)]
        if self.sharing != "nes" and tables[0] != tables[1]:
            raise ValueError(f"sharing={self.sharing!r} needs equal word tables (vocab_size, padded_vocab_size, "
                             f"embed_dim); generator has {tables[0]}, discriminator {tables[1]}")
        self.generator = DebertaForMLMPretraining(gen, emd_steps=self.generator_emd_steps)
        self.discriminator = DebertaModel(disc, external_word_embeddings=self.sharing != "nes")
        self.rtd_head = RTDHead(disc)
        if self.sharing == "gdes":
            init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab", "embed_in"))
            self.embedding_delta = self.param("embedding_delta", init, (disc.padded_vocab_size, disc.embed_dim),
                                              disc.storage_dtype)

    def discriminator_word_table(self):
        """[padded_vocab, embedding_size] table the discriminator reads, or None when it owns one (nes)."""
        if self.sharing == "nes":
            return None
        shared = self.generator.deberta.embeddings.word_embeddings.embedding
        if self.sharing == "es":
            return shared
        return jax.lax.stop_gradient(shared) + self.embedding_delta

    def generator_logits(self, input_ids, attention_mask, masked_positions, token_type_ids=None,
                         deterministic: bool = True):
        """MLM logits [B, M, padded_vocab] at the masked positions, the padded ids' at the dtype's minimum."""
        return self.generator(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                              deterministic=deterministic, masked_positions=masked_positions,
                              padded_vocab=True).logits

    def discriminator_logits(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True):
        """Replaced-token logits [B, N] (positive = replaced)."""
        table = self.discriminator_word_table()
        if table is None:
            out = self.discriminator(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                     deterministic=deterministic)
        else:
            ids = word_table_ids(input_ids, self.discriminator_config.vocab_size, table.shape[0])
            embeds = jnp.take(table, ids, axis=0).astype(self.discriminator_config.compute_dtype)
            out = self.discriminator(attention_mask=attention_mask, token_type_ids=token_type_ids, inputs_embeds=embeds,
                                     deterministic=deterministic)
        return self.rtd_head(out.last_hidden_state)

    def __call__(self, input_ids, attention_mask=None, masked_positions=None, deterministic: bool = True):
        """Both halves on the same input (used to initialise params)."""
        if attention_mask is None:
            attention_mask = jnp.ones(input_ids.shape, jnp.int32)
        if masked_positions is None:
            masked_positions = jnp.zeros((input_ids.shape[0], 1), jnp.int32)
        return (self.generator_logits(input_ids, attention_mask, masked_positions, deterministic=deterministic),
                self.discriminator_logits(input_ids, attention_mask, deterministic=deterministic))


def export_discriminator_params(params) -> dict:
    """Params of a ReplacedTokenDetection -> DebertaModel params (word table = E_gen + E_delta, E_gen, or own)."""
    disc = dict(params["discriminator"])
    embeddings = dict(disc["embeddings"])
    if "word_embeddings" not in embeddings:
        table = params["generator"]["deberta"]["embeddings"]["word_embeddings"]["embedding"]
        if "embedding_delta" in params:
            table = table + params["embedding_delta"]
        embeddings["word_embeddings"] = {"embedding": table}
    disc["embeddings"] = embeddings
    return disc


CLIP_GROUPS = ("generator", "discriminator")


def clip_group_labels(params) -> dict:
    """"generator" for the generator's params (its word table included), "discriminator" for the rest: with
    `make_optimizer(..., clip_groups=(clip_group_labels, CLIP_GROUPS))` each half is clipped by its own norm, as
    microsoft/DeBERTa's decoupled training clips each of its two optimizers, so the 50x RTD gradient does not
    shrink the generator's steps."""
    return {key: jax.tree_util.tree_map(lambda _: "generator" if key == "generator" else "discriminator", value)
            for key, value in params.items()}
