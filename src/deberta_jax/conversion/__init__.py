"""Checkpoint conversion between HF (PyTorch layout) and deberta-jax params."""
