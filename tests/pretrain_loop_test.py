"""The pretraining loop end to end on a small slice of the bundled corpus: resume equivalence, export, CLI."""

import gzip
import json
import os

import numpy as np
import pytest
import torch
import transformers

from deberta_jax.cli import main as cli
from deberta_jax.config_tree import apply_overrides, from_dict
from deberta_jax.pretraining.config import PretrainConfig, load_pretrain_config
from deberta_jax.pretraining.train import pretrain
from deberta_jax.recipes import bundled_corpus

CORPUS = bundled_corpus()
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "position_buckets": 8, "max_relative_positions": 32}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first 300 documents of the KJV corpus."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        documents = f.read().split("\n\n")[:300]
    path = tmp_path_factory.mktemp("corpus") / "slice.txt"
    path.write_text("\n\n".join(documents), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer_dir(corpus, tmp_path_factory):
    from deberta_jax.tokenization.training import train_spm_tokenizer
    out = tmp_path_factory.mktemp("tok")
    train_spm_tokenizer([corpus], str(out), 600)
    return str(out)


def _config(corpus, tokenizer_dir, *overrides):
    values = {"objective": "rtd", "steps": 6, "model": {"overrides": TINY},
              "data": {"corpus": [corpus], "tokenizer": tokenizer_dir, "seq_len": 32, "batch_size": 8,
                       "grad_accum_steps": 2},
              "optimizer": {"learning_rate": 1e-3, "warmup_steps": 2}, "loop": {"checkpoint_every": 3, "log_every": 1}}
    return from_dict(PretrainConfig, apply_overrides(PretrainConfig, values, overrides))


@pytest.mark.slow
def test_stop_and_resume_gives_the_same_losses(corpus, tokenizer_dir, tmp_path):
    cfg = _config(corpus, tokenizer_dir)
    straight = pretrain(cfg, str(tmp_path / "straight"), progress=False)
    first = pretrain(cfg, str(tmp_path / "resumed"), progress=False, stop_after=3)
    assert first["stopped_at"] == 3 and first["exported"] == []
    with pytest.raises(FileExistsError):
        pretrain(cfg, str(tmp_path / "resumed"), progress=False)
    recorded = (tmp_path / "resumed" / "config.json").read_text()
    with pytest.raises(ValueError):  # checkpoints of another model width: nothing restores, nothing is touched
        pretrain(_config(corpus, tokenizer_dir, "model.overrides.hidden_size=64"), str(tmp_path / "resumed"),
                 resume=True, progress=False)
    assert (tmp_path / "resumed" / "config.json").read_text() == recorded
    assert not (tmp_path / "resumed" / "checkpoints-unreadable").exists()
    second = pretrain(cfg, str(tmp_path / "resumed"), resume=True, progress=False)
    assert second["resumed_from"] == 3
    expected = [row["loss"] for row in straight["history"]]
    got = [row["loss"] for row in first["history"]] + [row["loss"] for row in second["history"]]
    assert len(expected) == len(got) == 6
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    for key in ("mlm_accuracy", "rtd_accuracy", "rtd_loss", "tokens_per_second"):
        assert key in straight["history"][-1]


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.parametrize("generator_emd_steps", [0, 2])
def test_rtd_export_loads_in_transformers(corpus, tokenizer_dir, tmp_path, generator_emd_steps):
    summary = pretrain(_config(corpus, tokenizer_dir, "steps=2", f"rtd.generator_emd_steps={generator_emd_steps}"),
                       str(tmp_path), progress=False)
    disc_dir, gen_dir = summary["exported"]
    model = transformers.AutoModel.from_pretrained(disc_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(disc_dir)
    ids = tokenizer("In the beginning God created the heaven and the earth.", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(model(**ids).last_hidden_state).all()
    # a generator trained through the EMD exports as a plain masked LM: every weight read, none left over
    generator, loading = transformers.AutoModelForMaskedLM.from_pretrained(gen_dir, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    assert generator.config.num_hidden_layers == 1 and model.config.num_hidden_layers == 2
    assert os.path.exists(tmp_path / "tensorboard") and os.path.exists(tmp_path / "summary.json")


@pytest.mark.slow
@pytest.mark.reference
def test_mlm_with_emd_trains_and_exports(corpus, tokenizer_dir, tmp_path):
    summary = pretrain(_config(corpus, tokenizer_dir, "objective=mlm", "steps=2", "data.grad_accum_steps=1"),
                       str(tmp_path), progress=False)
    assert np.isfinite(summary["final"]["loss"])
    model = transformers.AutoModelForMaskedLM.from_pretrained(summary["exported"][0])
    assert model.config.num_hidden_layers == 2


# Not slow although it trains (~10 s): the quick tier's only run of the pretraining loop and its CLI.
def test_cli_pretrain_and_recipes(corpus, tokenizer_dir, tmp_path, capsys):
    assert cli(["pretrain", "--config", "tiny_cpu", "--workdir", str(tmp_path), "--set", f"data.corpus=[\"{corpus}\"]",
                "--set", f"data.tokenizer={tokenizer_dir}", "--set", "steps=2", "--set", "data.seq_len=32",
                "--set", "data.batch_size=4", "--set", "loop.log_every=1"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["steps"] == 2
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    for name in ("tiny_cpu", "v3_xsmall", "v3_small", "v3_base", "v3_large", "v1_base_mlm_emd", "v2_xxlarge_mlm_emd"):
        load_pretrain_config(name)
    with pytest.raises(ValueError, match="sharing"):
        load_pretrain_config("tiny_cpu", ["rtd.sharing=shared"])
    with pytest.raises(ValueError, match="no key 'no_such_key'"):
        load_pretrain_config("tiny_cpu", ["no_such_key=1"])


FULL = {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "0"}


@pytest.mark.parametrize("env,call", [
    ({}, None),
    (FULL, {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 0,
            "initialization_timeout": 300}),
    ({"DEBERTA_JAX_DISTRIBUTED": "1"}, {}),
])
def test_joins_a_multi_process_run_only_when_launched_as_one(monkeypatch, env, call):
    """Which initialize() call the environment leads to (a real two-process join: distributed_startup_test)."""
    from deberta_jax import distributed

    for name in (*FULL, "DEBERTA_JAX_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    calls = []
    monkeypatch.setattr(distributed.jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    distributed.maybe_initialize_distributed()
    assert calls == ([] if call is None else [call])


def test_a_partial_multi_process_environment_is_an_error(monkeypatch):
    from deberta_jax import distributed

    for name in FULL:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    with pytest.raises(ValueError, match="missing: JAX_NUM_PROCESSES, JAX_PROCESS_ID"):
        distributed.maybe_initialize_distributed()
