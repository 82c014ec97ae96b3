"""What pretraining and fine-tuning share: optimizer, train state, sharded train step, checkpoints, logging."""
