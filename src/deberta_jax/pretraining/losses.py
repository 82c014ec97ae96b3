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


SAMPLING_BLOCK = 128  # ids per block of the two-level sampler (the padded v3 vocabulary is 1001 of them)


def replacement_noise(rng, prefix: tuple, vocab: int, block: int = SAMPLING_BLOCK, dtype=jnp.float32):
    """The Gumbel noise of one `sample_replacements` call: ([*prefix, ceil(vocab / block)] for the blocks,
    [*prefix, block] for the ids within the drawn block)."""
    block_rng, id_rng = jax.random.split(rng)
    return (jax.random.gumbel(block_rng, (*prefix, -(-vocab // block)), dtype),
            jax.random.gumbel(id_rng, (*prefix, block), dtype))


def sample_replacements(rng, logits, temperature: float = 1.0, vocab_size: int | None = None,
                        block: int = SAMPLING_BLOCK):
    """Samples from the generator's full softmax at `temperature`; no gradient flows through sampling.
    [B, M, padded_vocab] -> [B, M].

    Two levels, each a Gumbel-max draw: a block of `block` ids with probability its softmax mass (logsumexp of its
    logits), then an id within that block in proportion to exp(logit). The product is exactly the softmax over the
    ids, and the noise is [B, M, blocks + block] where one draw over the vocabulary needs [B, M, vocab]: on a v3
    vocabulary 1129 numbers per slot instead of 128128 (jax.random.categorical wrote that fp32 tensor each step).
    Ids from `vocab_size` (default: all of the last axis) on are padding and never drawn.
    """
    logits = jax.lax.stop_gradient(_at_least_f32(logits)) / temperature
    vocab_size = logits.shape[-1] if vocab_size is None else vocab_size
    prefix, blocks = logits.shape[:-1], -(-vocab_size // block)
    width = blocks * block
    if logits.shape[-1] < width:
        logits = jnp.pad(logits, [(0, 0)] * len(prefix) + [(0, width - logits.shape[-1])])
    # a mask, not a slice: on a padded vocabulary (v3: 128128 = 1001 x 128) it fuses into the block reduction
    logits = jnp.where(jnp.arange(width) < vocab_size, logits[..., :width], -jnp.inf).reshape(*prefix, blocks, block)
    block_noise, id_noise = replacement_noise(rng, prefix, vocab_size, block, logits.dtype)
    chosen = jnp.argmax(jax.nn.logsumexp(logits, axis=-1) + block_noise, axis=-1)
    within = jnp.take_along_axis(logits, chosen[..., None, None], axis=-2)[..., 0, :]
    return chosen * block + jnp.argmax(within + id_noise, axis=-1)


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
