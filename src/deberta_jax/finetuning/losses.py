"""Sequence-classification and regression losses with transformers' conventions, as pure functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def classification_loss(logits, labels, weights=None):
    """Mean cross-entropy over rows with a label >= 0 (the reference drops rows labelled < 0).

    Args:
      logits: [B, C]; labels: int [B]; weights: [B] (0 for padding rows) or None.
    Returns:
      (loss, accuracy) over the counted rows; 0 when none counts.
    """
    counted = (labels >= 0).astype(jnp.float32)
    if weights is not None:
        counted = counted * weights.astype(jnp.float32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
    total = jnp.maximum(counted.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return (nll * counted).sum() / total, (correct * counted).sum() / total


def regression_loss(logits, labels, weights=None):
    """Mean squared error of the single output (num_labels = 1). logits [B, 1], labels float [B]."""
    weights = jnp.ones(labels.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
    error = (logits[:, 0].astype(jnp.float32) - labels.astype(jnp.float32)) ** 2
    return (error * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def task_loss(logits, labels, weights=None):
    """Regression for one output column, classification otherwise. Returns (loss, metrics)."""
    if logits.shape[-1] == 1:
        loss = regression_loss(logits, labels, weights)
        return loss, {"loss": loss}
    loss, accuracy = classification_loss(logits, labels, weights)
    return loss, {"loss": loss, "accuracy": accuracy}
