"""Pretraining losses and the generator -> discriminator hand-off, as pure functions."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _at_least_f32(x):
    """fp32, or float64 when x already is."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def masked_lm_loss(logits, labels, weights):
    """Weighted mean cross-entropy and accuracy over prediction slots.

    Args:
      logits: [B, M, vocab] (or the padded vocabulary, the padded ids' logits at the dtype's minimum); labels: int
        [B, M]; weights: [B, M] (0 for padding slots).
    Returns:
      (loss, accuracy), fp32 scalars (float64 for float64 logits); 0 when no slot has weight.
    """
    # log p(label) = logit(label) - logsumexp(logits): reduces over the vocabulary without writing the fp32
    # log-softmax (on a v3 vocabulary, 4 bytes per slot and id, written and read back); the label's logit is
    # gathered from the logits as they are.
    label_logits = _at_least_f32(jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0])
    nll = jax.nn.logsumexp(_at_least_f32(logits), axis=-1) - label_logits
    weights = weights.astype(jnp.float32)
    total = jnp.maximum(weights.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return (nll * weights).sum() / total, (correct * weights).sum() / total


def sample_replacements(rng, logits, temperature: float = 1.0, vocab_size: int | None = None):
    """Samples from the generator's full softmax; no gradient flows through sampling. [B, M, padded_vocab] ->
    [B, M].

    Ids from `vocab_size` (default: all of the last axis) on are padding and never drawn. The Gumbel noise is
    drawn over the `vocab_size` real ids only, so the samples are `jax.random.categorical`'s on the unpadded
    logits, whatever the padding.
    """
    logits = jax.lax.stop_gradient(_at_least_f32(logits))
    vocab_size = logits.shape[-1] if vocab_size is None else vocab_size
    noise = jax.random.gumbel(rng, logits.shape[:-1] + (vocab_size,), logits.dtype)
    padding = [(0, 0)] * (logits.ndim - 1) + [(0, logits.shape[-1] - vocab_size)]
    noise = jnp.pad(noise, padding, constant_values=-jnp.inf)
    return jnp.argmax(logits / temperature + noise, axis=-1)


def replace_tokens(original_ids, masked_positions, samples, masked_weights):
    """Discriminator inputs and labels.

    Writes the generator's samples into the original sequence at the masked positions (padding slots, weight 0,
    write nothing). A token is labelled replaced only where the sample differs from the original: a sample equal
    to the original counts as original.

    Args:
      original_ids: int [B, N]; masked_positions, samples: int [B, M]; masked_weights: [B, M].
    Returns:
      (input_ids int [B, N], labels int32 [B, N] with 1 = replaced).
    """
    rows = jnp.arange(original_ids.shape[0])[:, None]
    current = original_ids[rows, masked_positions]
    values = jnp.where(masked_weights > 0, samples.astype(original_ids.dtype), current)
    inputs = original_ids.at[rows, masked_positions].set(values)
    return inputs, (inputs != original_ids).astype(jnp.int32)


def rtd_loss(logits, labels, attention_mask):
    """Binary cross-entropy and accuracy of replaced-token detection over non-pad tokens.

    Args:
      logits: [B, N]; labels: {0, 1} [B, N]; attention_mask: [B, N].
    """
    logits = _at_least_f32(logits)
    mask = attention_mask.astype(jnp.float32)
    total = jnp.maximum(mask.sum(), 1.0)
    bce = jnp.maximum(logits, 0) - logits * labels + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    correct = ((logits > 0).astype(jnp.int32) == labels).astype(jnp.float32)
    return (bce * mask).sum() / total, (correct * mask).sum() / total
