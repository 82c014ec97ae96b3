"""Pretraining data: text corpora and packed sequences, batching with resumable state, MLM/RTD masking."""
