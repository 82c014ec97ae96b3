"""SuperGLUE metrics against scikit-learn on random inputs and against hand-worked small cases."""

import numpy as np
import pytest
from sklearn import metrics as skm

from deberta_jax.finetuning import superglue_metrics as sm


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels, predictions = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    predictions[:5] = 2 if seed == 0 else predictions[:5]
    assert sm.f1_macro(predictions, labels) == pytest.approx(skm.f1_score(labels, predictions, average="macro"))
    two_classes = np.where(labels == 2, 0, labels)  # a class that is never predicted nor true is not averaged
    assert sm.f1_macro(two_classes, labels) == pytest.approx(skm.f1_score(labels, two_classes, average="macro"))


@pytest.mark.parametrize("seed", range(5))
def test_multirc_f1a_is_sklearn_binary_f1_and_em_by_hand(seed):
    rng = np.random.default_rng(seed)
    question_ids = np.repeat(np.arange(8), rng.integers(1, 5, 8))
    labels = rng.integers(0, 2, len(question_ids))
    predictions = np.where(rng.random(len(labels)) < 0.7, labels, 1 - labels)
    got = sm.multirc_metrics(predictions, labels, question_ids)
    assert got["f1a"] == pytest.approx(skm.f1_score(labels, predictions))
    per_question = [all(predictions[question_ids == q] == labels[question_ids == q]) for q in range(8)]
    assert got["em"] == pytest.approx(sum(per_question) / 8)


def test_multirc_hand_case():
    # question 7: both answers right; question 3: one of three wrong (a missed true answer)
    got = sm.multirc_metrics([1, 0, 1, 0, 0], [1, 0, 1, 1, 0], [7, 7, 3, 3, 3])
    # tp = 2, fp = 0, fn = 1 -> F1 = 4 / 5
    assert got == {"f1a": pytest.approx(0.8), "em": 0.5}


@pytest.mark.parametrize("text, normalised", [
    ("The Eiffel Tower!", "eiffel tower"), ("  a  Cat,  an apple ", "cat apple"), ("Theatre", "theatre"),
    ("U.S.-led", "usled"), ("Caf\u00e9 THE", "caf\u00e9")])
def test_normalisation(text, normalised):
    assert sm.normalize_answer(text) == normalised


def test_record_takes_the_best_answer_per_query():
    predictions = ["Eiffel Tower", "the Paris city", "London"]
    answers = [("eiffel tower.",), ("France", "Paris"), ("Paris",)]
    got = sm.record_metrics(predictions, answers)
    # query 2: "paris city" vs "paris": precision 1/2, recall 1 -> 2/3; vs "france": 0
    assert got["f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert got["em"] == pytest.approx(1 / 3)
    assert sm.token_f1("x b b", "b b c") == pytest.approx(2 / 3)  # repeated tokens count twice
    assert sm.token_f1("a b b", "b b c") == pytest.approx(0.8)  # "a" is an article: 2 of 2 and 2 of 3
    with pytest.raises(ValueError, match="no answers"):
        sm.record_metrics(["x"], [()])


def test_gender_parity_and_mcc():
    assert sm.gender_parity([0, 0, 1, 0, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(2 / 3)
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 2, 30), rng.integers(0, 2, 30)
    assert sm.CLASSIFICATION_METRICS["mcc"](predictions, labels) == pytest.approx(
        skm.matthews_corrcoef(labels, predictions))
