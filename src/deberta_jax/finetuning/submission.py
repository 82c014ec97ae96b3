"""Prediction files in the form GLUE's server takes: one `<task>.tsv` per test set, header `index\tprediction`.

Predictions are written as the task's TSV labels: "entailment" / "neutral" / "contradiction" for MNLI and AX,
"entailment" / "not_entailment" for QNLI and RTE, 0 / 1 for CoLA, SST-2, MRPC, QQP and WNLI, and STS-B scores
clipped to [0, 5] with three decimals.
"""

from __future__ import annotations

import os

import numpy as np

from deberta_jax.data.glue.tasks import STSB_RANGE, GlueTask, check_split, get_task
from deberta_jax.finetuning.metrics import predicted_labels

HEADER = "index\tprediction"


def submission_file_name(task: str | GlueTask, split: str = "test") -> str:
    """CoLA.tsv, SST-2.tsv, MRPC.tsv, STS-B.tsv, QQP.tsv, MNLI-m.tsv (test_matched), MNLI-mm.tsv (test_mismatched),
    QNLI.tsv, RTE.tsv, WNLI.tsv, AX.tsv."""
    task = get_task(task)
    check_split(task, split)
    names = dict(task.submission_files)
    if split not in names:
        raise ValueError(f"task {task.name}: GLUE takes predictions for the test split(s) {list(names)}, "
                         f"not {split!r}")
    return names[split]


def format_predictions(task: str | GlueTask, predictions) -> list[str]:
    """The prediction column: class ids [n] or logits [n, num_labels] as the task's labels, STS-B scores [n]
    clipped to [0, 5] as "%.3f"."""
    task = get_task(task)
    values = predicted_labels(task, predictions)
    if task.is_regression:
        if not np.isfinite(values).all():
            raise ValueError(f"task {task.name}: predictions must be finite scores")
        return [f"{v:.3f}" for v in np.clip(values, *STSB_RANGE)]
    return [task.tsv_labels[v] for v in values]


def write_submission(task: str | GlueTask, idx, predictions, out_dir: str | os.PathLike,
                     split: str = "test") -> str:
    """Writes `out_dir/<submission_file_name(task, split)>` and returns its path.

    Args:
      idx: [n] the examples' indices (`Example.idx`); rows are written in increasing index order.
      predictions: [n] class ids or scores, or [n, num_labels] logits.
    """
    task = get_task(task)
    name = submission_file_name(task, split)
    idx = np.asarray(idx)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"task {task.name}: idx must be a 1-D integer array, got {idx.dtype} of shape {idx.shape}")
    if len(idx) != len(predictions):
        raise ValueError(f"task {task.name}: {len(idx)} indices but {len(predictions)} predictions")
    if not len(idx):
        raise ValueError(f"task {task.name}: no predictions to write")
    if (idx < 0).any():
        raise ValueError(f"task {task.name}: negative index {idx[idx < 0][0]} (a padding row?)")
    unique, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"task {task.name}: index {unique[counts > 1][0]} appears {counts.max()} times")
    column = format_predictions(task, predictions)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), name)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(HEADER + "\n")
        for i in np.argsort(idx, kind="stable"):
            f.write(f"{idx[i]}\t{column[i]}\n")
    return path
