"""Masked-LM pretraining model with the Enhanced Mask Decoder (EMD) of DeBERTa v1.

The encoder sees no absolute positions. Right before the MLM head, the EMD takes the input of the last encoder
layer as keys/values, adds absolute position embeddings to it to form the queries, and applies the last layer's
weights `emd_steps` times (each time querying with the previous output). Logits are computed only at the masked
positions.
"""

from __future__ import annotations

import jax.numpy as jnp

from deberta_jax.model.layers import embed
from deberta_jax.model.modeling import DebertaForMaskedLM


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

    def enhanced_mask_decoder(self, last_layer_input, attention_mask, unchanged=None, deterministic=True):
        """
        Args:
          last_layer_input: [B, N, hidden], the hidden states entering the last encoder layer.
          attention_mask: [B, N] or [B, N, N]; unchanged: bool [B, N] or None.
        Returns:
          [B, N, hidden] decoder output.
        """
        seq_len = last_layer_input.shape[1]
        if seq_len > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {seq_len} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings} of the EMD position table")
        encoder = self.deberta.encoder
        rel_embeddings = encoder.relative_table()
        positions = self.emd_position_embeddings(jnp.arange(seq_len))[None].astype(last_layer_input.dtype)
        query = last_layer_input + positions
        if self.emd_position_only_for_unchanged and unchanged is not None:
            query = jnp.where(unchanged[..., None], positions, query)
        for _ in range(self.emd_steps):
            query = encoder.last_layer(last_layer_input, attention_mask, rel_embeddings, query, deterministic)
        return query

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                 inputs_embeds=None, deterministic: bool = True, output_hidden_states: bool = False,
                 output_attentions: bool = False, masked_positions=None, unchanged=None):
        """As DebertaForMaskedLM; `unchanged` (bool [B, N]) marks selected tokens left as they were."""
        if attention_mask is None:
            shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:2]
            attention_mask = jnp.ones(shape, jnp.int32)
        out = self.deberta(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds, deterministic,
                           self.emd_steps > 0 or output_hidden_states, output_attentions)
        hidden = out.last_hidden_state
        if self.emd_steps > 0:
            hidden = self.enhanced_mask_decoder(out.hidden_states[-2], attention_mask, unchanged, deterministic)
            if not output_hidden_states:
                out = out.replace(hidden_states=None)
        return self.head(out.replace(last_hidden_state=hidden), deterministic, masked_positions)
