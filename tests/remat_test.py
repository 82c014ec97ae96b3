"""Named remat policies (`DebertaConfig.remat`): every policy computes the same loss and gradients as no remat, with
and without `scan_layers`; unknown names fail with one line; and each policy keeps what its name says (the residuals
the backward pass saves, read from JAX's own account of them)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from deberta_jax.config import REMAT_POLICIES, DebertaConfig
from deberta_jax.config_tree import ConfigError
from deberta_jax.model import remat
from deberta_jax.model.modeling import DebertaForMaskedLM

TINY = DebertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                     relative_attention=True, position_buckets=8, max_relative_positions=16, pos_att_type=("c2p", "p2c"),
                     share_att_key=True, norm_rel_ebd="layer_norm", position_biased_input=False,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
B, N = 2, 12


def _loss_and_grads(config: DebertaConfig):
    model = DebertaForMaskedLM(config)
    ids = jax.random.randint(jax.random.PRNGKey(1), (B, N), 1, config.vocab_size)
    mask = jnp.ones((B, N), jnp.int32).at[1, -3:].set(0)
    params = model.init(jax.random.PRNGKey(0), ids)["params"]

    def loss(p):
        return jnp.sum(model.apply({"params": p}, ids, attention_mask=mask).logits ** 2) / 1e3

    return loss, params


def test_the_policy_names_are_the_configs():
    assert set(REMAT_POLICIES) == {"none", *remat._POLICIES}


@pytest.mark.parametrize("scan_layers, impl", [(False, "skew"), (True, "chunked")])
def test_every_policy_computes_what_no_remat_computes(scan_layers, impl):
    expected_loss, expected_grads = None, None
    for policy in REMAT_POLICIES:
        cfg = dataclasses.replace(TINY, remat=policy, scan_layers=scan_layers, attention_impl=impl,
                                  attention_block_q=4, attention_block_k=4)
        loss, params = _loss_and_grads(cfg)
        value, grads = jax.jit(jax.value_and_grad(loss))(params)
        if expected_loss is None:
            expected_loss, expected_grads = value, grads
            continue
        np.testing.assert_allclose(value, expected_loss, rtol=1e-6, err_msg=policy)
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(expected_grads)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=f"{policy} {jax.tree_util.keystr(path)}")


@pytest.mark.parametrize("value", ["save_everything", True, ""])
def test_an_unknown_policy_is_one_line_naming_the_known_ones(value):
    with pytest.raises(ConfigError, match=r"DebertaConfig\.remat") as info:
        dataclasses.replace(TINY, remat=value)
    assert "\n" not in str(info.value)


def _saved(policy: str) -> list[tuple[tuple[int, ...], str]]:
    """(shape, JAX's description) of every residual the backward pass keeps under `policy`."""
    loss, params = _loss_and_grads(dataclasses.replace(TINY, remat=policy, attention_impl="skew"))
    return [(tuple(aval.shape), str(where)) for aval, where in saved_residuals(loss, params)]


def test_each_policy_keeps_what_its_name_says():
    """Counted per layer (3 of them): the [B, H, N, N] scores only where every dot is kept; the named projections
    where the policy names them. Residuals outside the layers (embeddings, the MLM head) are kept by every policy."""
    saved = {policy: _saved(policy) for policy in REMAT_POLICIES}
    scores = (B, TINY.num_attention_heads, N, N)
    heads = (B, N, TINY.num_attention_heads, TINY.head_dim)
    layers = TINY.num_hidden_layers

    def count(policy, shape=None, name=None):
        return sum(1 for s, where in saved[policy] if (shape is None or s == shape) and (name is None or name in where))

    assert count("save_dots", scores) >= layers and count("none", scores) >= layers
    for policy in ("full", "save_dots_except_attention", "save_qkv", "save_qkv_context"):
        assert count(policy, scores) == 0, (policy, saved[policy])
    for name in (remat.QUERY, remat.KEY, remat.VALUE):
        assert count("save_qkv", heads, f"named '{name}'") == layers, saved["save_qkv"]
        assert count("save_qkv_context", heads, f"named '{name}'") == layers
        assert count("full", name=f"named '{name}'") == 0
    assert count("save_qkv_context", name=f"named '{remat.CONTEXT}'") == layers
    assert count("save_qkv", name=f"named '{remat.CONTEXT}'") == 0
    # Saved elements, which is what the memory column sees: each policy keeps more than the one before it.
    kept = {policy: sum(int(np.prod(shape)) for shape, _ in residuals) for policy, residuals in saved.items()}
    order = ["full", "save_qkv", "save_qkv_context", "save_dots_except_attention", "save_dots", "none"]
    assert sorted(kept, key=kept.get) == order, kept
