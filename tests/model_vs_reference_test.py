"""Parity of every config family and head with `transformers`, run side by side on the same weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deberta_jax.model.attention import content_to_position, position_to_content, score_scale
from deberta_jax.model.relative_positions import relative_embedding_index
from reference import FAMILIES, assert_gradients_match, jax_twin, padded_batch, random_hf_model, to_torch

pytestmark = pytest.mark.reference

ATOL = 1e-5


def run_both(hf_model, model, params, ids, mask, types, **kwargs):
    tids, tmask, ttypes = to_torch(ids, mask, types)
    with torch.no_grad():
        ref = hf_model(tids, attention_mask=tmask, token_type_ids=ttypes, output_hidden_states=True, **kwargs)
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      token_type_ids=jnp.asarray(types), output_hidden_states=True)
    return ref, out


@pytest.mark.parametrize("seq", [6, 40], ids=["inside_buckets", "beyond_buckets"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_backbone_every_stage_matches(family, seq):
    hf_model = random_hf_model(family)
    model, params = jax_twin(hf_model)
    cfg = hf_model.config
    ids, mask, types = padded_batch(cfg.vocab_size, 3, seq, type_vocab=cfg.type_vocab_size)
    ref, out = run_both(hf_model, model, params, ids, mask, types)
    assert len(out.hidden_states) == len(ref.hidden_states) == cfg.num_hidden_layers + 1
    for stage, (mine, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        name = "embeddings" if stage == 0 else f"layer {stage - 1}"
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), rtol=0, atol=ATOL, err_msg=name)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref.last_hidden_state.numpy(), rtol=0, atol=ATOL)


@pytest.mark.slow
def test_released_bucket_settings_beyond_512_tokens():
    """position_buckets=256, max_relative_positions=512 (the released v3 values) at 600 tokens: offsets past
    ±511 take transformers' unclamped buckets."""
    hf_model = random_hf_model("v3", max_relative_positions=512, position_buckets=256, num_hidden_layers=1)
    model, params = jax_twin(hf_model)
    ids, mask, types = padded_batch(99, 2, 600)
    ref, out = run_both(hf_model, model, params, ids, mask, types)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref.last_hidden_state.numpy(), rtol=0, atol=ATOL)


@pytest.mark.slow
def test_sequence_longer_than_max_relative_positions_v1():
    # v1 family has max_relative_positions=16: offsets beyond it clamp to the table's ends.
    hf_model = random_hf_model("v1")
    model, params = jax_twin(hf_model)
    ids, mask, types = padded_batch(99, 2, 50, type_vocab=2)
    ref, out = run_both(hf_model, model, params, ids, mask, types)
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref.last_hidden_state.numpy(), rtol=0, atol=ATOL)


# `make test-fast` runs every head on v3; the other families' heads are slow.
HEAD_CASES = [pytest.param(f, h, marks=() if f == "v3" else pytest.mark.slow)
              for f in ("v1", "v3", "v3_embedding_size", "v2_conv_no_share")
              for h in ("masked_lm", "sequence_classification", "token_classification", "question_answering",
                        "multiple_choice") if not (f == "v1" and h == "multiple_choice")]


@pytest.mark.parametrize("family,head", HEAD_CASES)
def test_head_logits_match(family, head):
    hf_model = random_hf_model(family, head, num_labels=3 if head != "question_answering" else 2)
    model, params = jax_twin(hf_model, head)
    cfg = hf_model.config
    ids, mask, types = padded_batch(cfg.vocab_size, 4, 12, type_vocab=cfg.type_vocab_size)
    if head == "multiple_choice":
        ids, mask, types = (x.reshape(2, 2, 12) for x in (ids, mask, types))
    ref, out = run_both(hf_model, model, params, ids, mask, types)
    if head == "question_answering":
        np.testing.assert_allclose(np.asarray(out.start_logits), ref.start_logits.numpy(), rtol=0, atol=ATOL)
        np.testing.assert_allclose(np.asarray(out.end_logits), ref.end_logits.numpy(), rtol=0, atol=ATOL)
    else:
        assert out.logits.shape == tuple(ref.logits.shape)
        np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), rtol=0, atol=ATOL)


@pytest.mark.parametrize("legacy", [True, False])
def test_both_mlm_layouts(legacy):
    hf_model = random_hf_model("v3", "masked_lm", legacy=legacy)
    model, params = jax_twin(hf_model, "masked_lm")
    assert ("cls" in params) == legacy and ("lm_predictions" in params) != legacy
    ids, mask, types = padded_batch(99, 2, 10)
    ref, out = run_both(hf_model, model, params, ids, mask, types)
    np.testing.assert_allclose(np.asarray(out.logits), ref.logits.numpy(), rtol=0, atol=ATOL)


def test_masked_positions_give_the_same_logits_as_the_full_head():
    hf_model = random_hf_model("v3", "masked_lm")
    model, params = jax_twin(hf_model, "masked_lm")
    ids, mask, _ = padded_batch(99, 2, 10)
    full = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).logits
    positions = jnp.asarray([[1, 4, 7], [0, 2, 3]])
    part = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                       masked_positions=positions).logits
    np.testing.assert_allclose(np.asarray(part), np.asarray(jnp.take_along_axis(full, positions[..., None], 1)),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["v1", "v3", "v2_conv_no_share"])
def test_attention_probabilities_match(family):
    hf_model = random_hf_model(family)
    model, params = jax_twin(hf_model)
    ids, mask, types = padded_batch(99, 2, 9, type_vocab=hf_model.config.type_vocab_size)
    tids, tmask, ttypes = to_torch(ids, mask, types)
    with torch.no_grad():
        ref = hf_model(tids, attention_mask=tmask, token_type_ids=ttypes, output_attentions=True)
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      token_type_ids=jnp.asarray(types), output_attentions=True)
    for mine, theirs in zip(out.attentions, ref.attentions):
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), rtol=0, atol=ATOL)


def _rel_projection(params_layer, rel, name):
    kernel = np.asarray(params_layer[name]["kernel"])
    bias = np.asarray(params_layer[name]["bias"]) if "bias" in params_layer[name] else 0.0
    return rel @ kernel + bias


@pytest.mark.parametrize("seq", [7, 40])
def test_c2p_and_p2c_terms_match_reference_v3(seq):
    """Each relative term on its own, against the reference's `disentangled_attention_bias`."""
    hf_model = random_hf_model("v3")
    _, params = jax_twin(hf_model)
    cfg = hf_model.config
    heads, head_dim, span = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads, cfg.position_buckets
    rng = np.random.default_rng(1)
    q = rng.normal(size=(2, seq, heads, head_dim)).astype(np.float32)
    k = rng.normal(size=(2, seq, heads, head_dim)).astype(np.float32)
    attn = hf_model.encoder.layer[0].attention.self
    rel = hf_model.encoder.get_rel_embedding().detach().numpy()
    index = relative_embedding_index(seq, seq, span, span, cfg.max_relative_positions)
    layer = params["encoder"]["layer_0"]["attention"]["self"]
    pos_key = _rel_projection(layer, rel, "key_proj").reshape(-1, heads, head_dim)
    pos_query = _rel_projection(layer, rel, "query_proj").reshape(-1, heads, head_dim)
    scale = score_scale(head_dim, ("c2p", "p2c"))

    def torch_layout(x):  # [B, N, H, D] -> [B * H, N, D]
        return torch.from_numpy(x.transpose(0, 2, 1, 3).reshape(-1, seq, head_dim))

    rel_pos = torch.from_numpy(np.asarray(
        __import__("transformers").models.deberta_v2.modeling_deberta_v2.build_relative_position(
            torch.zeros(seq, 1), torch.zeros(seq, 1), cfg.position_buckets, cfg.max_relative_positions)))
    for term, mine in (("c2p", content_to_position(q, pos_key, index)),
                       ("p2c", position_to_content(k, pos_query, index))):
        attn.pos_att_type = [term]
        with torch.no_grad():
            theirs = attn.disentangled_attention_bias(torch_layout(q), torch_layout(k), rel_pos,
                                                      torch.from_numpy(rel), 3)
        theirs = theirs.numpy().reshape(2, heads, seq, seq)
        np.testing.assert_allclose(np.asarray(mine) / scale, theirs, rtol=0, atol=ATOL, err_msg=term)


def test_c2p_and_p2c_terms_match_reference_v1():
    hf_model = random_hf_model("v1")
    _, params = jax_twin(hf_model)
    cfg = hf_model.config
    seq, heads = 30, cfg.num_attention_heads
    head_dim, span = cfg.hidden_size // heads, cfg.max_relative_positions
    rng = np.random.default_rng(2)
    q = rng.normal(size=(2, seq, heads, head_dim)).astype(np.float32)
    k = rng.normal(size=(2, seq, heads, head_dim)).astype(np.float32)
    attn = hf_model.encoder.layer[1].attention.self
    rel = hf_model.encoder.get_rel_embedding().detach().numpy()
    index = relative_embedding_index(seq, seq, span)
    layer = params["encoder"]["layer_1"]["attention"]["self"]
    pos_key = _rel_projection(layer, rel, "pos_proj").reshape(-1, heads, head_dim)
    pos_query = _rel_projection(layer, rel, "pos_q_proj").reshape(-1, heads, head_dim)
    scale = score_scale(head_dim, ("c2p", "p2c"))
    rel_pos = torch.arange(seq)[:, None] - torch.arange(seq)[None, :]
    for term, mine in (("c2p", content_to_position(q, pos_key, index)),
                       ("p2c", position_to_content(k, pos_query, index) / scale)):
        attn.pos_att_type = [term]
        with torch.no_grad():  # v1 takes [B, H, N, D]
            theirs = attn.disentangled_att_bias(torch.from_numpy(q.transpose(0, 2, 1, 3)),
                                                torch.from_numpy(k.transpose(0, 2, 1, 3)), rel_pos[None],
                                                torch.from_numpy(rel), 3)
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), rtol=0, atol=ATOL, err_msg=term)


@pytest.mark.slow
@pytest.mark.parametrize("family,head", [("v1", "masked_lm"), ("v3", "sequence_classification"),
                                         ("v2_conv_no_share", "masked_lm"), ("v3_embedding_size", "masked_lm"),
                                         ("v2_abs_pos_token_types", "token_classification")])
def test_gradients_match(family, head):
    hf_model = random_hf_model(family, head)
    model, params = jax_twin(hf_model, head)
    assert_gradients_match(hf_model, model, params, head, seq=11)


def test_three_d_mask_matches_reference_encoder():
    """A [B, N, N] mask (here causal within the padded rows) through the reference encoder. (The reference's conv
    layer fails on 3-D masks, so this family has none.)"""
    hf_model = random_hf_model("v3")
    model, params = jax_twin(hf_model)
    ids, mask, types = padded_batch(99, 2, 10)
    causal = np.tril(np.ones((10, 10), np.int64))[None] * mask[:, None, :] * mask[:, :, None]
    tids, tmask, tcausal = to_torch(ids, mask, causal)
    with torch.no_grad():
        embedded = hf_model.embeddings(input_ids=tids, mask=tmask)
        ref = hf_model.encoder(embedded, tcausal).last_hidden_state.numpy()
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(causal))
    np.testing.assert_allclose(np.asarray(out.last_hidden_state), ref, rtol=0, atol=ATOL)


@pytest.mark.slow
def test_two_d_mask_equals_its_pairwise_three_d_form():
    hf_model = random_hf_model("v3")
    model, params = jax_twin(hf_model)
    ids, mask, _ = padded_batch(99, 3, 9)
    pair = mask[:, None, :] * mask[:, :, None]
    a = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).last_hidden_state
    b = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(pair)).last_hidden_state
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_dropout_is_active_only_when_not_deterministic():
    hf_model = random_hf_model("v3")
    model, params = jax_twin(hf_model)
    ids, mask, _ = padded_batch(99, 2, 8)
    det = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask))
    a = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), deterministic=False,
                    rngs={"dropout": jax.random.PRNGKey(0)})
    b = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), deterministic=False,
                    rngs={"dropout": jax.random.PRNGKey(1)})
    assert np.abs(np.asarray(a.last_hidden_state) - np.asarray(det.last_hidden_state)).max() > 1e-3
    assert np.abs(np.asarray(a.last_hidden_state) - np.asarray(b.last_hidden_state)).max() > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("family", ["v1", "v3"])
def test_bf16_compute_is_finite_and_close_to_fp32(family):
    hf_model = random_hf_model(family, "masked_lm")
    model, params = jax_twin(hf_model, "masked_lm")
    bf16_model, bf16_params = jax_twin(hf_model, "masked_lm", dtype="bfloat16")
    ids, mask, types = padded_batch(99, 2, 40, type_vocab=hf_model.config.type_vocab_size)
    kwargs = dict(attention_mask=jnp.asarray(mask), token_type_ids=jnp.asarray(types))
    full = model.apply({"params": params}, jnp.asarray(ids), **kwargs)
    half = bf16_model.apply({"params": bf16_params}, jnp.asarray(ids), **kwargs)
    assert half.last_hidden_state.dtype == jnp.bfloat16
    half_h = np.asarray(half.last_hidden_state, np.float32)
    assert np.isfinite(half_h).all()
    # LayerNorm'd outputs are O(1); bf16 keeps 8 mantissa bits, two layers stay within a few 1e-2.
    assert np.abs(half_h - np.asarray(full.last_hidden_state)).max() < 0.1
    assert np.abs(np.asarray(half.logits, np.float32) - np.asarray(full.logits)).max() < 0.1


@pytest.mark.slow
def test_attention_scores_do_not_overflow_in_half_precision():
    """Scores beyond float16's range (65504) stay finite: scores and softmax are always fp32."""
    hf_model = random_hf_model("v3")
    model, params = jax_twin(hf_model, dtype="float16", param_dtype="float32")
    big = jax.tree_util.tree_map(lambda x: x, params)
    layer = big["encoder"]["layer_0"]["attention"]["self"]
    for name in ("query_proj", "key_proj"):
        layer[name]["kernel"] = layer[name]["kernel"] * 60.0  # q·k ~ 1e5 after LayerNorm'd inputs
    ids, mask, _ = padded_batch(99, 2, 8)
    out = model.apply({"params": big}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), output_attentions=True)
    assert np.isfinite(np.asarray(out.attentions[0])).all()
    assert np.isfinite(np.asarray(out.last_hidden_state, np.float32)).all()
