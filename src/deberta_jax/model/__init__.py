"""The DeBERTa network: relative positions, disentangled attention, embeddings, encoder and heads.

Import from the submodules (`deberta_jax.model.modeling` holds the models); this package file stays empty so that
`deberta_jax.config` can use `model.activations` without an import cycle.
"""
