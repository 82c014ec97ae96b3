"""SuperGLUE through the real CLI: a tiny model learns a generated COPA-style task (multiple choice) and a generated
ReCoRD-style task (entity candidates); predict writes COPA.jsonl and ReCoRD.jsonl in the leaderboard's format; every
task fine-tunes on its fixture and predict writes all ten submission files; the published recipes load."""

import json
import pathlib
import random

import pytest

from deberta_jax.cli import main as cli
from deberta_jax.data.superglue import tasks
from generated_glue import FILLER, save_tiny_model

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "superglue"

GOOD, BAD = ("good", "great", "fine"), ("bad", "awful", "dull")
HEROES, VILLAINS = ("Alice", "Bruno", "Carla"), ("Dmitri", "Edgar", "Fiona")


def _words(rng, n_min=3, n_max=8):
    return " ".join(rng.choice(FILLER) for _ in range(rng.randint(n_min, n_max)))


def _copa(rng, idx, labelled=True):
    """The right choice holds a "good" word, the other a "bad" one; which of the two is right is random."""
    label = rng.randint(0, 1)
    right, wrong = f"{_words(rng)} {rng.choice(GOOD)}.", f"{_words(rng)} {rng.choice(BAD)}."
    choices = (right, wrong) if label == 0 else (wrong, right)
    row = {"premise": f"{_words(rng)}.", "choice1": choices[0], "choice2": choices[1],
           "question": rng.choice(["cause", "effect"]), "idx": idx}
    return {**row, "label": label} if labelled else row, label


def _record(rng, idx, labelled=True):
    """A passage naming one hero among villains; the query's answer is the hero."""
    names = [rng.choice(HEROES)] + rng.sample(VILLAINS, rng.randint(1, 3))
    rng.shuffle(names)
    text, entities = "", []
    for name in names:
        text += f"{_words(rng, 2, 5)} "
        entities.append({"start": len(text), "end": len(text) + len(name) - 1})
        text += f"{name} {_words(rng, 2, 5)}.\n@highlight\n"
    hero = next(n for n in names if n in HEROES)
    qa = {"query": f"{_words(rng, 2, 4)} @placeholder {_words(rng, 2, 4)}", "idx": idx}
    if labelled:
        qa["answers"] = [{"start": text.index(hero), "end": text.index(hero) + len(hero) - 1, "text": hero}]
    return {"idx": idx, "source": "generated", "passage": {"text": text, "entities": entities}, "qas": [qa]}, hero


def _strings(value):
    """Every string inside a JSON value (the tokenizer's corpus)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, dict)):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


@pytest.fixture(scope="module")
def data_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated_superglue")
    rng = random.Random(0)
    truth, lines = {}, []
    for directory, make, sizes in (("COPA", _copa, (320, 64, 40)), ("ReCoRD", _record, (160, 48, 30))):
        (root / "superglue" / directory).mkdir(parents=True)
        for split, n in zip(("train", "val", "test"), sizes):
            rows = [make(rng, i, labelled=split != "test") for i in range(n)]
            truth[directory, split] = [answer for _, answer in rows]
            with open(root / "superglue" / directory / f"{split}.jsonl", "w") as f:
                f.writelines(json.dumps(row) + "\n" for row, _ in rows)
            lines += [text for row, _ in rows for text in _strings(row)]
    (root / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    save_tiny_model(root / "model", root / "corpus.txt")
    return root / "superglue", root / "model", truth


def _finetune(task, data, model, workdir, batch_size):
    assert cli(["finetune", "--task", task, "--model", str(model), "--data", str(data), "--workdir", str(workdir),
                "--set", "epochs=4", "--set", "optimizer.learning_rate=2e-3", "--set", f"batch_size={batch_size}",
                "--set", "max_length=64", "--set", "optimizer.warmup_ratio=0.1", "--set", "loop.log_every=5"]) == 0
    return json.loads((workdir / "metrics.json").read_text())


@pytest.mark.slow
def test_tiny_model_learns_generated_copa_and_predicts(data_and_model, tmp_path, capsys):
    data, model, truth = data_and_model
    summary = _finetune("superglue/copa", data, model, tmp_path / "run", 16)
    assert summary["steps"] == 80 and len(summary["evaluations"]) == 4
    assert summary["best"]["metrics"]["validation"]["accuracy"] >= 0.9, summary["best"]
    card = (tmp_path / "run" / "export" / "README.md").read_text()
    assert "a multiple-choice head, fine-tuned on the SuperGLUE task copa" in card
    capsys.readouterr()
    assert cli(["predict", "--task", "superglue/copa", "--model", str(tmp_path / "run" / "export"), "--data",
                str(data), "--out", str(tmp_path / "submission")]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "submission" / "COPA.jsonl")]
    assert [r["idx"] for r in rows] == list(range(40)) and all(set(r) == {"idx", "label"} for r in rows)
    right = sum(r["label"] == y for r, y in zip(rows, truth["COPA", "test"]))
    assert right >= 0.9 * 40


@pytest.mark.slow
def test_tiny_model_learns_generated_record_and_predicts(data_and_model, tmp_path, capsys):
    data, model, truth = data_and_model
    summary = _finetune("superglue/record", data, model, tmp_path / "run", 32)
    best = summary["best"]["metrics"]["validation"]
    assert best["em"] >= 0.9 and best["f1"] >= best["em"], summary["best"]
    capsys.readouterr()
    assert cli(["predict", "--task", "superglue/record", "--model", str(tmp_path / "run" / "export"), "--data",
                str(data), "--out", str(tmp_path / "submission")]) == 0
    rows = [json.loads(line) for line in open(tmp_path / "submission" / "ReCoRD.jsonl")]
    assert [r["idx"] for r in rows] == list(range(30))
    assert sum(r["label"] == hero for r, hero in zip(rows, truth["ReCoRD", "test"])) >= 0.9 * 30


def test_published_superglue_recipes_load():
    from deberta_jax.finetuning.train import FinetuneConfig, load_recipe

    copa = load_recipe("superglue/copa", "large-mnli")  # microsoft/DeBERTa experiments/superglue/copa.sh
    assert (copa["optimizer"]["learning_rate"], copa["batch_size"], copa["epochs"], copa["max_length"]) == \
        (5e-6, 16, 4.0, 136)
    record = load_recipe("superglue/record", "xxlarge-v2")
    assert record["optimizer"] == {"learning_rate": 3e-6, "warmup_steps": 1000} and record["cls_dropout"] == 0.15
    FinetuneConfig(task="superglue/record", model="m", **record)
    with pytest.raises(ValueError, match=r"no published recipe 'base' for task 'superglue/boolq'.*tiny-cpu"):
        load_recipe("superglue/boolq", "base")
    assert load_recipe("superglue/boolq", "tiny-cpu") == load_recipe("sst2", "tiny-cpu")
    # ours where nothing is published: the published GLUE recipe of the task named in _like, base at twice the lr
    assert load_recipe("superglue/rte", "deberta-v3-large") == load_recipe("rte", "deberta-v3-large")
    for name in ("boolq", "cb", "multirc", "rte", "wic", "wsc"):
        large, base = (load_recipe(f"superglue/{name}", f"deberta-v3-{size}") for size in ("large", "base"))
        assert base["optimizer"]["learning_rate"] == 2 * large["optimizer"]["learning_rate"]
        FinetuneConfig(task=f"superglue/{name}", model="m", **large)


@pytest.fixture(scope="module")
def fixture_model(tmp_path_factory):
    """A tiny model whose tokenizer knows the hand-written fixtures' text."""
    root = tmp_path_factory.mktemp("fixture_model")
    texts = [text for path in sorted(FIXTURES.glob("*/*.jsonl")) for line in path.read_text().splitlines()
             for text in _strings(json.loads(line))]
    (root / "corpus.txt").write_text("\n".join(texts * 3), encoding="utf-8")
    save_tiny_model(root / "model", root / "corpus.txt", vocab_size=200)
    return root / "model"


@pytest.mark.slow
def test_every_task_finetunes_and_predicts_its_submission_file(fixture_model, tmp_path, capsys):
    """One epoch on each task's fixture, then predict: the ten files the leaderboard takes, one line per test
    example (MultiRC: per passage); AX-b and AX-g with the RTE model."""
    runs = {}
    for name in tasks.TASK_NAMES:
        task = tasks.get_task(name)
        if "train" not in task.splits:
            continue
        workdir = tmp_path / task.short_name
        assert cli(["finetune", "--task", name, "--model", str(fixture_model), "--data", str(FIXTURES),
                    "--workdir", str(workdir), "--set", "epochs=1", "--set", "batch_size=2",
                    "--set", "eval_batch_size=2", "--set", "max_length=64"]) == 0
        summary = json.loads((workdir / "metrics.json").read_text())
        assert set(summary["best"]["metrics"]["validation"]) == set(task.metric_names)
        runs[task.short_name] = workdir / "export"
    out = tmp_path / "submission"
    for name in tasks.TASK_NAMES:
        task = tasks.get_task(name)
        model = runs["rte" if task.short_name in ("axb", "axg") else task.short_name]
        assert cli(["predict", "--task", name, "--model", str(model), "--data", str(FIXTURES), "--out",
                    str(out), "--max-length", "64"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl", "RTE.jsonl", "WiC.jsonl",
         "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"])
    for name in tasks.TASK_NAMES:
        task = tasks.get_task(name)
        test_lines = (FIXTURES / task.directory / task.file_name("test")).read_text().splitlines()
        rows = [json.loads(line) for line in (out / task.submission_file).read_text().splitlines()]
        if task.short_name == "record":  # one line per query
            assert len(rows) == sum(len(json.loads(line)["qas"]) for line in test_lines)
        else:
            assert [r["idx"] for r in rows] == [json.loads(line)["idx"] for line in test_lines]
        if task.format == "classification":
            assert all(r["label"] in task.submission_labels for r in rows), rows
