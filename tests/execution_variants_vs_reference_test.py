"""Every way of computing the same network against `transformers`, side by side on the same weights.

The default path (dense attention with a gather, a Python loop over layers) is covered stage by stage in
model_vs_reference_test.py; here the gather-free skew, the fused kernels and the scanned layer stack are held to
the same reference model, outputs and gradients, over the config families.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from reference import FAMILIES, assert_gradients_match, jax_twin, padded_batch, random_hf_model, to_torch

pytestmark = pytest.mark.reference

ATOL = 1e-5
VARIANTS = {
    "skew": dict(attention_impl="skew"),
    "chunked": dict(attention_impl="chunked"),
    "pallas": dict(attention_impl="pallas"),
    "auto": dict(attention_impl="auto"),
    "scan_layers": dict(scan_layers=True),
    "scan_layers_remat_chunked": dict(scan_layers=True, remat="full", attention_impl="chunked"),
}
# Fused attention mixes no heads after the softmax, so v1's talking heads are out of its reach by design. The
# Pallas kernel (run in interpret mode here, which is slow) needs head_dim a power of two >= 16: its families get
# 2 heads of 16; the combined variant runs where the structure differs most (v1 fused in_proj, v2 conv, v3).
FAMILIES_OF = {
    "chunked": [f for f in sorted(FAMILIES) if f != "v1_talking_head"],
    "pallas": ["v1", "v3"],
    "auto": ["v1", "v3"],
    "scan_layers_remat_chunked": ["v1", "v2_conv_no_share", "v3"],
}
REFERENCE_OVERRIDES = {"pallas": dict(num_attention_heads=2), "auto": dict(num_attention_heads=2)}
# `make test-fast` runs each variant on v3 inside the buckets; the rest of the grid is slow.
FAMILY_GRID = [pytest.param(variant, family, marks=() if family == "v3" else pytest.mark.slow)
               for variant in VARIANTS for family in FAMILIES_OF.get(variant, sorted(FAMILIES))]


@pytest.mark.parametrize("seq", [6, pytest.param(40, marks=pytest.mark.slow)],
                         ids=["inside_buckets", "beyond_buckets"])
@pytest.mark.parametrize("variant,family", FAMILY_GRID)
def test_backbone_matches_reference(variant, family, seq):
    hf_model = random_hf_model(family, **REFERENCE_OVERRIDES.get(variant, {}))
    model, params = jax_twin(hf_model, **VARIANTS[variant], attention_block_q=16, attention_block_k=16)
    cfg = hf_model.config
    ids, mask, types = padded_batch(cfg.vocab_size, 3, seq, type_vocab=cfg.type_vocab_size)
    tids, tmask, ttypes = to_torch(ids, mask, types)
    with torch.no_grad():
        ref = hf_model(tids, attention_mask=tmask, token_type_ids=ttypes, output_hidden_states=True)
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      token_type_ids=jnp.asarray(types), output_hidden_states=True)
    for stage, (mine, theirs) in enumerate(zip(out.hidden_states, ref.hidden_states)):
        np.testing.assert_allclose(np.asarray(mine), theirs.numpy(), rtol=0, atol=ATOL, err_msg=f"stage {stage}")


GRADIENT_CASES = [("v1", "masked_lm"), ("v3", "sequence_classification"), ("v2_conv_no_share", "masked_lm"),
                  ("v3_p2c_only", "masked_lm")]


@pytest.mark.slow
@pytest.mark.parametrize("variant,family,head", [(v, f, h) for v in VARIANTS for f, h in GRADIENT_CASES
                                                 if f in FAMILIES_OF.get(v, FAMILIES)])
def test_gradients_match_reference(variant, family, head):
    hf_model = random_hf_model(family, head, **REFERENCE_OVERRIDES.get(variant, {}))
    model, params = jax_twin(hf_model, head, **VARIANTS[variant], attention_block_q=16, attention_block_k=16)
    assert_gradients_match(hf_model, model, params, head, seq=19)


def _hlo_ops(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["v3", "v1"])
def test_gather_free_paths_compile_without_gather(family):
    """The TPU hazard: the reference path gathers c2p/p2c; skew and chunked must not, forward or backward.
    (Embeddings are fed directly: a token-id lookup is a gather by nature and is not on the attention path.)"""
    hf_model = random_hf_model(family, position_biased_input=False, type_vocab_size=0)
    embeds = jnp.asarray(np.random.default_rng(0).normal(size=(2, 24, 32)), jnp.float32)
    mask = jnp.asarray(padded_batch(99, 2, 24)[1])
    counts = {}
    for impl in ("reference", "skew", "chunked"):
        model, params = jax_twin(hf_model, attention_impl=impl)

        def forward(p, x):
            return model.apply({"params": p}, inputs_embeds=x, attention_mask=mask).last_hidden_state

        backward = jax.grad(lambda p, x: jnp.sum(forward(p, x) ** 2))
        counts[impl] = [_hlo_ops(f, params, embeds).count(" gather(") for f in (forward, backward)]
    assert min(counts["reference"]) > 0, counts  # the check can see a gather when there is one
    assert counts["skew"] == counts["chunked"] == [0, 0], counts


def test_fused_impls_reject_what_they_cannot_compute():
    hf_model = random_hf_model("v3")
    model, params = jax_twin(hf_model, attention_impl="chunked")
    ids, mask, _ = padded_batch(99, 2, 8)
    with pytest.raises(ValueError, match="output_attentions"):
        model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask), output_attentions=True)
    pair = jnp.asarray(mask[:, None, :] * mask[:, :, None])
    with pytest.raises(ValueError, match=r"\[batch, seq\] token mask"):
        model.apply({"params": params}, jnp.asarray(ids), attention_mask=pair)


def test_auto_runs_the_chunked_kernel_off_tpu():
    """"auto" lowers to the Mosaic kernels only for a TPU (tpu_compile_test checks that side); on this CPU it must be
    the chunked program itself, not the Pallas interpreter: the same bits, forward and backward."""
    hf_model = random_hf_model("v3", num_attention_heads=2)
    ids, mask, _ = padded_batch(99, 2, 20)
    results = {}
    for impl in ("chunked", "auto"):
        model, params = jax_twin(hf_model, attention_impl=impl, attention_block_q=16, attention_block_k=16)

        def forward(p):
            return model.apply({"params": p}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).last_hidden_state

        results[impl] = (forward(params), jax.grad(lambda p: jnp.sum(forward(p) ** 2))(params))
    for mine, chunked in zip(jax.tree.leaves(results["auto"]), jax.tree.leaves(results["chunked"])):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(chunked))


@pytest.mark.slow
def test_fused_kernels_draw_the_same_attention_dropout():
    """Both fused kernels regenerate the counter-based keep bits from one seed per layer and step, so with attention
    dropout on they compute the same network; and dropout really acts (the output moves)."""
    hf_model = random_hf_model("v3", num_attention_heads=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.3)
    ids, mask, _ = padded_batch(99, 2, 20)
    outputs = {}
    for impl in ("chunked", "pallas"):
        model, params = jax_twin(hf_model, attention_impl=impl, attention_block_q=16, attention_block_k=16)
        outputs[impl] = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                                    deterministic=False, rngs={"dropout": jax.random.PRNGKey(7)}).last_hidden_state
    still = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask)).last_hidden_state
    np.testing.assert_allclose(np.asarray(outputs["chunked"]), np.asarray(outputs["pallas"]), rtol=0, atol=ATOL)
    assert float(jnp.abs(outputs["chunked"] - still).max()) > 1e-2
