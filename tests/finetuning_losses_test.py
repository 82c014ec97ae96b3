"""Fine-tuning losses against transformers' sequence classification, SiFT, layer-wise LR decay."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deberta_jax.finetuning.losses import task_loss
from deberta_jax.finetuning.sift import SiftConfig, adversarial_perturbation, sift_loss, symmetric_divergence
from deberta_jax.training.optimizer import (
    OptimizerConfig, layer_decay_factors, learning_rate_schedule, make_optimizer,
)
from reference import jax_twin, padded_batch, random_hf_model


@pytest.mark.reference
@pytest.mark.parametrize("num_labels,labels", [
    (3, [0, 2, -1, 1]),          # a row labelled < 0 is dropped by the reference
    (2, [1, 0, 1, 1]),
    (1, [0.5, 4.2, 3.3, 1.0]),   # regression
])
def test_loss_equals_reference(num_labels, labels):
    hf_model = random_hf_model("v3", "sequence_classification", num_labels=num_labels)
    model, params = jax_twin(hf_model, "sequence_classification")
    ids, mask, _ = padded_batch(99, 4, 10)
    dtype = torch.float32 if num_labels == 1 else torch.long
    with torch.no_grad():
        ref = hf_model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                       labels=torch.tensor(labels, dtype=dtype)).loss.item()
    logits = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
    labels = jnp.asarray(labels, jnp.float32 if num_labels == 1 else jnp.int32)
    loss, _ = task_loss(logits, labels)
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5, atol=1e-6)


def test_padding_rows_do_not_count():
    logits = jnp.asarray([[2.0, 0.0], [0.0, 5.0], [9.0, -9.0]])
    full, _ = task_loss(logits[:2], jnp.asarray([0, 1]))
    padded, _ = task_loss(logits, jnp.asarray([0, 1, 1]), jnp.asarray([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(float(full), float(padded), rtol=1e-7)


@pytest.mark.reference
def test_zero_perturbation_changes_nothing_but_the_epsilon():
    """LayerNorm(normalise(x) + 0) equals LayerNorm(x) up to the epsilon inside the extra normalisation."""
    hf_model = random_hf_model("v3", "sequence_classification")
    model, params = jax_twin(hf_model, "sequence_classification")
    ids, mask, _ = padded_batch(99, 2, 9)
    clean = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
    zero = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                       embedding_perturbation=jnp.zeros((2, 9, 32))).logits
    np.testing.assert_allclose(np.asarray(zero), np.asarray(clean), rtol=0, atol=1e-5)


@pytest.mark.slow
@pytest.mark.reference
def test_sift_step_has_the_stated_size_and_leaves_params_alone():
    hf_model = random_hf_model("v3", "sequence_classification")
    model, params = jax_twin(hf_model, "sequence_classification")
    params = jax.tree_util.tree_map(jnp.asarray, params)
    ids, mask, _ = padded_batch(99, 2, 9)
    cfg = SiftConfig(step_size=1e-3)

    def logits_fn(p, perturbation):
        return model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                           embedding_perturbation=perturbation).logits

    clean = logits_fn(params, jnp.zeros((2, 9, 32)))
    initial, moved = adversarial_perturbation(logits_fn, params, clean, jax.random.PRNGKey(0), (2, 9, 32), cfg)
    assert np.abs(np.asarray(initial)).max() <= cfg.noise_clip == 2 * cfg.init_std
    assert 0.5 * cfg.init_std < np.asarray(initial).std() < 1.5 * cfg.init_std
    # One ascent step moves each token by step_size * m / (m + eps) in max-norm, m = max |gradient| of the token.
    grad = jax.grad(lambda d: symmetric_divergence(logits_fn(params, d), clean))(initial)
    m = np.abs(np.asarray(grad)).max(-1)
    step = np.abs(np.asarray(moved - initial)).max(-1)
    np.testing.assert_allclose(step, cfg.step_size * m / (m + cfg.grad_eps), rtol=1e-4)
    assert step.max() > 0
    # The ascent treats params as constants: the perturbation carries no gradient to them.
    grads = jax.grad(lambda p: jnp.sum(adversarial_perturbation(logits_fn, p, clean, jax.random.PRNGKey(0),
                                                                (2, 9, 32), cfg)[1]))(params)
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(grads))
    # ... while the adversarial loss itself trains them, and the ascent raised the divergence.
    adv_grads = jax.grad(lambda p: sift_loss(logits_fn, p, clean, jax.random.PRNGKey(0), (2, 9, 32), cfg))(params)
    assert max(float(np.abs(np.asarray(g)).max()) for g in jax.tree_util.tree_leaves(adv_grads)) > 0
    before = symmetric_divergence(logits_fn(params, initial), clean)
    after = symmetric_divergence(logits_fn(params, moved), clean)
    assert float(after) > float(before)


def test_symmetric_divergence_closed_form():
    a, b = jnp.log(jnp.asarray([[0.25, 0.75]])), jnp.log(jnp.asarray([[0.5, 0.5]]))
    p, q = np.array([0.25, 0.75]), np.array([0.5, 0.5])
    expected = np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p))
    np.testing.assert_allclose(float(symmetric_divergence(a, b)), expected, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.reference
def test_layer_decay_factors_and_their_effect():
    hf_model = random_hf_model("v3", "sequence_classification")
    _, params = jax_twin(hf_model, "sequence_classification")
    factors = layer_decay_factors(params, 2, 0.5)
    assert factors["deberta"]["encoder"]["layer_1"]["output"]["dense"]["kernel"] == 0.5
    assert factors["deberta"]["encoder"]["layer_0"]["output"]["dense"]["kernel"] == 0.25
    assert factors["deberta"]["embeddings"]["word_embeddings"]["embedding"] == 0.125
    assert factors["deberta"]["encoder"]["rel_embeddings"]["embedding"] == 0.125
    assert factors["classifier"]["kernel"] == 1.0
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    plain_cfg = OptimizerConfig(learning_rate=1e-2, weight_decay=0.0)
    decayed_cfg = OptimizerConfig(learning_rate=1e-2, weight_decay=0.0, layer_decay=0.5)
    plain = make_optimizer(plain_cfg, learning_rate_schedule(plain_cfg, 10))
    decayed = make_optimizer(decayed_cfg, learning_rate_schedule(decayed_cfg, 10), factors)
    u1, _ = plain.update(grads, plain.init(params), params)
    u2, _ = decayed.update(grads, decayed.init(params), params)
    for a, b, f in zip(jax.tree_util.tree_leaves(u1), jax.tree_util.tree_leaves(u2),
                       jax.tree_util.tree_leaves(factors)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a) * f, rtol=1e-6)
