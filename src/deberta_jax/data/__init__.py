"""Pretraining data (text corpora, packed sequences prepared once into sharded files and read through grain with
resumable state, MLM/RTD masking) and, in `glue/`, GLUE's tasks, readers and bucketed batches."""
