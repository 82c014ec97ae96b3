"""GLUE's metrics in NumPy: Matthews correlation, accuracy, binary F1, Pearson and Spearman correlation.

Each takes predictions and labels of shape [n] and returns a Python float. Where a correlation is undefined (a
constant input), it is 0.0, as scikit-learn's `matthews_corrcoef` returns, not scipy's NaN, so that picking the best
checkpoint by it never meets a NaN.
"""

from __future__ import annotations

import numpy as np

from deberta_jax.data.glue.tasks import GlueTask, get_task


def _pair(predictions, labels, name: str) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(f"{name}: predictions and labels must be 1-D, got shapes {predictions.shape} and "
                         f"{labels.shape}")
    if len(predictions) != len(labels):
        raise ValueError(f"{name}: {len(predictions)} predictions but {len(labels)} labels")
    if not len(labels):
        raise ValueError(f"{name}: no predictions")
    return predictions, labels


def _finite(predictions, labels, name):
    predictions, labels = _pair(predictions, labels, name)
    predictions, labels = predictions.astype(np.float64), labels.astype(np.float64)
    if not (np.isfinite(predictions).all() and np.isfinite(labels).all()):
        raise ValueError(f"{name}: predictions and labels must be finite")
    return predictions, labels


def accuracy(predictions, labels) -> float:
    """Fraction of predictions [n] equal to labels [n]."""
    predictions, labels = _pair(predictions, labels, "accuracy")
    return float(np.mean(predictions == labels))


def f1(predictions, labels, positive=1) -> float:
    """Binary F1 of class `positive`: 2 tp / (2 tp + fp + fn); 0.0 when there is no positive in either."""
    predictions, labels = _pair(predictions, labels, "f1")
    predicted, actual = predictions == positive, labels == positive
    tp = np.sum(predicted & actual)
    denominator = 2 * tp + np.sum(predicted & ~actual) + np.sum(~predicted & actual)
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions, labels) -> float:
    """Matthews correlation coefficient of class predictions [n] against labels [n], for any number of classes
    (Gorodkin's R_K; GLUE's "R3" on AX). 0.0 when either side is constant."""
    predictions, labels = _pair(predictions, labels, "matthews_corrcoef")
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k = len(classes)
    confusion = np.zeros((k, k), np.float64)
    np.add.at(confusion, (encoded[:len(labels)], encoded[len(labels):]), 1)
    true_sum, pred_sum = confusion.sum(axis=1), confusion.sum(axis=0)
    n, correct = confusion.sum(), np.trace(confusion)
    cov_true_pred = correct * n - true_sum @ pred_sum
    cov_pred_pred = n * n - pred_sum @ pred_sum
    cov_true_true = n * n - true_sum @ true_sum
    if cov_pred_pred * cov_true_true == 0:
        return 0.0
    return float(cov_true_pred / np.sqrt(cov_true_true * cov_pred_pred))


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if (x == x[0]).all() or (y == y[0]).all():
        return 0.0
    # Scaling by the largest magnitude first keeps the sums of squares finite for huge values.
    x = x - x.mean()
    y = y - y.mean()
    x = x / np.abs(x).max()
    y = y / np.abs(y).max()
    r = np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y))
    return float(np.clip(r, -1.0, 1.0))


def pearson(predictions, labels) -> float:
    """Pearson correlation of predictions [n] and labels [n]; 0.0 when either is constant (scipy gives NaN)."""
    return _pearson(*_finite(predictions, labels, "pearson"))


def average_ranks(values) -> np.ndarray:
    """Ranks [n] float64 of values [n], 1 for the smallest; tied values share the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts_group) - 1  # [n] group of each sorted position
    starts = np.flatnonzero(starts_group)
    ends = np.concatenate([starts[1:], [len(values)]])  # exclusive
    ranks = np.empty(len(values), np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[group]
    return ranks


def spearman(predictions, labels) -> float:
    """Spearman rank correlation (Pearson of average ranks) of predictions [n] and labels [n]; 0.0 when either is
    constant."""
    predictions, labels = _finite(predictions, labels, "spearman")
    return _pearson(average_ranks(predictions), average_ranks(labels))


METRICS = {"mcc": matthews_corrcoef, "accuracy": accuracy, "f1": f1, "pearson": pearson, "spearman": spearman}


def predicted_labels(task: str | GlueTask, predictions) -> np.ndarray:
    """Class ids [n] int64 (argmax of logits [n, num_labels], or given as [n]) or scores [n] float64 (STS-B, from
    [n] or [n, 1])."""
    task = get_task(task)
    predictions = np.asarray(predictions)
    if predictions.ndim == 2 and predictions.shape[1] == task.num_labels:
        predictions = predictions[:, 0] if task.is_regression else predictions.argmax(axis=1)
    if predictions.ndim != 1:
        raise ValueError(f"task {task.name}: predictions must be [n] or [n, {task.num_labels}], "
                         f"got shape {predictions.shape}")
    if task.is_regression:
        return predictions.astype(np.float64)
    if not (np.issubdtype(predictions.dtype, np.integer) or np.all(np.mod(predictions, 1) == 0)):
        raise ValueError(f"task {task.name}: class predictions must be integers, got {predictions.dtype} values")
    predictions = predictions.astype(np.int64)
    bad = (predictions < 0) | (predictions >= task.num_labels)
    if bad.any():
        raise ValueError(f"task {task.name}: predicted class {predictions[bad][0]} is outside "
                         f"[0, {task.num_labels}) ({list(task.label_names)})")
    return predictions


def task_metrics(task: str | GlueTask, predictions, labels) -> dict[str, float]:
    """GLUE's metrics of `task` (task.metric_names): CoLA mcc; SST-2, MNLI, QNLI, RTE, WNLI accuracy; MRPC, QQP f1
    and accuracy; STS-B pearson and spearman; AX mcc over 3 classes.

    Args:
      predictions: class ids [n] or logits [n, num_labels] (STS-B: scores [n] or [n, 1]).
      labels: [n] class ids or scores; unlabelled examples (-1) must be left out.
    """
    task = get_task(task)
    predictions = predicted_labels(task, predictions)
    labels = np.asarray(labels)
    if not task.is_regression:
        bad = (labels < 0) | (labels >= task.num_labels) | (np.mod(labels, 1) != 0)
        if np.any(bad):
            raise ValueError(f"task {task.name}: label {labels[bad][0]} is not a class id in [0, {task.num_labels})"
                             f"; leave out unlabelled (-1) and padding rows")
    return {name: METRICS[name](predictions, labels) for name in task.metric_names}


def main_metric(task: str | GlueTask) -> str:
    """Name of the metric that picks the best checkpoint: the task's first metric (`GlueTask.main_metric`)."""
    return get_task(task).main_metric


def glue_score(task: str | GlueTask, metrics: dict[str, float]) -> float:
    """The task's score as GLUE's leaderboard averages it: the mean of the task's metrics (e.g. (f1 + accuracy) / 2
    for MRPC)."""
    task = get_task(task)
    missing = [m for m in task.metric_names if m not in metrics]
    if missing:
        raise ValueError(f"task {task.name}: metrics lack {missing}")
    return float(np.mean([metrics[m] for m in task.metric_names]))
