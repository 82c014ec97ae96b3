"""Pretraining learns: the real masking, losses, optimizer and jitted step on a synthetic language whose answers are
known in closed form, and what fine-tuning reads back from a pretraining export.

The language: each row counts upwards modulo K from a random start (token t+1 = token t + 1). A masked token is
then fixed by either neighbour, so a generator that uses context reaches accuracy near 1 where one that does not
is stuck at 1/K; a replaced token breaks the count on both sides, so a discriminator that uses context detects it,
while one that does not can only answer "original" everywhere (accuracy = 1 - replaced fraction). A wrong label, a
cut gradient path, a head reading the wrong position or a broken masking pipeline leaves one of the two at its
trivial value.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deberta_jax.config import DebertaConfig
from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained
from deberta_jax.data.masking import MaskingConfig, mask_batch
from deberta_jax.model.modeling import DebertaModel
from deberta_jax.pretraining.objectives import rtd_loss_fn
from deberta_jax.pretraining.rtd import (
    CLIP_GROUPS, ReplacedTokenDetection, clip_group_labels, export_discriminator_params, generator_config,
)
from deberta_jax.sharding.mesh import make_mesh
from deberta_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from deberta_jax.training.train_step import create_train_state, make_train_step

pytestmark = pytest.mark.slow

K, SPECIAL = 40, 4                 # K counting tokens after [PAD] [CLS] [SEP] [UNK]; [MASK] is the last id
VOCAB = SPECIAL + K + 1
MASK_ID = VOCAB - 1
SEQ, BATCH = 24, 16

CONFIG = DebertaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=128, max_position_embeddings=64, relative_attention=True,
                       position_buckets=16, max_relative_positions=64, norm_rel_ebd="layer_norm",
                       share_att_key=True, pos_att_type=("p2c", "c2p"), position_biased_input=False,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def counting_batch(rng: np.random.Generator) -> dict:
    """[1, BATCH, ...] RTD batch of counting rows, [CLS] first, [SEP] last, masked by the real pipeline."""
    starts = rng.integers(K, size=(BATCH, 1))
    body = SPECIAL + (starts + np.arange(SEQ - 2)) % K
    ids = np.concatenate([np.full((BATCH, 1), 1), body, np.full((BATCH, 1), 2)], axis=1)
    mask = np.ones_like(ids)
    masked = mask_batch(ids, mask, rng, MaskingConfig(mask_prob=0.15, max_ngram=1), special_ids={0, 1, 2, 3},
                        mask_id=MASK_ID, vocab_size=VOCAB, mode="rtd")
    batch = {"input_ids": masked["input_ids"], "original_ids": ids, "attention_mask": mask,
             "masked_positions": masked["masked_positions"], "masked_labels": masked["masked_labels"],
             "masked_weights": masked["masked_weights"]}
    return {k: jnp.asarray(v)[None] for k, v in batch.items()}


def train_rtd(sharing: str, steps: int):
    model = ReplacedTokenDetection(generator_config(CONFIG), CONFIG, sharing)
    opt_cfg = OptimizerConfig(learning_rate=2e-3, warmup_steps=20)
    schedule = learning_rate_schedule(opt_cfg, steps)
    optimizer = make_optimizer(opt_cfg, schedule, clip_groups=(clip_group_labels, CLIP_GROUPS))  # pretrain()'s default
    mesh = make_mesh((-1, 1, 1))
    state, shardings = create_train_state(model, (jnp.zeros((1, SEQ), jnp.int32),), optimizer, 0, mesh)
    step = make_train_step(rtd_loss_fn(model), optimizer, schedule, shardings, mesh)
    rng = np.random.default_rng(0)
    history = []
    for _ in range(steps):
        state, metrics = step(state, counting_batch(rng))
        history.append(jax.device_get(metrics))
    return model, state, history


@pytest.fixture(scope="module")
def gdes_run():
    return train_rtd("gdes", steps=300)


def test_generator_and_discriminator_leave_their_trivial_accuracy(gdes_run):
    _, _, history = gdes_run
    last = history[-30:]
    mlm = np.mean([m["mlm_accuracy"] for m in last])
    rtd = np.mean([m["rtd_accuracy"] for m in last])
    trivial = np.mean([1 - m["replaced_fraction"] for m in last])  # labels every token "original"
    assert history[0]["mlm_accuracy"] < 0.1
    # Measured over the last 30 of 300 steps: MLM 0.98 (chance 1/K = 0.025); discriminator 0.016 above all-original,
    # where a discriminator that learns nothing is at or below 0. The better the generator, the rarer and the more
    # plausible its replacements, so the margin stays small here.
    assert mlm > 0.8, f"generator MLM accuracy {mlm:.3f}: it does not use the context (chance is {1 / K:.3f})"
    assert rtd > trivial + 0.006, f"discriminator accuracy {rtd:.4f} vs {trivial:.4f} for all-original"


def test_finetuning_reads_back_the_trained_discriminator(gdes_run, tmp_path):
    """The export that fine-tuning loads (word table E_gen + E_delta, relative embeddings and their LayerNorm)
    computes what the trained discriminator computed inside the RTD model."""
    model, state, _ = gdes_run
    params = jax.device_get(state.params)
    assert np.abs(params["embedding_delta"]).max() > 0  # the delta trained: the sum below is not E_gen alone
    save_pretrained(tmp_path, DebertaModel(CONFIG), export_discriminator_params(params))
    loaded_model, loaded, report = load_pretrained(str(tmp_path), "sequence_classification", num_labels=2,
                                                   return_report=True)
    assert sorted(report.missing) == ["classifier.bias", "classifier.weight", "pooler.dense.bias",
                                      "pooler.dense.weight"]
    ids = counting_batch(np.random.default_rng(1))["input_ids"][0]
    mask = jnp.ones_like(ids)
    inside = model.apply({"params": params}, ids, mask, method=lambda m, i, a: m.discriminator(
        attention_mask=a, inputs_embeds=jnp.take(m.discriminator_word_table(), i, axis=0)).last_hidden_state)
    backbone = DebertaModel(loaded_model.config).apply({"params": loaded["deberta"]}, ids,
                                                       attention_mask=mask).last_hidden_state
    np.testing.assert_allclose(np.asarray(backbone), np.asarray(inside), rtol=0, atol=1e-5)
