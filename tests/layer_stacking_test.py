"""The scanned layer layout: conversion both ways, and the optimizer treating stacked layers like separate ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deberta_jax.config import DebertaConfig
from deberta_jax.model.layer_stacking import stack_layers, unstack_layers
from deberta_jax.model.modeling import build_model, init_params
from deberta_jax.sharding.rules import DEFAULT_RULES
from deberta_jax.training.optimizer import decay_mask, layer_decay_factors

TINY = DebertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=24,
                     max_position_embeddings=32, relative_attention=True, position_buckets=4,
                     max_relative_positions=16, norm_rel_ebd="layer_norm", share_att_key=True,
                     pos_att_type=("c2p", "p2c"), position_biased_input=False)


def _leaves_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
@pytest.mark.parametrize("conv", [0, 3])
def test_stacked_layout_is_what_the_scanned_model_initialises(conv):
    per_layer = init_params(build_model(TINY.replace(conv_kernel_size=conv), "masked_lm"), jax.random.PRNGKey(0))
    scanned_model = build_model(TINY.replace(conv_kernel_size=conv, scan_layers=True), "masked_lm")
    scanned = jax.eval_shape(lambda: init_params(scanned_model, jax.random.PRNGKey(0)))
    stacked = stack_layers(per_layer)
    assert jax.tree_util.tree_structure(stacked) == jax.tree_util.tree_structure(scanned)
    for x, y in zip(jax.tree_util.tree_leaves(stacked), jax.tree_util.tree_leaves(scanned)):
        assert x.shape == y.shape
    encoder = stacked["deberta"]["encoder"]
    assert ("layer_0" in encoder) == (conv > 0)  # beside a conv branch layer_0 stays out of the scan
    assert encoder["layers"]["attention"]["self"]["query_proj"]["kernel"].shape[0] == 3 - (conv > 0)
    _leaves_equal(unstack_layers(stacked), per_layer)


@pytest.mark.slow
def test_scanned_model_equals_the_loop_on_converted_params():
    model = build_model(TINY, None)
    scanned = build_model(TINY.replace(scan_layers=True), None)
    params = init_params(model, jax.random.PRNGKey(1))
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 50, (2, 9)))
    a = model.apply({"params": params}, ids, output_hidden_states=True)
    b = scanned.apply({"params": stack_layers(params)}, ids, output_hidden_states=True)
    assert len(a.hidden_states) == len(b.hidden_states) == 4
    for x, y in zip(a.hidden_states, b.hidden_states):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-6)


def test_layer_numbers_must_be_contiguous():
    params = {"encoder": {"layer_0": {"w": np.zeros(2)}, "layer_2": {"w": np.zeros(2)}}}
    with pytest.raises(ValueError, match=r"numbered 0..1; got \[0, 2\]"):
        stack_layers(params)


def _matches_per_layer(stacked_values, per_layer_values):
    """Each stacked leaf holds, slice by slice, the per-layer values (stacking them gives [layers] arrays)."""
    expected = stack_layers(jax.tree_util.tree_map(np.asarray, per_layer_values))
    for got, want in zip(jax.tree_util.tree_leaves(stacked_values), jax.tree_util.tree_leaves(expected)):
        want = np.asarray(want, np.float64).reshape(-1)
        np.testing.assert_allclose(np.broadcast_to(np.asarray(got, np.float64).reshape(-1), want.shape), want)


@pytest.mark.slow
@pytest.mark.parametrize("conv", [0, 3])
def test_optimizer_treats_stacked_layers_like_separate_ones(conv):
    """Biases and LayerNorm scales of scanned layers are 2-D [layers, width] yet get no weight decay, and layer i
    keeps its own layer-wise learning-rate factor decay**(L - i)."""
    params = init_params(build_model(TINY.replace(conv_kernel_size=conv), "masked_lm"), jax.random.PRNGKey(0))
    stacked = stack_layers(params)
    _matches_per_layer(decay_mask(stacked), decay_mask(params))
    _matches_per_layer(layer_decay_factors(stacked, 3, 0.8), layer_decay_factors(params, 3, 0.8))


def test_layer_axis_has_a_sharding_rule():
    assert ("layers", None) in DEFAULT_RULES
