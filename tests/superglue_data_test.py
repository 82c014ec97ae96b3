"""SuperGLUE's readers on hand-written fixtures in the official JSONL layout (tests/fixtures/superglue)."""

import json
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deberta_jax.data.superglue import readers, tasks

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "superglue"


@pytest.mark.parametrize("name", tasks.TASK_NAMES)
def test_every_split_of_every_task_reads(name):
    task = tasks.get_task(name)
    for split in task.splits:
        examples = readers.load_split(task, FIXTURES, split)
        assert examples
        labelled = [getattr(e, "label", getattr(e, "labels", None)) is not None for e in examples]
        # the fixtures' test files carry no labels, except the diagnostics', which are labelled
        assert all(labelled) if (split != "test" or task.short_name in ("axb", "axg")) else not any(labelled)


def test_classification_labels_follow_tfds_order():
    cb = readers.load_split("superglue/cb", FIXTURES, "train")
    assert [e.label for e in cb] == [2, 0, 1]  # neutral, entailment, contradiction in tfds' (ent, contra, neutral)
    boolq = readers.load_split("superglue/boolq", FIXTURES, "train")
    assert [e.label for e in boolq] == [1, 0, 1] and boolq[2].texts[0] == 'is caf\u00e9 au lait "coffee"'


def test_wic_spans_are_the_word_in_each_sentence():
    for example in readers.load_split("superglue/wic", FIXTURES, "train"):
        word = {0: "bank", 1: "run"}[example.idx]
        assert [example.texts[t][s:e] for t, s, e in example.spans] == [word, word]


def test_wsc_word_indices_become_character_spans():
    first, second = readers.load_split("superglue/wsc", FIXTURES, "train")
    assert [first.texts[0][s:e] for _, s, e in first.spans] == ["Mark", "He"]
    assert [second.texts[0][s:e] for _, s, e in second.spans] == ["The big red dog", "it"]
    assert (first.label, second.label) == (0, 1)


def test_copa_multirc_record_structure():
    copa = readers.load_split("superglue/copa", FIXTURES, "train")
    assert [e.label for e in copa] == [0, 0, 0, 1] and copa[3].question == "cause"
    assert copa[3].choices == ("I put it in the freezer.", "I left it in the sun.")
    multirc = readers.load_split("superglue/multirc", FIXTURES, "train")
    assert [(e.passage_idx, e.idx, e.candidate_idx, e.labels) for e in multirc] == [
        (0, 0, (0, 1, 2), (1, 0, 1)), (0, 1, (3, 4), (1, 0)), (1, 2, (5, 6), (1, 0))]
    record = readers.load_split("superglue/record", FIXTURES, "train")
    assert [e.idx for e in record] == [0, 1]
    assert record[0].candidates == ("CNN", "Eiffel Tower", "France", "Paris")  # distinct, sorted
    assert record[0].labels == (0, 1, 0, 0) and record[1].labels == (0, 0, 1, 1)
    assert record[1].answers == ("France", "Paris")
    assert readers.load_split("superglue/record", FIXTURES, "test")[0].labels is None


def test_errors_name_file_and_line(tmp_path):
    (tmp_path / "CB").mkdir()
    (tmp_path / "CB" / "train.jsonl").write_text(
        json.dumps({"premise": "a", "hypothesis": "b", "label": "entailment", "idx": 0}) + "\n"
        + json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe", "idx": 1}) + "\n")
    with pytest.raises(ValueError, match=r"train.jsonl:2: label 'maybe'"):
        readers.load_split("superglue/cb", tmp_path, "train")
    (tmp_path / "CB" / "val.jsonl").write_text('{"premise": "a", "idx": 0}\n')
    with pytest.raises(ValueError, match=r"val.jsonl:1: no field 'hypothesis'"):
        readers.load_split("superglue/cb", tmp_path, "validation")
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        readers.load_split("superglue/cb", tmp_path, "test")
    (tmp_path / "WiC").mkdir()
    (tmp_path / "WiC" / "train.jsonl").write_text(json.dumps(
        {"word": "x", "sentence1": "ab", "sentence2": "cd", "idx": 0, "label": 1, "start1": 0, "end1": 1,
         "start2": 0, "end2": 1}) + "\n")
    with pytest.raises(ValueError, match=r"label 1 is not one of"):  # WiC's labels are JSON booleans
        readers.load_split("superglue/wic", tmp_path, "train")
    with pytest.raises(ValueError, match="unknown SuperGLUE task"):
        tasks.get_task("superglue/nope")
    with pytest.raises(ValueError, match="no split 'train'"):
        readers.load_split("superglue/axb", FIXTURES, "train")


# ---------------------------------------------------------------------------------------------- fuzzing
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 40) | st.text(max_size=6),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                      max_size=3), max_leaves=6)


def _paths(value, prefix=()):
    """Every (path to a value) inside a JSON object."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


def _replace(value, path, new):
    """A copy of `value` with the item at `path` replaced by `new`."""
    if not path:
        return new
    copy = list(value) if isinstance(value, list) else dict(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


def _delete(value, path):
    """A copy of `value` without the item at `path`."""
    if len(path) > 1:
        return _replace(value, path[:1], _delete(value[path[0]], path[1:]))
    if isinstance(value, list):
        return [v for i, v in enumerate(value) if i != path[0]]
    return {k: v for k, v in value.items() if k != path[0]}


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), name=st.sampled_from(tasks.TASK_NAMES))
def test_a_mangled_row_reads_or_names_file_and_line(tmp_path_factory, data, name):
    """One field of a fixture row replaced by any JSON value (or deleted): the reader reads it or raises a one-line
    ValueError naming the file and line, never a TypeError from the middle of the code."""
    task = tasks.get_task(name)
    split = task.splits[0]
    source = FIXTURES / task.directory / task.file_name(split)
    row = json.loads(source.read_text().splitlines()[0])
    path = data.draw(st.sampled_from(list(_paths(row))[1:]))
    row = _replace(row, path, data.draw(JSON_VALUES)) if data.draw(st.booleans()) else _delete(row, path)
    root = tmp_path_factory.mktemp("mangled")
    (root / task.directory).mkdir()
    (root / task.directory / task.file_name(split)).write_text(json.dumps(row) + "\n")
    try:
        examples = readers.load_split(task, root, split)
    except ValueError as error:
        assert f"{task.file_name(split)}:1: " in str(error) and "\n" not in str(error), repr(error)
    else:
        assert examples
