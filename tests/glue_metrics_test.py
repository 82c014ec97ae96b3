"""GLUE metrics against scikit-learn and scipy on random inputs, ties and degenerate cases, and closed forms."""

import warnings

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from deberta_jax.data.glue.tasks import TASK_NAMES, get_task
from deberta_jax.finetuning.metrics import (accuracy, average_ranks, f1, glue_score, main_metric, matthews_corrcoef,
                                            pearson, spearman, task_metrics)

SEEDS = range(20)


def random_classes(seed, n_classes=2):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 200))
    labels = rng.integers(0, n_classes, n)
    # predictions that agree with the labels more or less often, so the scores spread over [-1, 1]
    agree = rng.random(n) < rng.random()
    predictions = np.where(agree, labels, rng.integers(0, n_classes, n))
    return predictions, labels


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_metrics_match_sklearn(seed):
    predictions, labels = random_classes(seed)
    assert accuracy(predictions, labels) == pytest.approx(skm.accuracy_score(labels, predictions), abs=1e-12)
    assert f1(predictions, labels) == pytest.approx(skm.f1_score(labels, predictions), abs=1e-12)
    assert matthews_corrcoef(predictions, labels) == pytest.approx(skm.matthews_corrcoef(labels, predictions),
                                                                   abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multiclass_matthews_matches_sklearn(seed):
    predictions, labels = random_classes(seed, n_classes=3)
    assert matthews_corrcoef(predictions, labels) == pytest.approx(skm.matthews_corrcoef(labels, predictions),
                                                                   abs=1e-12)


@pytest.mark.parametrize("predictions, labels", [
    ([1, 1, 1, 1], [0, 1, 0, 1]),  # constant predictions
    ([0, 0, 0, 0], [0, 1, 0, 1]),
    ([0, 1, 1, 0], [1, 1, 1, 1]),  # constant labels
    ([1, 1], [1, 1]),  # both constant, all correct
    ([0, 0, 0], [0, 0, 0]),  # no positive anywhere: F1 is 0 by sklearn's zero_division
    ([2, 2, 2], [0, 1, 2]),
])
def test_degenerate_classifications_score_like_sklearn(predictions, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the ill-defined cases
        expected_mcc = skm.matthews_corrcoef(labels, predictions)
        expected_f1 = skm.f1_score(labels, predictions, labels=[1], average="macro") if max(labels + predictions) <= 1 \
            else None
    assert expected_mcc == 0.0 and matthews_corrcoef(predictions, labels) == 0.0
    if expected_f1 is not None:
        assert f1(predictions, labels) == pytest.approx(expected_f1, abs=1e-12)


def test_closed_forms():
    # tp=2, fp=1, fn=1, tn=0: mcc = (2*0 - 1*1) / sqrt(3 * 3 * 1 * 1) = -1/3, f1 = 4 / 6
    assert matthews_corrcoef([1, 1, 1, 0], [1, 1, 0, 1]) == pytest.approx(-1 / 3)
    assert f1([1, 1, 1, 0], [1, 1, 0, 1]) == pytest.approx(2 / 3)
    assert matthews_corrcoef([0, 1, 2], [0, 1, 2]) == 1.0 and matthews_corrcoef([1, 0], [0, 1]) == -1.0
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
    assert spearman([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    np.testing.assert_array_equal(average_ranks([10, 20, 10, 30, 20, 10]), [2, 4.5, 2, 6, 4.5, 2])
    assert accuracy(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == 0.75


@pytest.mark.parametrize("seed", SEEDS)
def test_correlations_match_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    labels = np.round(rng.uniform(0, 5, n) * 5) / 5  # STS-B-like scores: many ties
    predictions = labels * rng.uniform(-1, 1) + rng.normal(0, 1, n)
    if seed % 2:
        predictions = np.round(predictions, 1)  # ties among the predictions too
    assert pearson(predictions, labels) == pytest.approx(stats.pearsonr(predictions, labels)[0], abs=1e-10)
    assert spearman(predictions, labels) == pytest.approx(stats.spearmanr(predictions, labels)[0], abs=1e-10)
    np.testing.assert_allclose(average_ranks(labels), stats.rankdata(labels, method="average"))


def test_correlations_of_large_and_tiny_values_match_scipy():
    rng = np.random.default_rng(0)
    for scale in (1e-150, 1e-8, 1e8, 1e150):
        x, y = rng.normal(size=50) * scale, rng.normal(size=50) * scale
        y = y + x
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-10)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-10)


@pytest.mark.parametrize("predictions, labels", [
    ([2.5, 2.5, 2.5], [0.0, 1.0, 4.0]),
    ([0.0, 1.0, 4.0], [3.0, 3.0, 3.0]),
    ([0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1]),
])
def test_constant_inputs_give_zero_where_scipy_gives_nan(predictions, labels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ConstantInputWarning
        assert np.isnan(stats.pearsonr(predictions, labels)[0])
        assert np.isnan(stats.spearmanr(predictions, labels)[0])
    assert pearson(predictions, labels) == 0.0 and spearman(predictions, labels) == 0.0


@pytest.mark.parametrize("function", [accuracy, f1, matthews_corrcoef, pearson, spearman])
def test_mismatched_or_empty_inputs_are_errors(function):
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        function([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="no predictions"):
        function([], [])
    with pytest.raises(ValueError, match="1-D"):
        function([[0, 1]], [[0, 1]])


def test_correlations_reject_non_finite_values():
    with pytest.raises(ValueError, match="pearson: predictions and labels must be finite"):
        pearson([0.0, np.nan, 1.0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="spearman"):
        spearman([0.0, 1.0, 2.0], [0.0, np.inf, 1.0])


# ---------------------------------------------------------------------------------------------- per task
def test_task_metrics_are_glues_set_for_each_task():
    rng = np.random.default_rng(0)
    for name in TASK_NAMES:
        task = get_task(name)
        if task.is_regression:
            labels = rng.uniform(0, 5, 40)
            predictions = labels + rng.normal(0, 1, 40)
            expected = {"pearson": stats.pearsonr(predictions, labels)[0],
                        "spearman": stats.spearmanr(predictions, labels)[0]}
        else:
            labels = rng.integers(0, task.num_labels, 40)
            predictions = np.where(rng.random(40) < 0.7, labels, rng.integers(0, task.num_labels, 40))
            expected = {"mcc": skm.matthews_corrcoef(labels, predictions),
                        "accuracy": skm.accuracy_score(labels, predictions)}
            if task.num_labels == 2:
                expected["f1"] = skm.f1_score(labels, predictions)
        result = task_metrics(name, predictions, labels)
        assert tuple(result) == task.metric_names
        for metric, value in result.items():
            assert isinstance(value, float) and value == pytest.approx(expected[metric], abs=1e-12)
        assert main_metric(name) in result
    assert {name: main_metric(name) for name in TASK_NAMES} == {
        "cola": "mcc", "sst2": "accuracy", "mrpc": "f1", "qqp": "f1", "stsb": "pearson", "mnli": "accuracy",
        "qnli": "accuracy", "rte": "accuracy", "wnli": "accuracy", "ax": "mcc"}


def test_task_metrics_take_logits():
    logits = np.array([[2.0, -1.0, 0.0], [0.0, 0.5, 0.1], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    assert task_metrics("mnli", logits, [0, 1, 2, 2]) == {"accuracy": 0.75}
    scores = task_metrics("stsb", np.array([[0.5], [2.0], [4.5]]), [1.0, 2.0, 5.0])
    assert scores["pearson"] == pytest.approx(stats.pearsonr([0.5, 2.0, 4.5], [1.0, 2.0, 5.0])[0])
    assert scores["spearman"] == pytest.approx(1.0)


def test_task_metrics_reject_unlabelled_rows_and_bad_classes():
    with pytest.raises(ValueError, match=r"label -1 is not a class id in \[0, 2\); leave out unlabelled"):
        task_metrics("sst2", [0, 1], [0, -1])
    with pytest.raises(ValueError, match=r"predicted class 3 is outside \[0, 3\)"):
        task_metrics("mnli", [0, 3], [0, 1])
    with pytest.raises(ValueError, match=r"\[n\] or \[n, 2\]"):
        task_metrics("rte", np.zeros((2, 3)), [0, 1])


def test_glue_score_is_the_mean_of_the_tasks_metrics():
    assert glue_score("mrpc", {"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert glue_score("stsb", {"pearson": 0.9, "spearman": 0.88}) == pytest.approx(0.89)
    assert glue_score("cola", {"mcc": 0.6}) == 0.6
    with pytest.raises(ValueError, match=r"task qqp: metrics lack \['f1'\]"):
        glue_score("qqp", {"accuracy": 0.9})
