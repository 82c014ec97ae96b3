"""The post-LN transformer stack with shared relative embeddings and the optional conv branch (v2 xlarge+)."""

from __future__ import annotations

import flax.linen as nn

from deberta_jax.config import DebertaConfig
from deberta_jax.model.activations import ACTIVATIONS
from deberta_jax.model.attention import DisentangledSelfAttention
from deberta_jax.model.layers import dense, embed, layer_norm


class DenseResidualNorm(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): HF's `attention.output` and `output`."""

    config: DebertaConfig
    in_axis: str

    @nn.compact
    def __call__(self, hidden, residual, deterministic: bool = True):
        cfg = self.config
        hidden = dense(cfg, cfg.hidden_size, (self.in_axis, "embed"), name="dense")(hidden)
        hidden = nn.Dropout(cfg.hidden_dropout_prob)(hidden, deterministic=deterministic)
        return layer_norm(cfg, name="LayerNorm")(hidden + residual)


class DebertaAttention(nn.Module):
    config: DebertaConfig

    def setup(self):
        self.self = DisentangledSelfAttention(self.config)
        self.output = DenseResidualNorm(self.config, "qkv")

    def __call__(self, hidden_states, attention_mask, rel_embeddings, query_states=None,
                 deterministic: bool = True):
        context, probs = self.self(hidden_states, attention_mask, rel_embeddings, query_states=query_states,
                                   deterministic=deterministic)
        residual = hidden_states if query_states is None else query_states
        return self.output(context, residual, deterministic=deterministic), probs


class DebertaIntermediate(nn.Module):
    config: DebertaConfig

    @nn.compact
    def __call__(self, hidden):
        cfg = self.config
        return ACTIVATIONS[cfg.hidden_act](dense(cfg, cfg.intermediate_size, ("embed", "mlp"), name="dense")(hidden))


class DebertaLayer(nn.Module):
    """One block: disentangled attention, then the feed-forward, each post-LN.

    Args (call):
      hidden_states: [B, N, hidden]; attention_mask: [B, N] or [B, N, N]; rel_embeddings: [R, hidden] or None;
      query_states: [B, N, hidden] for the enhanced mask decoder.
    Returns:
      ([B, N, hidden], attention probabilities fp32 [B, H, N, N], or None from the fused attention).
    """

    config: DebertaConfig

    def setup(self):
        self.attention = DebertaAttention(self.config)
        self.intermediate = DebertaIntermediate(self.config)
        self.output = DenseResidualNorm(self.config, "mlp")

    def __call__(self, hidden_states, attention_mask, rel_embeddings, query_states=None,
                 deterministic: bool = True):
        attended, probs = self.attention(hidden_states, attention_mask, rel_embeddings, query_states, deterministic)
        out = self.output(self.intermediate(attended), attended, deterministic=deterministic)
        return out, probs


class ConvLayer(nn.Module):
    """Convolution over the embedding output, added to layer 0's output (HF's `encoder.conv`)."""

    config: DebertaConfig

    @nn.compact
    def __call__(self, embedding_output, layer_output, token_mask, deterministic: bool = True):
        """embedding_output, layer_output: [B, N, hidden]; token_mask: [B, N]. Returns [B, N, hidden]."""
        cfg = self.config
        k = cfg.conv_kernel_size
        conv = nn.Conv(
            cfg.hidden_size, kernel_size=(k,), padding=[((k - 1) // 2, (k - 1) // 2)],
            feature_group_count=cfg.conv_groups, dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range),
                                                     ("conv_width", "conv_in", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
            name="conv",
        )
        mask = token_mask[..., None].astype(layer_output.dtype)
        out = conv(embedding_output) * (mask != 0)
        out = ACTIVATIONS[cfg.conv_act](nn.Dropout(cfg.hidden_dropout_prob)(out, deterministic=deterministic))
        return layer_norm(cfg, name="LayerNorm")(layer_output + out) * mask


class DebertaEncoder(nn.Module):
    """HF's `encoder`: layer_{i}, rel_embeddings, LayerNorm (of the relative embeddings) and conv."""

    config: DebertaConfig

    def setup(self):
        cfg = self.config
        block = DebertaLayer
        if cfg.remat:
            block = nn.remat(DebertaLayer, static_argnums=(5,))
        self.layer = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_hidden_layers)]
        if cfg.relative_attention:
            self.rel_embeddings = embed(cfg, 2 * cfg.relative_span, cfg.hidden_size, ("rel", "embed"))
            if cfg.norm_rel_embeddings:
                self.LayerNorm = layer_norm(cfg)
        if cfg.conv_kernel_size > 0:
            self.conv = ConvLayer(cfg)

    def relative_table(self):
        """The (LayerNorm'd) relative embedding table [R, hidden] every layer reads, or None."""
        cfg = self.config
        if not cfg.relative_attention:
            return None
        table = self.rel_embeddings.embedding[: 2 * cfg.relative_span].astype(cfg.compute_dtype)
        if cfg.norm_rel_embeddings:
            table = self.LayerNorm(table)
        return table

    def __call__(self, embedding_output, attention_mask, token_mask, deterministic: bool = True):
        """
        Args:
          embedding_output: [B, N, hidden]; attention_mask: [B, N] or [B, N, N]; token_mask: [B, N].
        Returns:
          (all hidden states: a tuple of num_hidden_layers + 1 arrays [B, N, hidden], the embeddings first;
           attention probabilities: a tuple of fp32 [B, H, N, N], one per layer).
        """
        rel_embeddings = self.relative_table()
        hidden = embedding_output
        all_hidden, all_probs = [hidden], []
        for i, layer in enumerate(self.layer):
            hidden, probs = layer(hidden, attention_mask, rel_embeddings, None, deterministic)
            if i == 0 and self.config.conv_kernel_size > 0:
                hidden = self.conv(embedding_output, hidden, token_mask, deterministic=deterministic)
            all_hidden.append(hidden)
            all_probs.append(probs)
        return tuple(all_hidden), tuple(all_probs)
