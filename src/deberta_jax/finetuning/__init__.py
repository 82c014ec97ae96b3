"""GLUE fine-tuning: metrics, submission files, losses and the training loop."""
