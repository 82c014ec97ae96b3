"""Pretraining objectives: the EMD against the reference layer, RTD labels, GDES / ES / NES gradient flow."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deberta_jax.config import DebertaConfig
from deberta_jax.conversion.hf_checkpoint import save_pretrained, state_dict_to_params
from deberta_jax.model.modeling import DebertaModel, init_params
from deberta_jax.pretraining.emd import DebertaForMLMPretraining
from deberta_jax.pretraining.losses import masked_lm_loss, replace_tokens, rtd_loss
from deberta_jax.pretraining.objectives import rtd_loss_fn
from deberta_jax.pretraining.rtd import ReplacedTokenDetection, export_discriminator_params, generator_config
from reference import padded_batch, random_hf_model

TINY_V3 = DebertaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=64, relative_attention=True,
                        position_buckets=8, max_relative_positions=64, norm_rel_ebd="layer_norm",
                        share_att_key=True, pos_att_type=("p2c", "c2p"), position_biased_input=False)


def _emd_model_with_reference_weights(family, **config_overrides):
    hf_model = random_hf_model(family, "masked_lm")
    config = DebertaConfig.from_hf_dict(hf_model.config.to_dict(), **config_overrides)
    model = DebertaForMLMPretraining(config, emd_steps=2)
    state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
    params, report = state_dict_to_params(state, model)
    assert report.missing == ["emd_position_embeddings.weight"]
    positions = np.random.default_rng(5).normal(size=(config.max_position_embeddings, config.hidden_size))
    params["emd_position_embeddings"]["embedding"] = positions.astype(np.float32)
    return hf_model, model, params


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("scan_layers", [False, True])
def test_emd_matches_reference_layer_applied_twice(scan_layers):
    """Keys/values = input of the last layer, query = that input + absolute positions, the last layer twice:
    computed with transformers' own layer (its `query_states` path) and its MLM head. With scan_layers the last
    layer's parameters live stacked inside the scan and are sliced out for the decoder."""
    hf_model, model, params = _emd_model_with_reference_weights("v3", scan_layers=scan_layers)
    ids, mask, _ = padded_batch(99, 2, 12)
    positions = np.array([[1, 3, 5], [2, 4, 6]])
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      masked_positions=jnp.asarray(positions), output_hidden_states=True)
    tids, tmask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        ref = hf_model.deberta(tids, attention_mask=tmask, output_hidden_states=True)
        encoder = hf_model.deberta.encoder
        hidden = ref.hidden_states[-2]
        query = hidden + torch.from_numpy(params["emd_position_embeddings"]["embedding"][:12])[None]
        pair_mask = encoder.get_attention_mask(tmask)
        rel_pos = encoder.get_rel_pos(hidden)
        for _ in range(2):
            query, _ = encoder.layer[-1](hidden, pair_mask, query_states=query, relative_pos=rel_pos,
                                         rel_embeddings=encoder.get_rel_embedding())
        np.testing.assert_allclose(np.asarray(out.last_hidden_state), query.numpy(), rtol=0, atol=1e-5)
        gathered = query[torch.arange(2)[:, None], torch.from_numpy(positions)]
        np.testing.assert_allclose(np.asarray(out.logits), hf_model.cls(gathered).numpy(), rtol=0, atol=1e-5)


@pytest.mark.reference
@pytest.mark.parametrize("family", [pytest.param("v1", marks=pytest.mark.slow), "v3"])
def test_emd_one_step_without_positions_is_the_last_layer(family):
    """Invariant: with zero position embeddings, one decoder step recomputes the encoder's last layer."""
    hf_model, _, params = _emd_model_with_reference_weights(family)
    params["emd_position_embeddings"]["embedding"] = np.zeros_like(params["emd_position_embeddings"]["embedding"])
    model = DebertaForMLMPretraining(DebertaConfig.from_hf_dict(hf_model.config.to_dict()), emd_steps=1)
    ids, mask, types = padded_batch(99, 2, 10, type_vocab=hf_model.config.type_vocab_size)
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      token_type_ids=jnp.asarray(types), masked_positions=jnp.zeros((2, 1), jnp.int32),
                      output_hidden_states=True)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), np.asarray(out.hidden_states[-1]),
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_emd_position_only_for_unchanged_tokens():
    config = TINY_V3
    plain = DebertaForMLMPretraining(config, emd_steps=2)
    variant = DebertaForMLMPretraining(config, emd_steps=2, emd_position_only_for_unchanged=True)
    params = init_params(plain, jax.random.PRNGKey(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(4, 64, size=(1, 8)))
    unchanged = jnp.zeros((1, 8), bool).at[0, 3].set(True)
    positions = jnp.asarray([[3, 5]])
    a = plain.apply({"params": params}, ids, masked_positions=positions, unchanged=unchanged).logits
    b = variant.apply({"params": params}, ids, masked_positions=positions, unchanged=unchanged).logits
    c = variant.apply({"params": params}, ids, masked_positions=positions, unchanged=jnp.zeros((1, 8), bool)).logits
    assert np.abs(np.asarray(a - b)).max() > 1e-4      # the unchanged token's query differs
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=0, atol=1e-6)


def test_replace_tokens_labels_by_hand():
    original = jnp.asarray([[1, 10, 11, 12, 2, 0], [1, 20, 21, 2, 0, 0]])
    positions = jnp.asarray([[1, 3, 0], [2, 0, 0]])
    samples = jnp.asarray([[10, 30, 99], [40, 98, 97]])   # 10 == original: not a replacement
    weights = jnp.asarray([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    inputs, labels = replace_tokens(original, positions, samples, weights)
    np.testing.assert_array_equal(inputs, [[1, 10, 11, 30, 2, 0], [1, 20, 40, 2, 0, 0]])
    np.testing.assert_array_equal(labels, [[0, 0, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]])


def test_losses_closed_form():
    logits = jnp.asarray([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    loss, acc = masked_lm_loss(logits, jnp.asarray([[0, 2]]), jnp.asarray([[1.0, 1.0]]))
    expected = (-np.log(np.exp(2) / (np.exp(2) + 2)) - np.log(1 / (np.e + 2))) / 2
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert acc == 0.5
    rtd_logits = jnp.asarray([[3.0, -1.0, 0.5, 9.0]])
    loss, acc = rtd_loss(rtd_logits, jnp.asarray([[1, 0, 0, 1]]), jnp.asarray([[1, 1, 1, 0]]))
    bce = [np.log1p(np.exp(-3.0)), np.log1p(np.exp(-1.0)), np.log1p(np.exp(0.5))]
    np.testing.assert_allclose(loss, np.mean(bce), rtol=1e-6)
    np.testing.assert_allclose(acc, 2 / 3, rtol=1e-6)


def _rtd_setup(sharing):
    gen = generator_config(TINY_V3)
    model = ReplacedTokenDetection(gen, TINY_V3, sharing)
    ids = jnp.asarray(np.random.default_rng(0).integers(4, 64, size=(2, 10)))
    params = init_params_rtd(model, ids)
    batch = {"input_ids": ids.at[:, 3].set(63), "original_ids": ids, "attention_mask": jnp.ones((2, 10), jnp.int32),
             "masked_positions": jnp.asarray([[3, 5], [3, 7]]), "masked_labels": ids[:, jnp.asarray([3, 5])],
             "masked_weights": jnp.ones((2, 2))}
    return model, params, batch


def init_params_rtd(model, ids):
    import flax.linen as nn
    return nn.meta.unbox(model.init(jax.random.PRNGKey(0), ids)["params"])


def _rtd_only_grads(model, params, batch):
    """Gradient of the RTD term alone (the MLM term weighted 0 is removed by subtracting its gradient)."""
    full = jax.grad(lambda p: rtd_loss_fn(model, rtd_weight=1.0)(p, batch, jax.random.PRNGKey(1))[0])(params)
    mlm = jax.grad(lambda p: rtd_loss_fn(model, rtd_weight=0.0)(p, batch, jax.random.PRNGKey(1))[0])(params)
    return jax.tree_util.tree_map(lambda a, b: a - b, full, mlm), mlm


@pytest.mark.slow
def test_gdes_rtd_gradient_reaches_only_the_delta():
    model, params, batch = _rtd_setup("gdes")
    assert "word_embeddings" not in params["discriminator"]["embeddings"]
    assert not np.any(np.asarray(params["embedding_delta"]))          # E_delta starts at zero
    rtd_grads, mlm_grads = _rtd_only_grads(model, params, batch)
    gen_table = lambda g: np.asarray(g["generator"]["deberta"]["embeddings"]["word_embeddings"]["embedding"])
    assert np.all(gen_table(rtd_grads) == 0.0)                          # exactly zero, not small
    assert np.abs(np.asarray(rtd_grads["embedding_delta"])).max() > 0
    assert np.all(np.asarray(mlm_grads["embedding_delta"]) == 0.0)       # the generator never sees E_delta
    assert np.abs(gen_table(mlm_grads)).max() > 0


@pytest.mark.slow
def test_es_rtd_gradient_reaches_the_shared_table():
    model, params, batch = _rtd_setup("es")
    assert "embedding_delta" not in params and "word_embeddings" not in params["discriminator"]["embeddings"]
    rtd_grads, _ = _rtd_only_grads(model, params, batch)
    table = rtd_grads["generator"]["deberta"]["embeddings"]["word_embeddings"]["embedding"]
    assert np.abs(np.asarray(table)).max() > 0


@pytest.mark.slow
def test_nes_tables_are_separate():
    model, params, batch = _rtd_setup("nes")
    rtd_grads, _ = _rtd_only_grads(model, params, batch)
    gen = rtd_grads["generator"]["deberta"]["embeddings"]["word_embeddings"]["embedding"]
    disc = rtd_grads["discriminator"]["embeddings"]["word_embeddings"]["embedding"]
    assert np.all(np.asarray(gen) == 0.0) and np.abs(np.asarray(disc)).max() > 0


def test_generator_is_half_depth():
    assert generator_config(TINY_V3.replace(num_hidden_layers=12)).num_hidden_layers == 6
    assert generator_config(TINY_V3.replace(num_hidden_layers=24)).num_hidden_layers == 12


@pytest.mark.slow
@pytest.mark.reference
def test_exported_gdes_discriminator_loads_in_transformers(tmp_path):
    import transformers
    model, params, _ = _rtd_setup("gdes")
    params["embedding_delta"] = jnp.full_like(params["embedding_delta"], 0.25)
    disc = export_discriminator_params(params)
    save_pretrained(tmp_path, DebertaModel(TINY_V3), disc)
    hf = transformers.AutoModel.from_pretrained(tmp_path)
    table = np.asarray(params["generator"]["deberta"]["embeddings"]["word_embeddings"]["embedding"])[:64] + 0.25
    np.testing.assert_array_equal(hf.embeddings.word_embeddings.weight.detach().numpy(), table)
    ids = np.random.default_rng(2).integers(4, 64, size=(1, 9))
    ours = DebertaModel(TINY_V3).apply({"params": disc}, jnp.asarray(ids)).last_hidden_state
    via_rtd = model.apply({"params": params}, jnp.asarray(ids), jnp.ones((1, 9), jnp.int32),
                          method=lambda m, i, a: m.discriminator(attention_mask=a, inputs_embeds=jnp.take(
                              m.discriminator_word_table(), i, axis=0)).last_hidden_state)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(via_rtd), rtol=0, atol=1e-6)
    with torch.no_grad():
        theirs = hf(torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-5)
