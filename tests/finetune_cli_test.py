"""Fine-tuning through the real CLI: a tiny model learns a generated SST-2-style task; predict writes the
submission file; STS-B regression runs."""

import csv
import json
import random

import numpy as np
import pytest

from deberta_jax.cli import main as cli
from generated_glue import make_glue_and_model, save_tiny_model, sentence, write_split


@pytest.fixture(scope="module")
def glue_dir_and_model(tmp_path_factory):
    return make_glue_and_model(tmp_path_factory.mktemp("generated"))


@pytest.mark.slow
def test_tiny_model_learns_generated_task_and_predicts(glue_dir_and_model, tmp_path, capsys):
    glue_dir, model_dir = glue_dir_and_model
    workdir = tmp_path / "run"
    assert cli(["finetune", "--task", "sst2", "--model", str(model_dir), "--data", str(glue_dir),
                "--workdir", str(workdir), "--set", "epochs=4", "--set", "optimizer.learning_rate=2e-3",
                "--set", "batch_size=32", "--set", "max_length=32", "--set", "optimizer.warmup_ratio=0.1",
                "--set", "loop.log_every=5"]) == 0
    summary = json.loads((workdir / "metrics.json").read_text())
    assert summary["best"]["metrics"]["validation"]["accuracy"] >= 0.9, summary["best"]
    assert summary["steps"] == 80 and len(summary["evaluations"]) == 4
    capsys.readouterr()
    assert cli(["predict", "--task", "sst2", "--model", str(workdir / "export"), "--data", str(glue_dir),
                "--out", str(tmp_path / "submission")]) == 0
    rows = list(csv.reader(open(tmp_path / "submission" / "SST-2.tsv"), delimiter="\t"))
    assert rows[0] == ["index", "prediction"] and len(rows) == 38
    predictions = np.array([int(r[1]) for r in rows[1:]])
    expected = np.arange(37) % 2
    assert (predictions == expected).mean() >= 0.9


# Not slow although it trains (~10 s): the quick tier's only run of the fine-tuning loop (and of
# rescale_word_table's wiring).
def test_sift_and_regression_run(glue_dir_and_model, tmp_path):
    glue_dir, model_dir = glue_dir_and_model
    stsb = tmp_path / "glue" / "STS-B"
    stsb.mkdir(parents=True)
    rng = random.Random(1)
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score"]
    for split in ("train", "dev"):
        rows = [(i, "g", "f", "2012", i, "s", "s", sentence(rng, 1), sentence(rng, 0), f"{rng.uniform(0, 5):.3f}")
                for i in range(40)]
        write_split(stsb / f"{split}.tsv", rows, header)
    workdir = tmp_path / "stsb"
    assert cli(["finetune", "--task", "stsb", "--model", str(model_dir), "--data", str(tmp_path / "glue"),
                "--workdir", str(workdir), "--set", "epochs=1", "--set", "batch_size=16", "--set", "max_length=32",
                "--set", "sift.enabled=true", "--set", "rescale_word_table=true"]) == 0
    summary = json.loads((workdir / "metrics.json").read_text())
    assert set(summary["best"]["metrics"]["validation"]) == {"pearson", "spearman"}
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert all(np.isfinite(r["sift_loss"]) and r["sift_loss"] >= 0 for r in rows)


def test_tiny_cpu_recipe_names_its_word_table_option_for_a_model_that_adds_positions(glue_dir_and_model, tmp_path,
                                                                                       capsys):
    # the recipe rescales the word table, which changes a model whose positions join the words before the LayerNorm
    glue_dir, model_dir = glue_dir_and_model
    save_tiny_model(tmp_path / "v1_like", model_dir.parent / "corpus.txt", position_biased_input=True)
    capsys.readouterr()
    assert cli(["finetune", "--task", "sst2", "--model", str(tmp_path / "v1_like"), "--data", str(glue_dir),
                "--workdir", str(tmp_path / "run"), "--recipe", "tiny-cpu"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("deberta-jax: error: FinetuneConfig.rescale_word_table") and "set it false" in error, error
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.slow
def test_stop_and_resume_matches_an_uninterrupted_run(glue_dir_and_model, tmp_path):
    from deberta_jax.finetuning.train import FinetuneConfig, finetune

    glue_dir, model_dir = glue_dir_and_model
    cfg = FinetuneConfig(task="sst2", model=str(model_dir), data=str(glue_dir), epochs=1.5,
                         optimizer={"learning_rate": 2e-3}, batch_size=32, max_length=32, eval_every=10,
                         loop={"log_every": 1})
    straight = finetune(cfg, str(tmp_path / "a"), progress=False)
    stopped = finetune(cfg, str(tmp_path / "b"), progress=False, stop_after=15)   # mid-epoch, between evals
    assert stopped["stopped_at"] == 15
    resumed = finetune(cfg, str(tmp_path / "b"), resume=True, progress=False)
    assert [e["score"] for e in straight["evaluations"]][-2:] == pytest.approx(
        [e["score"] for e in resumed["evaluations"]][-2:], abs=1e-6)
    losses = lambda d: {r["step"]: r["loss"] for r in map(json.loads, open(d / "metrics.jsonl"))}
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b)
    np.testing.assert_allclose([b[s] for s in sorted(b)], [a[s] for s in sorted(a)], rtol=0, atol=1e-5)


def test_published_recipes_load():
    from deberta_jax.finetuning.train import FinetuneConfig, load_recipe

    recipe = load_recipe("mnli", "deberta-v3-base")
    assert recipe["optimizer"]["learning_rate"] == 1.5e-5 and recipe["batch_size"] == 64
    assert recipe["max_length"] == 256
    sift = load_recipe("mnli", "deberta-v3-small-sift")
    assert sift["sift"]["enabled"] is True and sift["sift"]["weight"] == 5.0
    FinetuneConfig(task="mnli", model="m", **recipe)
    with pytest.raises(ValueError, match="no published recipe.*ours.*tiny-cpu"):
        load_recipe("rte", "deberta-v3-nonexistent")
    tiny = load_recipe("rte", "tiny-cpu")  # ours: the same settings for every task
    assert tiny == load_recipe("sst2", "tiny-cpu") and not any(k.startswith("_") for k in tiny)
    FinetuneConfig(task="rte", model="m", **tiny)
