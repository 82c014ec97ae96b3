"""Pretraining data (text corpora and packed sequences, batching with resumable state, MLM/RTD masking) and, in
`glue/`, GLUE's tasks, readers and bucketed batches."""
