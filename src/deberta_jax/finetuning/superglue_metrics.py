"""SuperGLUE's metrics in NumPy: accuracy, macro-F1 (CB), Matthews correlation (AX-b), gender parity (AX-g),
MultiRC's answer-level F1 and question-level exact match, and ReCoRD's max-over-answers token F1 and exact match
with SQuAD's answer normalisation.

    multirc_metrics(predictions, labels, question_ids)   # {"f1a": ..., "em": ...}
    record_metrics(["Eiffel Tower", ...], [("Eiffel Tower",), ...])   # {"f1": ..., "em": ...}
"""

from __future__ import annotations

import collections
import re
import string
from typing import Sequence

import numpy as np

from deberta_jax.finetuning.metrics import _pair, accuracy, f1, matthews_corrcoef


def f1_macro(predictions, labels) -> float:
    """Unweighted mean over classes of each class's F1, the classes being those in labels or predictions [n] (as
    scikit-learn's f1_score(average="macro") takes them)."""
    predictions, labels = _pair(predictions, labels, "f1_macro")
    classes = np.union1d(predictions, labels)
    return float(np.mean([f1(predictions, labels, positive=c) for c in classes]))


def gender_parity(predictions, pair_ids) -> float:
    """Fraction of pairs (examples sharing a pair id, [n] each) whose predictions are all equal (AX-g's pairs
    differ only in the gender of a pronoun)."""
    predictions, pair_ids = _pair(predictions, pair_ids, "gender_parity")
    same = collections.defaultdict(set)
    for pair, prediction in zip(pair_ids.tolist(), predictions.tolist()):
        same[pair].add(prediction)
    return float(np.mean([len(v) == 1 for v in same.values()]))


def multirc_metrics(predictions, labels, question_ids) -> dict[str, float]:
    """MultiRC: "f1a", the binary F1 of the true class over all answers, and "em", the fraction of questions whose
    answers are all predicted right.

    Args:
      predictions, labels: [n] 0/1 per answer; question_ids: [n], the same for the answers of one question (ids
      unique across passages).
    """
    predictions, labels = _pair(predictions, labels, "multirc")
    _, question_ids = _pair(predictions, question_ids, "multirc question ids")
    right = predictions == labels
    _, question_of = np.unique(question_ids, return_inverse=True)
    all_right = np.ones(question_of.max() + 1, bool)
    np.logical_and.at(all_right, question_of, right)
    return {"f1a": f1(predictions, labels, positive=1), "em": float(all_right.mean())}


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, ASCII punctuation removed, the articles a / an / the removed, whitespace collapsed (SQuAD's and
    ReCoRD's official normalisation, in that order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, gold: str) -> float:
    """F1 of the normalised tokens of `prediction` against `gold`, counting repeated tokens (bag overlap)."""
    predicted, actual = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((collections.Counter(predicted) & collections.Counter(actual)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(actual)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def record_metrics(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """ReCoRD: for each query the best token F1 and exact match of its predicted entity over its right answers, then
    the mean over queries. A query without answers raises (leave unlabelled queries out)."""
    if len(predictions) != len(answers) or not len(predictions):
        raise ValueError(f"record: {len(predictions)} predictions for {len(answers)} queries; need as many, >= 1")
    if any(not a for a in answers):
        raise ValueError("record: a query has no answers; leave unlabelled queries out")
    f1s = [max(token_f1(p, g) for g in golds) for p, golds in zip(predictions, answers)]
    ems = [max(exact_match(p, g) for g in golds) for p, golds in zip(predictions, answers)]
    return {"f1": float(np.mean(f1s)), "em": float(np.mean(ems))}


CLASSIFICATION_METRICS = {"accuracy": accuracy, "f1_macro": f1_macro, "mcc": matthews_corrcoef}
