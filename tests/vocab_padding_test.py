"""Vocabulary padding (DebertaConfig.vocab_pad_multiple): the padded model computes what the unpadded one computes
on the same weights, padded ids are never predicted or sampled, files hold vocab_size rows, and the sharding rules
say (and count) what they replicate when a mesh axis does not divide a parameter."""

import json
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AbstractMesh
from safetensors.numpy import load_file

from deberta_jax.config import DebertaConfig, preset
from deberta_jax.config_tree import ConfigError
from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained
from deberta_jax.conversion.jax_checkpoint import load_checkpoint, save_checkpoint
from deberta_jax.model.modeling import DebertaForMaskedLM, init_params
from deberta_jax.model.vocab_padding import padded_params
from deberta_jax.pretraining.losses import masked_lm_loss, sample_replacements
from deberta_jax.pretraining.objectives import rtd_loss_fn
from deberta_jax.pretraining.rtd import ReplacedTokenDetection, generator_config
from deberta_jax.sharding.rules import ShardingFitWarning, dropped_axes, logical_shardings
from deberta_jax.tpu.compile import replicated_summary
from deberta_jax.tpu.report import summary_lines
from deberta_jax.training.train_step import boxed_train_state

VOCAB, PADDED = 50, 64
TINY = DebertaConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=64, relative_attention=True, position_buckets=8,
                     max_relative_positions=64, norm_rel_ebd="layer_norm", share_att_key=True,
                     pos_att_type=("p2c", "c2p"), position_biased_input=False, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, vocab_pad_multiple=1)
PAD32 = TINY.replace(vocab_pad_multiple=32)


def _loud_padding(params, config):
    """Padded params whose padded rows would win every softmax if they were not masked: the word table's padded
    rows point along the hidden states' mean direction, scaled up, and the output bias is 1e4 there."""
    def loud(path, x):
        names = [getattr(p, "key", None) for p in path]
        if names[-1] == "bias" and x.shape == (config.padded_vocab_size,):
            return x.at[config.vocab_size:].set(1e4)
        if names[-1] in ("embedding", "embedding_delta") and x.shape[0] == config.padded_vocab_size:
            return x.at[config.vocab_size:].set(50.0)
        return x
    return jax.tree_util.tree_map_with_path(loud, params)


def test_padded_vocab_size_rounds_up_and_never_reaches_hf_files():
    assert preset("deberta-v3-base").padded_vocab_size == 128128
    assert preset("deberta-base").padded_vocab_size == 50304          # 50265 -> 393 x 128
    assert TINY.padded_vocab_size == VOCAB and PAD32.padded_vocab_size == PADDED
    assert preset("deberta-v3-base", vocab_size=256).padded_vocab_size == 256
    assert "vocab_pad_multiple" not in PAD32.to_hf_dict()
    with pytest.raises(ConfigError, match="vocab_pad_multiple"):
        TINY.replace(vocab_pad_multiple=0)


@pytest.mark.parametrize("legacy", [True, False], ids=["cls_predictions", "lm_predictions"])
def test_padded_mlm_logits_loss_and_predictions_equal_the_unpadded_models(legacy):
    plain, padded = TINY.replace(legacy=legacy), PAD32.replace(legacy=legacy)
    params = init_params(DebertaForMaskedLM(plain), jax.random.PRNGKey(0))
    model = DebertaForMaskedLM(padded)
    loud = _loud_padding(padded_params(model, params), padded)
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(4, VOCAB, size=(3, 12)))
    positions = jnp.asarray(rng.integers(0, 12, size=(3, 5)))
    labels, weights = jnp.asarray(rng.integers(0, VOCAB, size=(3, 5))), jnp.ones((3, 5))

    theirs = DebertaForMaskedLM(plain).apply({"params": params}, ids, masked_positions=positions).logits
    ours = model.apply({"params": loud}, ids, masked_positions=positions).logits
    wide = model.apply({"params": loud}, ids, masked_positions=positions, padded_vocab=True).logits
    assert theirs.shape == ours.shape == (3, 5, VOCAB) and wide.shape == (3, 5, PADDED)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(wide[..., VOCAB:]) == np.finfo(np.float32).min)
    assert np.asarray(jnp.argmax(wide[..., :VOCAB], -1) == jnp.argmax(wide, -1)).all()

    loss, accuracy = masked_lm_loss(wide, labels, weights)
    # closed form on the unpadded logits: mean of -log softmax at the label
    logits = np.asarray(theirs, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    expected = -np.take_along_axis(logp, np.asarray(labels)[..., None], -1).mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(accuracy) == pytest.approx(float((logits.argmax(-1) == np.asarray(labels)).mean()))


def test_sampling_never_draws_a_padded_id_and_matches_categorical_on_the_real_ids():
    logits = jax.random.normal(jax.random.PRNGKey(3), (4, 7, VOCAB))
    unmasked = jnp.concatenate([logits, jnp.full((4, 7, PADDED - VOCAB), 1e30)], -1)  # padding that would win
    key = jax.random.PRNGKey(4)
    samples = sample_replacements(key, unmasked, 0.7, vocab_size=VOCAB)
    assert int(samples.max()) < VOCAB
    np.testing.assert_array_equal(np.asarray(samples), np.asarray(jax.random.categorical(key, logits / 0.7)))


def _rtd_batch():
    rng = np.random.default_rng(2)
    ids = rng.integers(4, VOCAB, size=(2, 16)).astype(np.int32)
    positions = np.stack([rng.choice(16, 4, replace=False) for _ in range(2)]).astype(np.int32)
    masked = ids.copy()
    masked[np.arange(2)[:, None], positions] = 3
    batch = {"input_ids": masked, "original_ids": ids, "attention_mask": np.ones_like(ids),
             "masked_positions": positions, "masked_labels": np.take_along_axis(ids, positions, 1),
             "masked_weights": np.ones(positions.shape, np.float32)}
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("sharing", ["gdes", "nes"])
def test_an_id_outside_the_vocabulary_reads_no_padded_row(sharing):
    """ids vocab_size .. padded-1 exist as rows of the padded table; they must poison their sequence with NaN as
    in an unpadded model (not read a padded row), and ids in [-vocab_size, 0) must wrap to the real vocabulary's
    end, in the backbone's lookup and in the RTD discriminator's lookup of its shared table alike."""
    model = ReplacedTokenDetection(generator_config(PAD32), PAD32, sharing)
    params = _loud_padding(nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"]),
                           PAD32)
    backbone = jax.jit(lambda ids: model.apply({"params": params}, ids, jnp.ones_like(ids),
                                               jnp.zeros((2, 1), jnp.int32), method=model.generator_logits))
    disc = jax.jit(lambda ids: model.apply({"params": params}, ids, jnp.ones_like(ids),
                                           method=model.discriminator_logits))
    ids = np.array([[1, 5, 6, 7, 8, 9, 10, 2], [1, 11, 12, 13, 14, 15, 16, 2]], np.int32)

    def with_id(apply, value):
        changed = ids.copy()
        changed[0, 3] = value
        return np.asarray(apply(changed))[..., :VOCAB]  # the MLM logits' padded columns are masked, NaN or not

    for apply in (backbone, disc):
        for outside in (VOCAB, PADDED - 1, -VOCAB - 1):
            out = with_id(apply, outside)
            assert np.isnan(out[0]).all() and not np.isnan(out[1]).any(), outside
        np.testing.assert_array_equal(with_id(apply, -1), with_id(apply, VOCAB - 1))


@pytest.mark.slow
@pytest.mark.parametrize("sharing", ["gdes", "nes"])
def test_rtd_step_losses_equal_the_unpadded_models(sharing):
    """Same weights, same key: the padded model draws the same replacements (the Gumbel noise covers the real
    ids only) and gets the same MLM and RTD losses, though its padded rows and bias would win every draw."""
    def build(config):
        return ReplacedTokenDetection(generator_config(config), config, sharing)

    plain, padded = build(TINY), build(PAD32)
    init_ids = jnp.zeros((1, 16), jnp.int32)
    params = nn.meta.unbox(plain.init(jax.random.PRNGKey(0), init_ids)["params"])
    params = jax.tree_util.tree_map(lambda x: x + 0.01, params)  # a nonzero embedding_delta
    shapes = nn.meta.unbox(jax.eval_shape(lambda: padded.init(jax.random.PRNGKey(0), init_ids)["params"]))
    widened = jax.tree_util.tree_map(lambda x, t: jnp.pad(x, [(0, b - a) for a, b in zip(x.shape, t.shape)]),
                                     params, shapes)
    loud = _loud_padding(widened, PAD32)
    batch, key = _rtd_batch(), jax.random.PRNGKey(7)
    _, theirs = jax.jit(rtd_loss_fn(plain))(params, batch, key)
    _, ours = jax.jit(rtd_loss_fn(padded))(loud, batch, key)
    assert float(theirs["replaced_fraction"]) > 0
    for name in ("mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_fraction"):
        assert float(ours[name]) == pytest.approx(float(theirs[name]), rel=1e-5, abs=1e-7), name


def test_hf_and_jax_checkpoints_hold_vocab_size_rows_and_load_back_padded(tmp_path):
    model = DebertaForMaskedLM(PAD32)
    params = init_params(model, jax.random.PRNGKey(0))
    save_pretrained(tmp_path / "hf", model, params)
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert tensors["deberta.embeddings.word_embeddings.weight"].shape == (VOCAB, 32)
    assert tensors["cls.predictions.bias"].shape == (VOCAB,)
    assert "vocab_pad_multiple" not in json.loads((tmp_path / "hf" / "config.json").read_text())

    _, loaded = load_pretrained(tmp_path / "hf", "masked_lm", vocab_pad_multiple=32)
    table = np.asarray(loaded["deberta"]["embeddings"]["word_embeddings"]["embedding"])
    original = np.asarray(params["deberta"]["embeddings"]["word_embeddings"]["embedding"])
    assert table.shape == (PADDED, 32) and not table[VOCAB:].any()
    np.testing.assert_array_equal(table[:VOCAB], original[:VOCAB])
    np.testing.assert_array_equal(np.asarray(loaded["cls"]["predictions"]["bias"])[:VOCAB],
                                  np.asarray(params["cls"]["predictions"]["bias"])[:VOCAB])

    save_checkpoint(tmp_path / "jax", model, params)
    _, exact = load_checkpoint(tmp_path / "jax", vocab_pad_multiple=1)   # any padding loads it
    np.testing.assert_array_equal(np.asarray(exact["deberta"]["embeddings"]["word_embeddings"]["embedding"]),
                                  original[:VOCAB])
    np.testing.assert_array_equal(np.asarray(exact["cls"]["predictions"]["bias"]),
                                  np.asarray(params["cls"]["predictions"]["bias"])[:VOCAB])
    _, again = load_checkpoint(tmp_path / "jax", vocab_pad_multiple=32)
    table = np.asarray(again["deberta"]["embeddings"]["word_embeddings"]["embedding"])
    assert table.shape == (PADDED, 32) and not table[VOCAB:].any()
    np.testing.assert_array_equal(table[:VOCAB], original[:VOCAB])


# ----------------------------------------------------------------------------------------------- sharding rules
MESH = AbstractMesh((1, 2, 4), ("data", "fsdp", "tensor"))


def _boxed_state(config: DebertaConfig):
    return boxed_train_state(DebertaForMaskedLM(config), (jnp.zeros((1, 8), jnp.int32),), optax.adamw(1e-3))


def test_a_dropped_mesh_axis_warns_once_per_parameter_naming_path_shape_and_axis():
    state = _boxed_state(TINY)   # 50 rows: tensor=4 does not divide the word table or the MLM bias
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logical_shardings(state, MESH)
    texts = sorted(str(w.message) for w in caught if w.category is ShardingFitWarning)
    assert texts == [
        "cls/predictions/bias (50,): mesh axis 'tensor' (size 4) does not divide dimension 0 (50); that dimension "
        "is replicated over it",
        "deberta/embeddings/word_embeddings/embedding (50, 32): mesh axis 'tensor' (size 4) does not divide "
        "dimension 0 (50); that dimension is replicated over it"]   # once each, though Adam has two moments of each
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logical_shardings(_boxed_state(PAD32), MESH)
    assert not [w for w in caught if w.category is ShardingFitWarning]


def test_replicated_bytes_per_chip_of_dropped_axes():
    """The word table [50, 32] fp32 and the bias [50], each with two Adam moments: split over fsdp=2 only
    (instead of fsdp x tensor = 8) a chip holds 1/2 - 1/8 of them more; the bias, replicated, 1 - 1/4 more."""
    summary = replicated_summary(dropped_axes(_boxed_state(TINY), MESH))
    table, bias = 50 * 32 * 4, 50 * 4
    assert summary["params"] == [
        {"param": "deberta/embeddings/word_embeddings/embedding", "shape": [50, 32], "dropped": ["tensor on dim 0"],
         "extra_bytes_per_chip": 3 * (table // 2 - table // 8)},
        {"param": "cls/predictions/bias", "shape": [50], "dropped": ["tensor on dim 0"],
         "extra_bytes_per_chip": 3 * (bias - bias // 4)}]
    assert summary["extra_bytes_per_chip"] == 3 * (table // 2 - table // 8 + bias - bias // 4)
    assert replicated_summary(dropped_axes(_boxed_state(PAD32), MESH)) == {"extra_bytes_per_chip": 0, "params": []}


def test_the_compile_summary_names_the_replicated_bytes_and_their_largest_parameters():
    """v3-xsmall unpadded on fsdp=2 x tensor=8 (8 does not divide 128100): its word table [128100, 384] fp32 and
    the MLM bias keep only fsdp (the table) or nothing (the bias), each with two Adam moments."""
    mesh = AbstractMesh((1, 2, 8), ("data", "fsdp", "tensor"))
    replicated = replicated_summary(dropped_axes(_boxed_state(preset("deberta-v3-xsmall", vocab_pad_multiple=1)),
                                                 mesh))
    table, bias = 128100 * 384 * 4, 128100 * 4
    total = 3 * (table // 2 - table // 16) + 3 * (bias - bias // 8)
    report = {"step": {"kind": "pretrain", "objective": "mlm", "preset": "tiny", "attention_impl": "skew",
                       "dtype": "float32", "batch_size": 8, "seq_len": 64, "mesh": dict(mesh.shape)},
              "chip": {"name": "v5e", "peak_bf16_flops": 1.97e14}, "topology": {"name": "v5e-8"}, "chips": 8,
              "compile_seconds": 1.0, "replicated": replicated,
              "memory_per_chip": {"total": 2 ** 30, "hbm": 16e9, "hbm_fraction": 0.07, "fits": True,
                                  "arguments": 1, "outputs": 1, "aliased": 1, "temp": 1},
              "cost_per_chip": {"flops": 1.0, "bytes_accessed": 1.0}, "model_flops_per_step": 1.0,
              "compiled_over_model_flops": 1.0,
              "roofline": {"step_seconds": 1.0, "bound": "memory", "compute_seconds": 0.5, "memory_seconds": 1.0,
                           "mfu": 0.1},
              "collectives": {"by_kind": {}}, "gathers": 0, "while_loops": 0}
    line = [x for x in summary_lines(report) if x.strip().startswith("replicated")]
    assert replicated["extra_bytes_per_chip"] == total
    assert line == [f"  replicated       {total / 2 ** 30:.2f} GiB per chip of state that a mesh axis does not divide: "
                    f"deberta/embeddings/word_embeddings/embedding (tensor on dim 0: "
                    f"{3 * (table // 2 - table // 16) / 2 ** 30:.2f} GiB), cls/predictions/bias (tensor on dim 0: "
                    "0.00 GiB)"]
    # padded to 128128 rows (the default), tensor=8 divides the table and the bias: nothing replicated, no line
    report["replicated"] = replicated_summary(dropped_axes(_boxed_state(preset("deberta-v3-xsmall")), mesh))
    assert report["replicated"] == {"extra_bytes_per_chip": 0, "params": []}
    assert not [x for x in summary_lines(report) if "replicated" in x]
