"""From logits to SuperGLUE predictions, metrics and submission files, on the hand-written fixtures: logits that
favour the known answers score perfectly, reversed ones as the metrics' definitions say, and every task's submission
file has the leaderboard's name and fields."""

import json
import pathlib

import numpy as np
import pytest

from deberta_jax.data.superglue import encoding, readers, tasks
from deberta_jax.finetuning import superglue_predictions as sp

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "superglue"


class _CharTokenizer:
    """Enough of the tokenizer interface for encode_examples: one id per character."""

    cls_id, sep_id, pad_id = 1, 2, 0

    def __call__(self, texts, pairs=None, max_length=None, truncation=None):
        out = {"input_ids": [], "token_type_ids": []}
        for i, text in enumerate(texts):
            a = [3 + ord(c) % 50 for c in text][:20]
            b = [3 + ord(c) % 50 for c in pairs[i]][:20] if pairs else []
            ids = [1] + a + [2] + (b + [2] if pairs else [])
            out["input_ids"].append(ids)
            out["token_type_ids"].append([0] * (len(a) + 2) + [1] * (len(ids) - len(a) - 2))
        return out


def _encoded(name, split):
    task = tasks.get_task(name)
    return encoding.encode_task(readers.load_split(task, FIXTURES, split), task, _CharTokenizer(), max_length=64)


def _oracle_logits(encoded, flip=False):
    """Logits whose argmax is the known answer (or, with flip, any other class)."""
    if encoded.task.format == "candidates":
        labels = encoded.rows.labels
        width = 2
    else:
        labels = encoded.labels
        width = encoded.task.num_choices or encoded.task.num_labels
    labels = (labels + 1) % width if flip else labels
    return np.eye(width)[labels] * 3.0


@pytest.mark.parametrize("name", [n for n in tasks.TASK_NAMES if n not in ("superglue/axb", "superglue/axg")])
def test_oracle_logits_score_perfectly(name):
    encoded = _encoded(name, "validation")
    got = sp.metrics(encoded, _oracle_logits(encoded))
    assert set(got) == set(encoded.task.metric_names) and all(v == pytest.approx(1.0) for v in got.values()), got


def test_wrong_logits_score_as_defined():
    multirc = _encoded("superglue/multirc", "validation")
    assert sp.metrics(multirc, _oracle_logits(multirc, flip=True)) == {"f1a": 0.0, "em": 0.0}
    record = _encoded("superglue/record", "validation")
    # query 0 (Eiffel Tower) and query 1 (France / Paris): every wrong entity shares no token with the answers
    assert sp.metrics(record, _oracle_logits(record, flip=True)) == {"f1": 0.0, "em": 0.0}
    axg = _encoded("superglue/axg", "test")
    # one pair (idx 0, 1) with both labels entailment; predicting 0 then 1 breaks parity and halves accuracy
    assert sp.metrics(axg, np.array([[1.0, 0.0], [0.0, 1.0]])) == {"gender_parity": 0.0, "accuracy": 0.5}


def test_record_picks_the_best_scoring_candidate_of_each_query():
    record = _encoded("superglue/record", "test")  # candidates CNN, Eiffel Tower, France, Paris per query
    logits = np.zeros((8, 2))
    logits[[1, 7], 1] = [0.5, 2.0]  # query 0: Eiffel Tower; query 1: Paris
    logits[6, 0] = -5.0  # query 1: France's margin true - false is 5, above Paris' 2
    assert sp.predictions(record, logits) == ["Eiffel Tower", "France"]


def test_submission_takes_the_test_split_only(tmp_path):
    encoded = _encoded("superglue/rte", "validation")
    with pytest.raises(ValueError, match="test split, not 'validation'"):
        sp.write_submission(encoded, _oracle_logits(encoded), tmp_path, split="validation")


def test_submission_files(tmp_path):
    written = {}
    for name in tasks.TASK_NAMES:
        encoded = _encoded(name, "test")
        path = sp.write_submission(encoded, _oracle_logits(encoded, flip=True) if name != "superglue/record"
                                   else np.tile([[0.0, 1.0]], (len(encoded.rows), 1)), tmp_path)
        written[pathlib.Path(path).name] = [json.loads(line) for line in open(path)]
    assert sorted(written) == sorted(["BoolQ.jsonl", "CB.jsonl", "COPA.jsonl", "MultiRC.jsonl", "ReCoRD.jsonl",
                                      "RTE.jsonl", "WiC.jsonl", "WSC.jsonl", "AX-b.jsonl", "AX-g.jsonl"])
    # test labels are unknown (-1): flip gives class 0 everywhere
    assert written["BoolQ.jsonl"] == [{"idx": i, "label": "false"} for i in range(3)]
    assert written["WiC.jsonl"][0] == {"idx": 0, "label": "false"}
    assert written["WSC.jsonl"][1] == {"idx": 1, "label": "False"}
    assert written["CB.jsonl"][0] == {"idx": 0, "label": "entailment"}
    assert written["COPA.jsonl"] == [{"idx": i, "label": 0} for i in range(4)]
    assert written["AX-b.jsonl"][1]["label"] in ("entailment", "not_entailment")
    assert written["ReCoRD.jsonl"] == [{"idx": 0, "label": "CNN"}, {"idx": 1, "label": "CNN"}]  # ties: the first
    assert written["MultiRC.jsonl"] == [
        {"idx": 0, "passage": {"questions": [{"idx": 0, "answers": [{"idx": a, "label": 0} for a in (0, 1, 2)]},
                                             {"idx": 1, "answers": [{"idx": a, "label": 0} for a in (3, 4)]}]}},
        {"idx": 1, "passage": {"questions": [{"idx": 2, "answers": [{"idx": a, "label": 0} for a in (5, 6)]}]}}]
