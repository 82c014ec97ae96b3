"""The DeBERTa network: relative positions, disentangled attention, embeddings, encoder and heads.

Import from the submodules (`deberta_jax.model.modeling` holds the models).
"""
