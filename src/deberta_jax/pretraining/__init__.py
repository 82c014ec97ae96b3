"""Pretraining objectives: MLM with the Enhanced Mask Decoder (v1) and replaced-token detection (v3)."""
