"""SuperGLUE through the real CLI: a tiny model learns a generated COPA-style task (multiple choice) and a generated
ReCoRD-style task (entity candidates); predict writes COPA.jsonl and ReCoRD.jsonl in the leaderboard's format."""

import json
import random

import pytest

from deberta_jax.cli import main as cli
from generated_glue import FILLER, save_tiny_model

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
