"""Fuzzing the readers of user input: GLUE TSV files, text corpora, `--set` overrides and recipe files. Whatever
the input, it either reads or fails with a one-line ValueError (ConfigError for configs) that says what is wrong:
never a UnicodeDecodeError, a TypeError or a traceback out of the middle of the code."""

import gzip
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deberta_jax.cli import main as cli
from deberta_jax.config_tree import ConfigError
from deberta_jax.data.glue.readers import load_tsv_split
from deberta_jax.data.text_corpus import read_documents
from deberta_jax.finetuning.train import FinetuneConfig, finetune_config
from deberta_jax.pretraining.config import PretrainConfig, load_pretrain_config

# Modest and deadline-free: CI runs these on 2 shared cores.
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,  # the same cases on every CI run
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_one_line_error(error: BaseException, kind=ValueError):
    assert isinstance(error, kind) and not isinstance(error, UnicodeDecodeError), repr(error)
    message = str(error)
    assert message and "\n" not in message, repr(message)


# ------------------------------------------------------------------------------------------------ files
TSV_PIECES = ["sentence", "label", "index", "\t", "\n", "\r\n", "\r", "0", "1", "2", "-1", "nan", "5.5", " ", "a b",
              '"', "\ufeff", "caf\u00e9", "\x00"]


def tsv_bytes():
    """Bytes near the TSV layout (its headers, tabs, labels, line ends) or random, with invalid UTF-8 mixed in."""
    text = st.lists(st.sampled_from(TSV_PIECES), max_size=40).map("".join)
    pieces = st.one_of(text.map(str.encode), st.binary(max_size=12), st.sampled_from([b"\xff", b"\xe9", b"\xc3"]))
    return st.lists(pieces, max_size=8).map(b"".join)


@FUZZ
@given(content=tsv_bytes(), task=st.sampled_from(["sst2", "cola", "stsb", "mnli"]))
def test_tsv_reader_reads_or_names_the_problem(tmp_path_factory, content, task):
    root = tmp_path_factory.mktemp("glue")
    directory, file = {"sst2": ("SST-2", "train.tsv"), "cola": ("CoLA", "train.tsv"), "stsb": ("STS-B", "dev.tsv"),
                       "mnli": ("MNLI", "train.tsv")}[task]
    (root / directory).mkdir()
    (root / directory / file).write_bytes(content)
    try:
        examples = load_tsv_split(task, root, "validation" if task == "stsb" else "train")
    except ValueError as e:
        assert_one_line_error(e)
        assert str(root / directory / file) in str(e)
    else:
        assert examples and all(isinstance(e.text_a, str) for e in examples)


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         st.lists(st.sampled_from([b"word ", b"\n", b"\r", b"\r\n", b"\xff", b"\xe2\x82", b"\xac"]),
                                  max_size=30).map(b"".join)),
       compress=st.sampled_from(["plain", "gzip", "gzip cut short", "gzip name only"]))
def test_corpus_reader_reads_or_names_the_problem(tmp_path_factory, content, compress):
    directory = tmp_path_factory.mktemp("corpus")
    path = directory / ("corpus.txt" if compress == "plain" else "corpus.txt.gz")
    data = {"plain": content, "gzip": gzip.compress(content), "gzip cut short": gzip.compress(content)[:-5],
            "gzip name only": content}[compress]
    path.write_bytes(data)
    try:
        documents = list(read_documents([path]))
    except ValueError as e:
        assert_one_line_error(e)
        assert str(path) in str(e)
    else:
        assert all(d and d == d.strip() and "\n" not in d for d in documents)


# ------------------------------------------------------------------------------------------------ configs
PRETRAIN_KEYS = ["objective", "steps", "seed", "model", "model.preset", "model.overrides", "model.overrides.hidden_size",
                 "model.dtype", "model.remat", "data.corpus", "data.tokenizer", "data.seq_len", "data.batch_size",
                 "data.grad_accum_steps", "masking.mask_prob", "masking.max_predictions", "rtd.sharing", "rtd.weight",
                 "emd.steps", "optimizer.learning_rate", "optimizer.warmup_steps", "mesh.shape", "loop.log_every",
                 "data", "data.batch_size.x", "no_such", "optimizer..eps", ".", ""]
FINETUNE_KEYS = ["task", "model", "max_length", "buckets", "batch_size", "epochs", "eval_every", "cls_dropout",
                 "optimizer.layer_decay", "optimizer.warmup_ratio", "sift.enabled", "sift.init_clip", "mesh.shape",
                 "loop.keep_checkpoints", "sift", "sift.enabled.x", "nope"]
VALUES = ["0", "1", "-1", "2.5", "1e400", "-1e400", "NaN", "Infinity", "true", "false", "yes", "null", "", "abc", "[]",
          "[1, 2]", "[-1, 1, 1]", "[true, 1, 1]", '["a"]', "{}", '{"a": 1}', '"quoted"', "[", "{", "mlm", "rtd", "es",
          "float32", "9" * 30, "1" + "0" * 5000, "[" * 3000, "x=y"]
text = st.text(alphabet=string.printable + "\u00e9\udcff", max_size=12)
# Several `--set` items, each a known key (or a near miss) with a value that is plausible, extreme or garbage.
overrides = {cls: st.lists(st.one_of(st.tuples(st.sampled_from(keys), st.sampled_from(VALUES) | text).map("=".join),
                                     text), max_size=4)
             for cls, keys in ((PretrainConfig, PRETRAIN_KEYS), (FinetuneConfig, FINETUNE_KEYS))}


def assert_valid_or_config_error(build):
    try:
        config = build()
    except ConfigError as e:
        assert_one_line_error(e, ConfigError)
    else:
        assert json.loads(json.dumps(config.to_dict())) == json.loads(json.dumps(config.to_dict()))


@FUZZ
@given(items=overrides[PretrainConfig])
def test_pretrain_overrides_build_a_config_or_say_why_not(items):
    assert_valid_or_config_error(lambda: load_pretrain_config("tiny_cpu", items))


@FUZZ
@given(items=overrides[FinetuneConfig], recipe=st.sampled_from([None, "deberta-v3-base", "tiny-cpu"]))
def test_finetune_overrides_build_a_config_or_say_why_not(items, recipe):
    assert_valid_or_config_error(lambda: finetune_config("mrpc", "some/model", "tfds", recipe, items))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=3), max_leaves=8)
recipe_values = st.dictionaries(st.sampled_from(["objective", "steps", "model", "data", "optimizer", "rtd", "mesh",
                                                 "_comment", "unknown"]),
                                json_values | st.dictionaries(st.sampled_from(["corpus", "preset", "learning_rate",
                                                                               "shape", "x"]), json_values,
                                                              max_size=3), max_size=5)


@FUZZ
@given(recipe=st.one_of(recipe_values.map(json.dumps), json_values.map(json.dumps), text),
       items=overrides[PretrainConfig])
def test_recipe_files_build_a_config_or_say_why_not(tmp_path_factory, recipe, items):
    path = tmp_path_factory.mktemp("recipe") / "recipe.json"
    path.write_text(recipe, encoding="utf-8", errors="surrogateescape")
    assert_valid_or_config_error(lambda: load_pretrain_config(str(path), items))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=overrides[PretrainConfig])
def test_the_command_line_reports_bad_overrides_in_one_line(tmp_path_factory, capsys, items):
    """Through `main`: an override that does not build a config exits 2 with one line. (Configs that do build are
    left out: they would start a run.)"""
    try:
        load_pretrain_config("tiny_cpu", items)
    except ConfigError:
        pass
    else:
        return
    capsys.readouterr()
    argv = ["pretrain", "--config", "tiny_cpu", "--workdir", str(tmp_path_factory.mktemp("run"))]
    assert cli(argv + [arg for item in items for arg in ("--set", item)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("deberta-jax: error: "), err


@pytest.mark.parametrize("recipe,item", [
    ("{}", "steps=" + "1" + "0" * 5000),            # a ValueError of int(), not a ConfigError
    ("{}", "steps=" + "[" * 3000),                  # a RecursionError
    ("{}", "optimizer.learning_rate=NaN"),
    ("{}", "optimizer.learning_rate=Infinity"),     # was accepted
    ("{}", "mesh.shape=[true, 1, 1]"),              # was accepted: a bool is an int
    ("{}", "steps=\n"),                             # a message of two lines
    ("{}", "data.corpus=[1]"),                      # was accepted, to fail in the middle of a run
    ('{"data": null}', "steps=1"),                  # an AttributeError
    ('{"data": {"corpus": [null]}}', "steps=1"),    # a TypeError
    ('{"optimizer": 5}', "optimizer.learning_rate=1e-3"),  # a TypeError
    ('{"model": {"overrides": []}}', "model.overrides.hidden_size=64"),  # a TypeError
])
def test_found_by_fuzzing(tmp_path, recipe, item):
    """Inputs the fuzzers above found, kept as plain cases."""
    path = tmp_path / "recipe.json"
    path.write_text(recipe)
    with pytest.raises(ConfigError) as error:
        load_pretrain_config(str(path), [item])
    assert_one_line_error(error.value, ConfigError)
