"""SiFT: virtual adversarial fine-tuning on normalised word embeddings (microsoft/DeBERTa's sift).

The perturbation lives after a LayerNorm without affine parameters of the embedding sum and before the model's
own embedding LayerNorm (see `DebertaEmbeddings`). One ascent step, normalised per token by the largest absolute
gradient over the hidden axis, moves it towards the largest change of the predictions; the ascent uses frozen
parameters. The loss added to the task loss is the symmetric KL between the perturbed and clean predictions.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from deberta_jax.config_tree import Section


@dataclasses.dataclass(frozen=True)
class SiftConfig(Section):
    enabled: bool = False        # add the adversarial term to fine-tuning's loss
    weight: float = 1.0          # scale of the adversarial term in the loss
    init_std: float = 0.01       # initial noise N(0, init_std)
    init_clip: float | None = None  # ... clipped to +-init_clip; None: 2 * init_std
    step_size: float = 1e-3      # max-abs size per token of the ascent step
    grad_eps: float = 1e-6

    def checks(self):
        return [(getattr(self, name) is None or getattr(self, name) >= 0, name, "must be >= 0")
                for name in ("weight", "init_std", "init_clip", "step_size", "grad_eps")]

    @property
    def noise_clip(self) -> float:
        return 2 * self.init_std if self.init_clip is None else self.init_clip


def symmetric_divergence(logits_a, logits_b):
    """KL(p||q) + KL(q||p) over classes, averaged over rows; squared error for one output (regression)."""
    a, b = logits_a.astype(jnp.float32), logits_b.astype(jnp.float32)
    if a.shape[-1] == 1:
        return jnp.mean((a - b) ** 2)
    log_p, log_q = jax.nn.log_softmax(a, -1), jax.nn.log_softmax(b, -1)
    p, q = jnp.exp(log_p), jnp.exp(log_q)
    return jnp.mean(jnp.sum(p * (log_p - log_q) + q * (log_q - log_p), axis=-1))


def adversarial_perturbation(logits_fn: Callable, params, clean_logits, rng, shape, cfg: SiftConfig):
    """Initial noise and the perturbation after one ascent step, both [B, N, hidden] and gradient-free.

    logits_fn(params, perturbation) -> logits. The ascent differentiates with respect to the perturbation only.
    """
    frozen = jax.lax.stop_gradient(params)
    target = jax.lax.stop_gradient(clean_logits)
    initial = jnp.clip(cfg.init_std * jax.random.normal(rng, shape), -cfg.noise_clip, cfg.noise_clip)
    grad = jax.grad(lambda d: symmetric_divergence(logits_fn(frozen, d), target))(initial)
    scale = jnp.max(jnp.abs(grad), axis=-1, keepdims=True) + cfg.grad_eps
    return initial, jax.lax.stop_gradient(initial + cfg.step_size * grad / scale)


def sift_loss(logits_fn: Callable, params, clean_logits, rng, shape, cfg: SiftConfig):
    """The adversarial term: symmetric divergence between predictions under the ascended perturbation and the
    (fixed) clean predictions; its gradient reaches the params through the perturbed pass only."""
    _, perturbation = adversarial_perturbation(logits_fn, params, clean_logits, rng, shape, cfg)
    return symmetric_divergence(logits_fn(params, perturbation), jax.lax.stop_gradient(clean_logits))
