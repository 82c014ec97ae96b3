"""Task heads on top of the backbone's hidden states (HF module names, so checkpoints map one to one)."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from deberta_jax.activations import ACTIVATIONS
from deberta_jax.config import DebertaConfig
from deberta_jax.model.layers import dense, layer_norm


def _vocab_bias(module: nn.Module, config: DebertaConfig) -> jnp.ndarray:
    """The output-only bias per (padded) vocabulary entry (call from `setup`)."""
    init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",))
    return module.param("bias", init, (config.padded_vocab_size,), config.storage_dtype)


def mask_padded_vocab(logits: jnp.ndarray, vocab_size: int) -> jnp.ndarray:
    """[..., padded_vocab] logits with the padded ids' set to the dtype's minimum: softmax gives them 0, argmax
    and sampling never pick them, and no gradient reaches their rows."""
    if logits.shape[-1] == vocab_size:
        return logits
    real = jnp.arange(logits.shape[-1]) < vocab_size
    return jnp.where(real, logits, jnp.finfo(logits.dtype).min)


class PredictionTransform(nn.Module):
    """dense -> act -> LayerNorm, the transform before the tied decoder."""

    config: DebertaConfig
    features: int

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        hidden = dense(cfg, self.features, ("embed", "embed_in"), name="dense")(hidden)
        return layer_norm(cfg, "embed_in", name="LayerNorm")(ACTIVATIONS[cfg.hidden_act](hidden))


class LegacyLMPredictions(nn.Module):
    """HF's `cls.predictions` (legacy=True): transform to embedding_size, tied decoder, own bias."""

    config: DebertaConfig

    def setup(self):
        self.transform = PredictionTransform(self.config, self.config.embed_dim)
        self.bias = _vocab_bias(self, self.config)

    def __call__(self, hidden, attend):
        """hidden: [..., hidden]; attend: maps [..., E] to [..., padded_vocab] with the word table. Returns logits
        [..., padded_vocab], the padded ids' masked."""
        logits = attend(self.transform(hidden))
        return mask_padded_vocab(logits + self.bias.astype(logits.dtype), self.config.vocab_size)


class LegacyMLMHead(nn.Module):
    config: DebertaConfig

    def setup(self):
        self.predictions = LegacyLMPredictions(self.config)

    def __call__(self, hidden, attend):
        return self.predictions(hidden, attend)


class LMHead(nn.Module):
    """microsoft/DeBERTa's head (`lm_predictions.lm_head`, legacy=False): hidden-width transform, tied decoder."""

    config: DebertaConfig

    def setup(self):
        cfg = self.config
        if cfg.embed_dim != cfg.hidden_size:
            raise ValueError(f"legacy=False MLM head needs embedding_size ({cfg.embed_dim}) == hidden_size "
                             f"({cfg.hidden_size}); use legacy=True")
        self.dense = dense(cfg, cfg.hidden_size, ("embed", "embed_in"))
        self.LayerNorm = layer_norm(cfg, "embed_in")
        self.bias = _vocab_bias(self, cfg)

    def __call__(self, hidden, attend):
        hidden = self.LayerNorm(ACTIVATIONS[self.config.hidden_act](self.dense(hidden)))
        logits = attend(hidden)
        return mask_padded_vocab(logits + self.bias.astype(logits.dtype), self.config.vocab_size)


class MLMPredictions(nn.Module):
    config: DebertaConfig

    def setup(self):
        self.lm_head = LMHead(self.config)

    def __call__(self, hidden, attend):
        return self.lm_head(hidden, attend)


class ContextPooler(nn.Module):
    """h[:, 0] -> dropout -> dense -> act: HF's `pooler`. [B, N, hidden] -> [B, hidden]."""

    config: DebertaConfig

    @nn.compact
    def __call__(self, hidden, deterministic: bool = True):
        cfg = self.config
        token = nn.Dropout(cfg.pooler_dropout)(hidden[:, 0], deterministic=deterministic)
        pooled = dense(cfg, cfg.pooler_hidden_size, ("embed", "pooler"), name="dense")(token)
        return ACTIVATIONS[cfg.pooler_hidden_act](pooled)
