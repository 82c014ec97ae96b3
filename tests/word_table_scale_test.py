"""FinetuneConfig.rescale_word_table (model/embeddings.rescale_word_table): scaling the word table to a given RMS
leaves the model's outputs unchanged, touches nothing else, is refused where the scale is not free, and makes Adam
turn the rows faster in proportion (the reason for it: experiments/pretrain/README.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from deberta_jax.config import DebertaConfig
from deberta_jax.model.embeddings import rescale_word_table
from deberta_jax.model.modeling import DebertaForSequenceClassification, init_params

TINY = DebertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                     max_position_embeddings=64, relative_attention=True, position_buckets=8,
                     max_relative_positions=64, norm_rel_ebd="layer_norm", share_att_key=True,
                     pos_att_type=("p2c", "c2p"), position_biased_input=False, type_vocab_size=0,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2)
WORDS = ("deberta", "embeddings", "word_embeddings", "embedding")


def _grown(config, factor=2.6):
    """Random params whose word table is `factor` x its init scale, as pretraining leaves it."""
    model = DebertaForSequenceClassification(config)
    params = init_params(model, jax.random.PRNGKey(0))
    table = params[WORDS[0]][WORDS[1]][WORDS[2]][WORDS[3]]
    params[WORDS[0]][WORDS[1]][WORDS[2]][WORDS[3]] = table * factor
    return model, params


def _table(params):
    return params[WORDS[0]][WORDS[1]][WORDS[2]][WORDS[3]]


def test_rescaled_table_has_the_rms_asked_and_the_same_outputs():
    model, params = _grown(TINY)
    ids = jax.random.randint(jax.random.PRNGKey(1), (3, 12), 0, TINY.vocab_size)
    mask = jnp.ones_like(ids).at[0, 9:].set(0)
    rescaled, factor = rescale_word_table(params, TINY, 0.02)
    real = np.asarray(_table(rescaled))[:TINY.vocab_size]
    np.testing.assert_allclose(np.sqrt(np.mean(real ** 2)), 0.02, rtol=1e-5)
    grown_rms = np.sqrt(np.mean(np.asarray(_table(params))[:TINY.vocab_size] ** 2))
    np.testing.assert_allclose(factor, 0.02 / grown_rms, rtol=1e-5)
    before = model.apply({"params": params}, ids, attention_mask=mask).logits
    after = model.apply({"params": rescaled}, ids, attention_mask=mask).logits
    np.testing.assert_allclose(np.asarray(after), np.asarray(before), atol=1e-5, rtol=1e-5)
    others = jax.tree_util.tree_leaves_with_path(params)
    for (path, old), new in zip(others, jax.tree_util.tree_leaves(rescaled)):
        if tuple(getattr(k, "key", None) for k in path) != WORDS:
            assert old is new, jax.tree_util.keystr(path)


@pytest.mark.parametrize("change", [{"position_biased_input": True}, {"type_vocab_size": 2}])
def test_refused_where_something_is_added_to_the_word_vectors_first(change):
    config = TINY.replace(**change)
    _, params = _grown(config)
    with pytest.raises(ValueError, match="position_biased_input / type_vocab_size"):
        rescale_word_table(params, config, 0.02)


def test_adam_turns_the_smaller_table_faster_by_the_scale_ratio():
    """The loss only sees each row's direction, so its gradient at scale s is 1/s of that at scale 1; Adam's first
    step is lr x sign(gradient) whatever the scale, so the row's angle moves s times less at scale s."""
    model, params = _grown(TINY, factor=1.0)
    ids = jax.random.randint(jax.random.PRNGKey(2), (4, 10), 0, TINY.vocab_size)
    labels = jnp.array([0, 1, 1, 0])

    def loss(table, base):
        p = jax.tree_util.tree_map(lambda x: x, base)
        p[WORDS[0]][WORDS[1]][WORDS[2]][WORDS[3]] = table
        logits = model.apply({"params": p}, ids).logits
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def turn(scale):
        table = _table(params) * scale
        grads = jax.grad(loss)(table, params)
        updates, _ = optax.adam(1e-3, eps=1e-30).update(grads, optax.adam(1e-3, eps=1e-30).init(table))
        rows = np.unique(np.asarray(ids))
        old, new = np.asarray(table)[rows], np.asarray(table + updates)[rows]
        cosine = (old * new).sum(1) / np.linalg.norm(old, axis=1) / np.linalg.norm(new, axis=1)
        return np.arccos(np.clip(cosine, -1, 1))

    np.testing.assert_allclose(turn(1.0) / turn(2.6), 2.6, rtol=0.02)
