"""From a SuperGLUE split's logits to its predictions, its metrics, and the leaderboard's submission file.

Logits are in row order of `EncodedTask.rows` (examples' order for multiple choice):
  classification  [n, num_labels]: the argmax class.
  multiple_choice [n, num_choices]: the argmax choice.
  candidates      [rows, 2]: MultiRC takes each answer's argmax (true or false); ReCoRD the entity whose
                  logit(true) - logit(false) is the largest among its query's candidates.

Submission files (one JSON object a line, in the examples' order): {"idx", "label"} with the task's submission
labels (BoolQ, WiC "true"/"false"; WSC "True"/"False", as jiant's SuperGLUE baselines wrote them; CB, RTE, AX-b,
AX-g the class names; COPA 0/1), ReCoRD's label the predicted entity's text, MultiRC one line per passage:
{"idx", "passage": {"questions": [{"idx", "answers": [{"idx", "label": 0/1}]}]}}.
"""

from __future__ import annotations

import json
import os

import numpy as np

from deberta_jax.data.superglue.encoding import EncodedTask
from deberta_jax.finetuning import superglue_metrics as sm


def _checked(encoded: EncodedTask, logits) -> np.ndarray:
    logits = np.asarray(logits, np.float64)
    units = len(encoded) if encoded.task.format == "multiple_choice" else len(encoded.rows)
    if logits.ndim != 2 or logits.shape[0] != units:
        raise ValueError(f"task {encoded.task.name}: logits must be [{units}, outputs], got shape {logits.shape}")
    return logits


def predictions(encoded: EncodedTask, logits) -> list:
    """One prediction per example: a class id or choice (int), MultiRC a tuple of 0/1 per answer, ReCoRD the
    entity's text."""
    logits = _checked(encoded, logits)
    if encoded.task.format != "candidates":
        return logits.argmax(axis=1).tolist()
    owner = encoded.example_of_row
    if encoded.task.short_name == "multirc":
        per_row = logits.argmax(axis=1)
        return [tuple(per_row[owner == i].tolist()) for i in range(len(encoded))]
    score = logits[:, 1] - logits[:, 0]
    out = []
    for i, example in enumerate(encoded.examples):
        mine = score[owner == i]
        out.append(example.candidates[int(mine.argmax())] if len(mine) else "")
    return out


def metrics(encoded: EncodedTask, logits) -> dict[str, float]:
    """The task's metrics (task.metric_names) over its labelled examples."""
    task = encoded.task
    predicted = predictions(encoded, logits)
    if task.short_name == "multirc":
        labelled = [i for i, e in enumerate(encoded.examples) if e.labels is not None]
        flat = [(p, y, i) for i in labelled for p, y in zip(predicted[i], encoded.examples[i].labels)]
        preds, labels, questions = (np.array(column) for column in zip(*flat))
        return sm.multirc_metrics(preds, labels, questions)
    if task.short_name == "record":
        labelled = [i for i, e in enumerate(encoded.examples) if e.answers]
        return sm.record_metrics([predicted[i] for i in labelled], [encoded.examples[i].answers for i in labelled])
    keep = encoded.labels >= 0
    preds, labels = np.array(predicted)[keep], encoded.labels[keep]
    out = {}
    for name in task.metric_names:
        if name == "gender_parity":  # AX-g's pairs are consecutive examples: idx 2k and 2k + 1
            pairs = np.array([e.idx // 2 for e in encoded.examples])
            out[name] = sm.gender_parity(np.array(predicted), pairs)
        else:
            out[name] = sm.CLASSIFICATION_METRICS[name](preds, labels)
    return out


def submission_rows(encoded: EncodedTask, logits) -> list[dict]:
    task = encoded.task
    predicted = predictions(encoded, logits)
    if task.short_name == "record":
        return [{"idx": e.idx, "label": p} for e, p in zip(encoded.examples, predicted)]
    if task.short_name == "multirc":
        passages: dict[int, list] = {}
        for e, labels in zip(encoded.examples, predicted):
            answers = [{"idx": a, "label": int(y)} for a, y in zip(e.candidate_idx, labels)]
            passages.setdefault(e.passage_idx, []).append({"idx": e.idx, "answers": answers})
        return [{"idx": p, "passage": {"questions": qs}} for p, qs in passages.items()]
    return [{"idx": e.idx, "label": task.submission_labels[p]} for e, p in zip(encoded.examples, predicted)]


def write_submission(encoded: EncodedTask, logits, out_dir: str | os.PathLike, split: str = "test") -> str:
    """Writes `out_dir/<task.submission_file>` (e.g. BoolQ.jsonl) of the test split and returns its path."""
    if split != "test":
        raise ValueError(f"task {encoded.task.name}: SuperGLUE takes predictions for the test split, not {split!r}")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(os.fspath(out_dir), encoded.task.submission_file)
    with open(path, "w", encoding="utf-8") as f:
        for row in submission_rows(encoded, logits):
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path
