"""Masked-LM pretraining model with the Enhanced Mask Decoder (EMD) of DeBERTa v1.

The encoder sees no absolute positions. Right before the MLM head, the EMD takes the input of the last encoder
layer as keys/values, adds absolute position embeddings to it to form the queries, and applies the last layer's
weights `emd_steps` times (each time querying with the previous output). Logits are computed only at the masked
positions.
"""

from __future__ import annotations

import jax.numpy as jnp

from deberta_jax.model.encoder import LayerInputs
from deberta_jax.model.layers import embed
from deberta_jax.model.modeling import DebertaForMaskedLM


def masked_lm_params(params: dict) -> dict:
    """`DebertaForMLMPretraining` params -> `DebertaForMaskedLM` params: the EMD's position table has no place in an
    HF masked-LM checkpoint."""
    return {k: v for k, v in params.items() if k != "emd_position_embeddings"}


class DebertaForMLMPretraining(DebertaForMaskedLM):
    """`DebertaForMaskedLM` params plus `emd_position_embeddings` [max_position, hidden].

    emd_steps: applications of the last layer in the decoder (0 disables the EMD: plain MLM on the last layer).
    emd_position_only_for_unchanged: the paper's variant in which selected tokens left unchanged enter the decoder
      as their position embedding alone, so the encoder output cannot leak the answer.
    """

    emd_steps: int = 2
    emd_position_only_for_unchanged: bool = False

    def setup(self):
        super().setup()
        if self.emd_steps > 0:
            cfg = self.config
            self.emd_position_embeddings = embed(cfg, cfg.max_position_embeddings, cfg.hidden_size,
                                                 ("position", "embed"))

    def enhanced_mask_decoder(self, received: LayerInputs, unchanged=None, deterministic=True):
        """
        Args:
          received: what the last encoder layer received (its hidden states become keys and values).
          unchanged: bool [B, N] or None.
        Returns:
          [B, N, hidden] decoder output.
        """
        last_layer_input = received.hidden_states
        seq_len = last_layer_input.shape[1]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings} of the EMD position table")
        positions = self.emd_position_embeddings(jnp.arange(seq_len))[None].astype(last_layer_input.dtype)
        query = last_layer_input + positions
        if self.emd_position_only_for_unchanged and unchanged is not None:
            query = jnp.where(unchanged[..., None], positions, query)
        for _ in range(self.emd_steps):
            query = self.deberta.rerun_last_layer(received, query, deterministic)
        return query

    def __call__(self, input_ids=None, *, masked_positions=None, unchanged=None, padded_vocab: bool = False,
                 deterministic: bool = True, **backbone_kwargs):
        """As DebertaForMaskedLM; `unchanged` (bool [B, N]) marks selected tokens left as they were."""
        decode = self.emd_steps > 0
        out = self.deberta(input_ids, deterministic=deterministic, output_last_layer_inputs=decode, **backbone_kwargs)
        if decode:
            hidden = self.enhanced_mask_decoder(out.last_layer_inputs, unchanged, deterministic)
            out = out.replace(last_hidden_state=hidden, last_layer_inputs=None)
        return self.head(out, deterministic, masked_positions, padded_vocab)
