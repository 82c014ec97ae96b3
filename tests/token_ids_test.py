"""Token ids outside the model's vocabulary: what `model.apply` does with them, the checks at load time and on every
host batch in finetune / predict / pretrain, and the opt-in device check of `checked_apply`."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from array_record.python.array_record_module import ArrayRecordWriter
from jax.experimental import checkify

from deberta_jax.cli import main as cli
from deberta_jax.config import preset
from deberta_jax.config_tree import apply_overrides, from_dict
from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained
from deberta_jax.data.prepared import TextFiles, prepare
from deberta_jax.data.token_ids import check_token_ids, check_vocabulary
from deberta_jax.finetuning import train as finetune_train
from deberta_jax.finetuning.task_family import GlueFamily
from deberta_jax.model.checked import checked_apply
from deberta_jax.model.modeling import DebertaModel, init_params
from deberta_jax.pretraining.config import PretrainConfig
from deberta_jax.pretraining.train import pretrain
from deberta_jax.tokenization.training import train_spm_tokenizer

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "position_buckets": 8, "max_relative_positions": 32}
WORDS = "the a cat dog sat ran on under mat log big small red blue and but quickly slowly".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 40-piece tokenizer, a model directory that fits it ("fits") and one with 11 ids fewer ("small"), a
    corpus and an SST-2 layout GLUE directory."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("token_ids")
    sentences = [" ".join(rng.choice(WORDS, 8)) for _ in range(200)]
    (root / "corpus.txt").write_text("\n\n".join(sentences), encoding="utf-8")
    tokenizer = train_spm_tokenizer([str(root / "corpus.txt")], str(root / "tokenizer"), 40)
    for name, vocab_size in (("fits", tokenizer.vocab_size), ("small", tokenizer.vocab_size - 11)):
        model = DebertaModel(preset("deberta-v3-xsmall", vocab_size=vocab_size, **TINY))
        save_pretrained(root / name, model, init_params(model, jax.random.PRNGKey(0)))
        tokenizer.save_pretrained(root / name)
    (root / "glue" / "SST-2").mkdir(parents=True)
    for split, header in (("train", "sentence\tlabel"), ("dev", "sentence\tlabel"), ("test", "index\tsentence")):
        rows = [f"{s}\t{i % 2}" if split != "test" else f"{i}\t{s}" for i, s in enumerate(sentences[:16])]
        (root / "glue" / "SST-2" / f"{split}.tsv").write_text("\n".join([header] + rows) + "\n", encoding="utf-8")
    return root, tokenizer


def test_check_vocabulary_names_both_sizes_and_paths():
    check_vocabulary(128001, "spm.model", 128100, "microsoft/deberta-v3-base")  # a padded table is fine
    with pytest.raises(ValueError, match=r"the tokenizer tok/spm\.model has 51 ids but the model m/ has "
                                         r"vocab_size=40: ids 40\.\.50 have no embedding"):
        check_vocabulary(51, "tok/spm.model", 40, "m/")


@pytest.mark.parametrize("bad", [-1, 40, 1000])
def test_check_token_ids_names_where_and_the_id(bad):
    ids = np.arange(12).reshape(3, 4)
    check_token_ids(ids, 40, "training step 3")
    ids[1, 2] = bad
    with pytest.raises(ValueError, match=rf"^training step 3: token id {bad} is outside the vocabulary \[0, 40\)$"):
        check_token_ids(ids, 40, "training step 3")


def _backbone(tiny):
    model, params = load_pretrained(tiny[0] / "fits")
    return model, {"params": params}, model.config.vocab_size


def test_what_model_apply_does_with_out_of_range_ids(tiny):
    """The behaviour README.md documents: inside jit nothing raises; an id >= vocab_size turns its whole sequence
    into NaN, and an id in [-vocab_size, 0) wraps around to the end of the table."""
    model, variables, vocab = _backbone(tiny)
    apply = jax.jit(lambda ids: model.apply(variables, ids).last_hidden_state)
    ids = np.array([[1, 5, 6, 7, 2], [1, 8, 9, 10, 2]], np.int32)

    def with_id(value):
        changed = ids.copy()
        changed[0, 2] = value
        return np.asarray(apply(changed))

    clean = with_id(6)
    too_large = with_id(vocab)
    assert np.isnan(too_large[0]).all() and np.array_equal(too_large[1], clean[1])
    np.testing.assert_array_equal(with_id(-1), with_id(vocab - 1))
    np.testing.assert_array_equal(with_id(-vocab), with_id(0))
    assert np.isnan(with_id(-vocab - 1)[0]).all()


def test_checked_apply_raises_inside_jit_and_otherwise_matches_apply(tiny):
    model, variables, vocab = _backbone(tiny)
    apply = jax.jit(checkify.checkify(functools.partial(checked_apply, model)))
    ids = jnp.array([[1, 5, 6, 7, 2], [1, 8, 9, 10, 2]], jnp.int32)
    mask = jnp.ones_like(ids)
    error, outputs = apply(variables, ids, attention_mask=mask)
    error.throw()
    plain = jax.jit(lambda v, i, m: model.apply(v, i, attention_mask=m))(variables, ids, mask)
    np.testing.assert_array_equal(np.asarray(outputs.last_hidden_state), np.asarray(plain.last_hidden_state))
    for bad in (vocab, -1):
        error, _ = apply(variables, ids.at[1, 3].set(bad), attention_mask=mask)
        with pytest.raises(ValueError, match=rf"input_ids holds {bad} at \[1 3\], outside \[0, {vocab}\)"):
            error.throw()
    with pytest.raises(ValueError, match=rf"input_ids holds {vocab} at \[0 1\]"):  # eagerly, at once
        checked_apply(model, variables, ids.at[0, 1].set(vocab))


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deberta-jax: error: ")]
    assert len(lines) == 1
    return lines[0]


@pytest.mark.parametrize("command", ["finetune", "predict"])
def test_finetune_and_predict_refuse_a_tokenizer_larger_than_the_model(tiny, tmp_path, command, capsys):
    root, tokenizer = tiny
    model = root / "small"
    argv = ([command, "--task", "sst2", "--model", str(model), "--data", str(root / "glue")]
            + (["--workdir", str(tmp_path)] if command == "finetune" else ["--out", str(tmp_path)]))
    assert cli(argv) == 1
    assert (f"the tokenizer {model / 'spm.model'} has {tokenizer.vocab_size} ids but the model {model} has "
            f"vocab_size={tokenizer.vocab_size - 11}") in _one_error_line(capsys)


def _pretrain_config(root, *overrides):
    values = {"objective": "mlm", "steps": 2, "model": {"overrides": TINY},
              "data": {"corpus": [str(root / "corpus.txt")], "tokenizer": str(root / "tokenizer"), "seq_len": 16,
                       "batch_size": 2}}
    return from_dict(PretrainConfig, apply_overrides(PretrainConfig, values, overrides))


def test_pretraining_refuses_a_model_vocabulary_smaller_than_the_tokenizer(tiny, tmp_path):
    root, tokenizer = tiny
    cfg = _pretrain_config(root, f"model.overrides.vocab_size={tokenizer.vocab_size - 1}")
    with pytest.raises(ValueError, match=rf"the tokenizer {root / 'tokenizer' / 'spm.model'} has "
                                         rf"{tokenizer.vocab_size} ids but the model deberta-v3-xsmall"):
        pretrain(cfg, str(tmp_path), progress=False)


def test_pretraining_checks_the_ids_of_every_batch(tiny, tmp_path):
    """Prepared rows whose ids do not fit the tokenizer (here: a shard rewritten with every id too large, the
    manifest left as it was) stop the run at step 1."""
    root, tokenizer = tiny
    prepared = tmp_path / "prepared"
    manifest = prepare(TextFiles.open([str(root / "corpus.txt")]), tokenizer, 16, prepared, shards=1,
                       log=lambda *a: None)
    shard = str(prepared / manifest["shards"][0]["file"])
    writer = ArrayRecordWriter(shard, "group_size:1")
    for _ in range(manifest["rows"]):
        writer.write(np.full(16, tokenizer.vocab_size + 7, "<i4").tobytes())
    writer.close()
    cfg = _pretrain_config(root, "data.corpus=[]", f"data.prepared={prepared}")
    with pytest.raises(ValueError, match=rf"^pretraining step 1: token id {tokenizer.vocab_size + 7} is outside "
                                         rf"the vocabulary \[0, {tokenizer.vocab_size}\)$"):
        pretrain(cfg, str(tmp_path / "run"), progress=False)


@pytest.mark.parametrize("command,where", [("finetune", "training step 1"), ("predict", "test batch 0")])
def test_finetune_and_predict_check_the_ids_of_every_batch(tiny, tmp_path, monkeypatch, command, where):
    """Ids that the tokenizer check cannot see (here: encoded ids changed after the fact) stop the run, named by
    the step or the split."""
    root, tokenizer = tiny
    encode = GlueFamily.encode

    def corrupted(*args, **kwargs):
        encoded = encode(*args, **kwargs)
        return dataclasses.replace(encoded, input_ids=np.where(encoded.input_ids == encoded.sep_id,
                                                               tokenizer.vocab_size + 3, encoded.input_ids))

    monkeypatch.setattr(GlueFamily, "encode", corrupted)
    match = rf"^{where}: token id {tokenizer.vocab_size + 3} is outside the vocabulary"
    with pytest.raises(ValueError, match=match):
        if command == "finetune":
            cfg = finetune_train.FinetuneConfig(task="sst2", model=str(root / "fits"), data=str(root / "glue"),
                                                batch_size=4, max_length=16)
            finetune_train.finetune(cfg, str(tmp_path), progress=False)
        else:
            finetune_train.predict("sst2", str(root / "fits"), str(root / "glue"), str(tmp_path), max_length=16)
