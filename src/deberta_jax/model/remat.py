"""Named rematerialisation policies for the encoder layers (`DebertaConfig.remat`), as MaxText names its own.

A policy decides which of a layer's intermediates the backward pass keeps; the rest it recomputes from the layer's
input. Less kept means less activation memory and more FLOPs: the compile report's memory column
(`deberta-jax compile`) shows the trade for a given batch and chip.

| name | kept for the backward pass |
|---|---|
| "none" | everything (no remat) |
| "full" | only each layer's input: the whole layer runs twice |
| "save_dots" | every matmul's output, the [B, H, N, N] attention scores among them |
| "save_dots_except_attention" | the matmuls against weights (projections, feed-forward); the attention scores and the probability x value product, whose dot_generals have batch dimensions, are recomputed |
| "save_qkv" | the query, key and value projections (`checkpoint_name` tags in `attention.py`) |
| "save_qkv_context" | those and the attention context, so that the backward recomputes only the feed-forward and the scores |
"""

from __future__ import annotations

import flax.linen as nn
import jax

from deberta_jax.config import DebertaConfig

# Intermediates tagged with `jax.ad_checkpoint.checkpoint_name` in the attention module.
QUERY, KEY, VALUE, CONTEXT = "query", "key", "value", "context"

_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "save_dots": jax.checkpoint_policies.dots_saveable,
    "save_dots_except_attention": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_qkv": jax.checkpoint_policies.save_only_these_names(QUERY, KEY, VALUE),
    "save_qkv_context": jax.checkpoint_policies.save_only_these_names(QUERY, KEY, VALUE, CONTEXT),
}


def remat_layer(layer_cls: type[nn.Module], config: DebertaConfig, static_argnums: tuple[int, ...],
                prevent_cse: bool = True) -> type[nn.Module]:
    """`layer_cls` wrapped in `nn.remat` with the config's policy, or unchanged for "none".

    `static_argnums` counts `self` as 0 (flax's convention); inside `nn.scan` pass `prevent_cse=False`, which the
    scan makes safe and cheaper.
    """
    if config.remat == "none":
        return layer_cls
    return nn.remat(layer_cls, policy=_POLICIES[config.remat], static_argnums=static_argnums,
                    prevent_cse=prevent_cse)
