"""The post-LN transformer stack with shared relative embeddings and the optional conv branch (v2 xlarge+)."""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from deberta_jax.activations import ACTIVATIONS
from deberta_jax.config import DebertaConfig
from deberta_jax.model.attention import DisentangledSelfAttention
from deberta_jax.model.layers import dense, embed, layer_norm
from deberta_jax.model.remat import remat_layer
from deberta_jax.sharding.activations import HIDDEN, MLP, constrain


@flax.struct.dataclass
class LayerInputs:
    """What an encoder layer receives besides its query: the enhanced mask decoder re-runs the last layer on it.

    hidden_states: [B, N, hidden] (keys and values); attention_mask: [B, N] or [B, N, N];
    rel_embeddings: [R, hidden] (LayerNorm'd where configured) or None without relative attention.
    """

    hidden_states: jnp.ndarray
    attention_mask: jnp.ndarray
    rel_embeddings: Optional[jnp.ndarray]


def _last_of_stack(params):
    """Stacked layer params [n, ...] -> the last layer's [...]. Init-time params are still boxed with their
    logical axes (the stacked "layers" axis among them), so they are unboxed before the slice."""
    return jax.tree_util.tree_map(lambda x: x[-1], nn.meta.unbox(params))


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
        return constrain(ACTIVATIONS[cfg.hidden_act](dense(cfg, cfg.intermediate_size, ("embed", "mlp"),
                                                            name="dense")(hidden)), MLP)


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
        return constrain(out, HIDDEN), probs


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
            feature_group_count=cfg.conv_groups, dtype=cfg.compute_dtype, param_dtype=cfg.storage_dtype,
            kernel_init=nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range),
                                                     ("conv_width", "conv_in", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
            name="conv",
        )
        mask = token_mask[..., None].astype(layer_output.dtype)
        out = conv(embedding_output) * (mask != 0)
        out = ACTIVATIONS[cfg.conv_act](nn.Dropout(cfg.hidden_dropout_prob)(out, deterministic=deterministic))
        return layer_norm(cfg, name="LayerNorm")(layer_output + out) * mask


class _ScannedLayer(DebertaLayer):
    """DebertaLayer as an `nn.scan` body: the hidden state is the carry, (hidden, probs) the per-layer outputs."""

    def __call__(self, hidden_states, attention_mask, rel_embeddings, deterministic: bool = True):
        out, probs = super().__call__(hidden_states, attention_mask, rel_embeddings, None, deterministic)
        return out, (out, probs)


def scanned_layer_count(config: DebertaConfig) -> int:
    """Layers inside the scan: all of them, except layer_0 when the conv branch must run right after it."""
    return config.num_hidden_layers - (1 if config.conv_kernel_size > 0 else 0)


class DebertaEncoder(nn.Module):
    """HF's `encoder`: layer_{i}, rel_embeddings, LayerNorm (of the relative embeddings) and conv.

    With `scan_layers`, the layers run as one `nn.scan` whose parameters are stacked on a leading "layers" axis
    under `layers` (layer_0 stays apart when there is a conv branch), so compile time does not grow with depth.
    `layer_stacking` converts between the two layouts.
    """

    config: DebertaConfig

    def setup(self):
        cfg = self.config
        block = remat_layer(DebertaLayer, cfg, static_argnums=(5,))
        if cfg.scan_layers:
            body = remat_layer(_ScannedLayer, cfg, static_argnums=(4,), prevent_cse=False)
            scan = nn.scan(body, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                           in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=scanned_layer_count(cfg),
                           metadata_params={nn.PARTITION_NAME: "layers"})
            self.layers = scan(cfg)
            # The last scanned layer alone (for `rerun_last_layer`): a plain layer in the scan's own scope that reads
            # its slice of the stacked params, so the parameter tree is the scan's and nothing else.
            self.last_scanned = nn.map_variables(block, "params", trans_in_fn=_last_of_stack)(cfg)
            nn.share_scope(self.last_scanned, self.layers)
            self.layer = [block(cfg, name="layer_0")] if cfg.conv_kernel_size > 0 else []
        else:
            self.layer = [block(cfg, name=f"layer_{i}") for i in range(cfg.num_hidden_layers)]
        if cfg.relative_attention:
            self.rel_embeddings = embed(cfg, 2 * cfg.relative_span, cfg.hidden_size, ("rel", "embed"))
            if cfg.norm_rel_embeddings:
                self.LayerNorm = layer_norm(cfg)
        if cfg.conv_kernel_size > 0:
            self.conv = ConvLayer(cfg)

    def _relative_table(self):
        """The (LayerNorm'd) relative embedding table [R, hidden] every layer reads, or None."""
        cfg = self.config
        if not cfg.relative_attention:
            return None
        table = self.rel_embeddings.embedding[: 2 * cfg.relative_span].astype(cfg.compute_dtype)
        if cfg.norm_rel_embeddings:
            table = self.LayerNorm(table)
        return table

    def rerun_last_layer(self, received: LayerInputs, query_states, deterministic: bool = True):
        """The last layer once more, with its own parameters, on what it received (`__call__` returns that) but
        querying with `query_states` [B, N, hidden]: the enhanced mask decoder's step. Returns [B, N, hidden]."""
        layer = self.last_scanned if self.config.scan_layers else self.layer[-1]
        out, _ = layer(received.hidden_states, received.attention_mask, received.rel_embeddings, query_states,
                       deterministic)
        return out

    def __call__(self, embedding_output, attention_mask, token_mask, deterministic: bool = True):
        """
        Args:
          embedding_output: [B, N, hidden]; attention_mask: [B, N] or [B, N, N]; token_mask: [B, N].
        Returns:
          (all hidden states: a tuple of num_hidden_layers + 1 arrays [B, N, hidden], the embeddings first;
           attention probabilities: a tuple of fp32 [B, H, N, N] (None from fused attention), one per layer;
           the `LayerInputs` the last layer received).
        """
        rel_embeddings = self._relative_table()
        hidden = constrain(embedding_output, HIDDEN)
        all_hidden, all_probs = [hidden], []
        for i, layer in enumerate(self.layer):
            hidden, probs = layer(hidden, attention_mask, rel_embeddings, None, deterministic)
            if i == 0 and self.config.conv_kernel_size > 0:
                hidden = self.conv(embedding_output, hidden, token_mask, deterministic=deterministic)
            all_hidden.append(hidden)
            all_probs.append(probs)
        if self.config.scan_layers:
            hidden, (stacked_hidden, stacked_probs) = self.layers(hidden, attention_mask, rel_embeddings,
                                                                  deterministic)
            count = scanned_layer_count(self.config)
            all_hidden.extend(stacked_hidden[i] for i in range(count))
            all_probs.extend(None if stacked_probs is None else stacked_probs[i] for i in range(count))
        return tuple(all_hidden), tuple(all_probs), LayerInputs(all_hidden[-2], attention_mask, rel_embeddings)
