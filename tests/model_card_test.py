"""Exports carry a README.md model card: what the model is, the run's objective / task, steps and data, the final
metrics as the run recorded them (summary.json, metrics.json), and loading code that runs."""

import gzip
import json
import os
import re

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from deberta_jax.conversion.hf_checkpoint import load_pretrained
from deberta_jax.recipes import bundled_corpus

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "position_buckets": 8, "max_relative_positions": 32}


def _metric_rows(card: str) -> dict[str, float]:
    """The rows of the card's metric table."""
    table = card[card.index("| metric | value |"):].split("\n\n", 1)[0]
    return {name: float(value) for name, value in re.findall(r"^\| (.+?) \| (\S+) \|$", table, re.M)[2:]}


def _code_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, re.S)


def _run_in(directory, code: str) -> dict:
    cwd = os.getcwd()
    os.chdir(directory)
    try:
        scope = {}
        exec(code, scope)  # the card's own example, as a reader would paste it
        return scope
    finally:
        os.chdir(cwd)


def _assert_same_params(a, b):
    a, b = flatten_dict(a), flatten_dict(b)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    with gzip.open(bundled_corpus(), "rt", encoding="utf-8") as f:
        documents = f.read().split("\n\n")[:200]
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text("\n\n".join(documents), encoding="utf-8")
    return str(path)


@pytest.mark.slow
@pytest.mark.reference
def test_pretraining_and_finetuning_exports_carry_cards(corpus, tmp_path):
    import transformers

    from deberta_jax.config_tree import apply_overrides, from_dict
    from deberta_jax.finetuning.train import FinetuneConfig, finetune
    from deberta_jax.pretraining.config import PretrainConfig
    from deberta_jax.pretraining.train import pretrain

    values = {"objective": "rtd", "steps": 3, "model": {"overrides": TINY},
              "data": {"corpus": [corpus], "tokenizer_vocab_size": 300, "seq_len": 32, "batch_size": 4},
              "optimizer": {"learning_rate": 1e-3, "warmup_steps": 1}, "loop": {"log_every": 1}}
    cfg = from_dict(PretrainConfig, apply_overrides(PretrainConfig, values, []))
    pretrain(cfg, str(tmp_path / "pre"), progress=False)
    summary = json.loads((tmp_path / "pre" / "summary.json").read_text())
    for role in ("discriminator", "generator"):
        card = (tmp_path / "pre" / "export" / role / "README.md").read_text()
        assert f"# {role}\n" in card and "replaced token detection" in card and "| objective | rtd |" in card
        assert "| steps | 3 |" in card and corpus in card
        rows = _metric_rows(card)
        expected = {k: v for k, v in summary["final"].items() if k != "step"}
        assert rows.keys() == expected.keys() and {"loss", "rtd_accuracy"} <= rows.keys()
        for name, value in expected.items():
            assert rows[name] == pytest.approx(value, rel=1e-5), name
    disc = tmp_path / "pre" / "export" / "discriminator"
    ours, theirs = _code_blocks((disc / "README.md").read_text())
    _assert_same_params(_run_in(disc.parent, ours)["params"], load_pretrained(disc)[1])
    assert isinstance(_run_in(disc.parent, theirs)["model"], transformers.DebertaV2Model)
    gen = (tmp_path / "pre" / "export" / "generator" / "README.md").read_text()
    assert "load_pretrained('generator', 'masked_lm')" in gen and "AutoModelForMaskedLM" in gen

    glue = tmp_path / "glue" / "SST-2"
    glue.mkdir(parents=True)
    rows = "".join(f"{'and the light was good' if i % 2 else 'and the earth was void'} {i}\t{i % 2}\n"
                   for i in range(16))
    for split in ("train", "dev"):
        (glue / f"{split}.tsv").write_text("sentence\tlabel\n" + rows, encoding="utf-8")
    ft = FinetuneConfig(task="sst2", model=str(disc), data=str(tmp_path / "glue"), epochs=1, batch_size=8,
                        max_length=16, buckets=(16,))
    finetune(ft, str(tmp_path / "ft"), progress=False)
    metrics = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    export = tmp_path / "ft" / "export"
    card = (export / "README.md").read_text()
    assert "sequence classification head, fine-tuned on the GLUE task sst2" in card and str(disc) in card
    assert "| steps | 2 |" in card
    assert _metric_rows(card) == {"validation accuracy": pytest.approx(
        metrics["best"]["metrics"]["validation"]["accuracy"], rel=1e-5)}
    assert f"at step {metrics['best']['step']}" in card and "16 training examples" in card
    ours, theirs = _code_blocks(card)
    assert _run_in(export.parent, ours)["model"].config.num_labels == 2
    assert isinstance(_run_in(export.parent, theirs)["model"], transformers.DebertaV2ForSequenceClassification)


def test_a_card_for_an_mlm_export_is_built_from_the_records_given(tmp_path):
    from deberta_jax.config import preset
    from deberta_jax.conversion.model_card import write_pretraining_cards

    (tmp_path / "mlm").mkdir()  # a card reads config.json only
    preset("deberta-v3-xsmall", vocab_size=64, **TINY).to_json_file(tmp_path / "mlm" / "config.json",
                                                                     "DebertaV2ForMaskedLM")
    run_config = {"objective": "mlm", "seed": 3, "emd": {"steps": 2}, "model": {"preset": "deberta-v3-xsmall",
                  "overrides": TINY}, "optimizer": {"learning_rate": 5e-4},
                  "data": {"corpus": [], "tfds_dataset": "wiki40b/en", "tfds_split": "train", "tokenizer": None,
                           "tokenizer_vocab_size": 64, "seq_len": 128, "batch_size": 256, "grad_accum_steps": 4}}
    summary = {"steps": 1000, "final": {"step": 1000, "loss": 2.5, "mlm_accuracy": 0.625}}
    (path,) = write_pretraining_cards([str(tmp_path / "mlm")], run_config, summary)
    card = open(path).read()
    assert path == str(tmp_path / "mlm" / "README.md")
    assert "pipeline_tag: fill-mask" in card and "enhanced mask decoder (2 steps" in card
    assert "| layers | 2 |" in card and "| hidden size | 32 |" in card and "| vocabulary | 64 " in card
    assert "`wiki40b/en`, split `train`" in card and "256 sequences of 128 tokens (4 accumulation steps)" in card
    assert _metric_rows(card) == {"loss": 2.5, "mlm_accuracy": 0.625} and "last logged step (1000)" in card
    assert json.loads(card.split("```json\n")[1].split("```")[0]) == json.loads(json.dumps(run_config))
