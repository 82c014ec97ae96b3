"""Reading a SuperGLUE split, from the official JSONL layout or from tensorflow-datasets, into one example type per
format. Both sources give the same examples; unlabelled (test) examples have label(s) None.

    examples = load_split("superglue/copa", "path/to/superglue", "train")    # or load_split(..., "tfds", "train")

The official layout is the one of SuperGLUE's zip files: BoolQ/{train,val,test}.jsonl, ..., AX-b/AX-b.jsonl,
AX-g/AX-g.jsonl under one directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import types

import numpy as np

from deberta_jax.data.superglue.tasks import SuperGlueTask, get_task
from deberta_jax.data.text_files import not_utf8_error
from deberta_jax.data.tfds_source import prepared_data_source


@dataclasses.dataclass(frozen=True)
class ClassificationExample:
    """One text or a pair; `spans` mark words the task is about: (which text, first char, end char exclusive)."""

    texts: tuple[str, ...]
    label: int | None
    idx: int
    spans: tuple[tuple[int, int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class ChoiceExample:
    """COPA: a premise, whether the choices are its "cause" or its "effect", the choices, the right one's index."""

    premise: str
    question: str
    choices: tuple[str, ...]
    label: int | None
    idx: int


@dataclasses.dataclass(frozen=True)
class CandidatesExample:
    """A question over a passage and its candidate answers, each right (1) or wrong (0).

    MultiRC: a question and its answers (`idx` the question's, `candidate_idx` the answers'). ReCoRD: a query with
    "@placeholder" and the passage's distinct entities, sorted (`idx` the query's, `answers` the right entities'
    texts, which the metrics compare against).
    """

    passage: str
    question: str
    candidates: tuple[str, ...]
    labels: tuple[int, ...] | None
    idx: int
    passage_idx: int
    candidate_idx: tuple[int, ...]
    answers: tuple[str, ...] = ()


# Feature names of the classification tasks' texts, the same in the JSONL files and in tfds.
_TEXT_KEYS = {"boolq": ("question", "passage"), "cb": ("premise", "hypothesis"), "rte": ("premise", "hypothesis"),
              "axb": ("sentence1", "sentence2"), "axg": ("premise", "hypothesis"),
              "wic": ("sentence1", "sentence2"), "wsc": ("text",)}


# ================================================================================================ normalising
def word_span(text: str, first_word: int, span_text: str, where: str) -> tuple[int, int]:
    """(first char, end char) of the `len(span_text.split())` whitespace-separated words of `text` from word
    `first_word` (WSC's spans are word indices)."""
    words = [m.span() for m in re.finditer(r"\S+", text)]
    count = max(1, len(span_text.split()))
    if not 0 <= first_word <= len(words) - count:
        raise ValueError(f"{where}: span {span_text!r} at word {first_word} is outside the text's {len(words)} words")
    return words[first_word][0], words[first_word + count - 1][1]


def _classification(task: SuperGlueTask, row: dict, label: int | None, idx: int, where: str):
    texts = tuple(row[k] for k in _TEXT_KEYS[task.short_name])
    spans = ()
    if task.short_name == "wic":
        spans = ((0, int(row["start1"]), int(row["end1"])), (1, int(row["start2"]), int(row["end2"])))
        for which, start, end in spans:
            if not 0 <= start < end <= len(texts[which]):
                raise ValueError(f"{where}: span [{start}, {end}) is outside sentence{which + 1}")
    elif task.short_name == "wsc":
        spans = tuple((0, *word_span(texts[0], int(row[f"span{k}_index"]), row[f"span{k}_text"], where))
                      for k in (1, 2))
    return ClassificationExample(texts, label, idx, spans)


def _record_entities(passage: dict) -> tuple[str, ...]:
    """The passage's distinct entity texts, sorted (ReCoRD's entity ends are inclusive)."""
    return tuple(sorted({passage["text"][e["start"]:e["end"] + 1] for e in passage["entities"]}))


def _record_example(passage: str, query: str, entities, answers, labelled: bool, idx: int, passage_idx: int):
    entities, answers = tuple(entities), tuple(sorted(set(answers)))
    labels = tuple(int(e in answers) for e in entities) if labelled else None
    return CandidatesExample(passage, query, entities, labels, idx, passage_idx, tuple(range(len(entities))),
                             answers)


# ================================================================================================ JSONL layout
def jsonl_path(task: str | SuperGlueTask, superglue_dir: str | os.PathLike, split: str) -> str:
    task = get_task(task)
    return os.path.join(os.fspath(superglue_dir), task.directory, task.file_name(split))


def _jsonl_rows(path: str):
    """(line number, object) of each non-blank line; a line that is not a JSON object raises naming the line."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}:{number}: not JSON: {error}") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{number}: not a JSON object")
                yield number, row
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None


def _jsonl_label(task: SuperGlueTask, value, where: str, labels=None) -> int:
    labels = task.jsonl_labels if labels is None else labels
    for i, known in enumerate(labels):  # booleans are compared as booleans: True is not 1 here
        if type(value) is type(known) and value == known:
            return i
    raise ValueError(f"{where}: label {value!r} is not one of task {task.name}'s labels {list(labels)}")


def _from_jsonl_row(task: SuperGlueTask, row: dict, where: str) -> list:
    name = task.short_name
    if name == "multirc":
        passage = row["passage"]
        out = []
        for question in passage["questions"]:
            answers = question["answers"]
            labelled = all("label" in a for a in answers)
            labels = tuple(_jsonl_label(task, a["label"], where) for a in answers) if labelled else None
            out.append(CandidatesExample(passage["text"], question["question"], tuple(a["text"] for a in answers),
                                         labels, int(question["idx"]), int(row["idx"]),
                                         tuple(int(a["idx"]) for a in answers)))
        return out
    if name == "record":
        entities = _record_entities(row["passage"])
        return [_record_example(row["passage"]["text"], qa["query"], entities,
                                [a["text"] for a in qa.get("answers", ())], "answers" in qa, int(qa["idx"]),
                                int(row["idx"])) for qa in row["qas"]]
    label = _jsonl_label(task, row["label"], where) if "label" in row else None
    if name == "copa":
        return [ChoiceExample(row["premise"], row["question"], (row["choice1"], row["choice2"]), label,
                              int(row["idx"]))]
    if name == "wsc":
        row = {**row, **row["target"]}
    return [_classification(task, row, label, int(row["idx"]), where)]


def _check_texts(example, where: str) -> None:
    """Every text of `example` is a string (JSON could give numbers, lists, null)."""
    for field in dataclasses.fields(example):
        value = getattr(example, field.name)
        if field.name in ("premise", "question", "passage"):
            value = (value,)
        elif field.name not in ("texts", "choices", "candidates", "answers"):
            continue
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise ValueError(f"{where}: {field.name} holds {bad[0]!r}, not a string")


def load_jsonl_split(task: str | SuperGlueTask, superglue_dir: str | os.PathLike, split: str) -> list:
    """Reads `split` of `task` from the official layout under `superglue_dir`. Raises FileNotFoundError for a missing
    file and ValueError naming the file and line for a line that is not JSON, lacks a field, or has a label outside
    the task's set, or for a file without examples."""
    task = get_task(task)
    path = jsonl_path(task, superglue_dir, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no file {path} (task {task.name}, split {split})")
    examples = []
    for number, row in _jsonl_rows(path):
        where = f"{path}:{number}"
        try:
            new = _from_jsonl_row(task, row, where)
        except KeyError as error:
            raise ValueError(f"{where}: no field {error.args[0]!r}") from None
        except (TypeError, AttributeError, IndexError, ValueError, OverflowError) as error:
            if str(error).startswith(where):
                raise
            detail = " ".join(f"{type(error).__name__}: {error}".split())
            raise ValueError(f"{where}: a field is not as SuperGLUE's {task.directory} writes it ({detail})") from None
        for example in new:
            _check_texts(example, where)
        examples.extend(new)
    if not examples:
        raise ValueError(f"{path}: no examples")
    return examples


# ================================================================================================ tfds
def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _item(value) -> int:
    return int(np.asarray(value).item())


def _tfds_label(record: dict) -> int | None:
    label = _item(record["label"])
    return None if label == -1 else label


def _from_tfds_records(task: SuperGlueTask, records) -> list:
    """Examples in the order of the official files (by idx: tfds stores records shuffled)."""
    name = task.short_name
    if name == "multirc":  # tfds has one record per answer: gather each question's answers
        questions: dict[tuple[int, int], list] = {}
        for r in records:
            questions.setdefault((_item(r["idx"]["paragraph"]), _item(r["idx"]["question"])), []).append(r)
        out = []
        for (paragraph, question), group in sorted(questions.items()):
            group.sort(key=lambda r: _item(r["idx"]["answer"]))
            labels = [_tfds_label(r) for r in group]
            out.append(CandidatesExample(_decode(group[0]["paragraph"]), _decode(group[0]["question"]),
                                         tuple(_decode(r["answer"]) for r in group),
                                         None if None in labels else tuple(labels), question, paragraph,
                                         tuple(_item(r["idx"]["answer"]) for r in group)))
        return out
    if name == "record":
        out = [_record_example(_decode(r["passage"]), _decode(r["query"]), [_decode(e) for e in r["entities"]],
                               [_decode(a) for a in r["answers"]], len(r["answers"]) > 0,
                               _item(r["idx"]["query"]), _item(r["idx"]["passage"])) for r in records]
        return sorted(out, key=lambda e: (e.passage_idx, e.idx))
    if name == "copa":
        out = [ChoiceExample(_decode(r["premise"]), _decode(r["question"]),
                             (_decode(r["choice1"]), _decode(r["choice2"])), _tfds_label(r), _item(r["idx"]))
               for r in records]
    else:
        out = []
        for r in records:
            row = {k: _decode(v) if isinstance(v, bytes) else v for k, v in r.items()}
            out.append(_classification(task, row, _tfds_label(r), _item(r["idx"]),
                                       f"{task.tfds_name} idx {_item(r['idx'])}"))
    return sorted(out, key=lambda e: e.idx)


@contextlib.contextmanager
def _super_glue_without_tensorflow():
    """Registers tfds' super_glue builder; while open, its features build where TensorFlow is not installed.

    In tensorflow-datasets 4.9.10 the builder's `_info` names int32 features as `tf.int32`, the only use of
    TensorFlow in the module; NumPy's int32 is the same feature type to tfds.
    """
    from tensorflow_datasets.text import super_glue

    if importlib.util.find_spec("tensorflow") is not None:
        yield
        return
    original = super_glue.tf
    super_glue.tf = types.SimpleNamespace(int32=np.int32)
    try:
        yield
    finally:
        super_glue.tf = original


def load_tfds_split(task: str | SuperGlueTask, split: str, data_dir: str | None = None) -> list:
    """`split` of `task` through tensorflow-datasets (prepared on first use, without TensorFlow)."""
    task = get_task(task)
    if split not in task.splits:
        raise ValueError(f"task {task.name} has no split {split!r}; its splits are {', '.join(task.splits)}")
    with _super_glue_without_tensorflow():
        source = prepared_data_source(task.tfds_name, split, data_dir)
    examples = _from_tfds_records(task, (source[i] for i in range(len(source))))
    if not examples:
        raise ValueError(f"{task.tfds_name} split {split} has no records")
    return examples


def load_split(task: str | SuperGlueTask, source: str | os.PathLike, split: str, data_dir: str | None = None) -> list:
    """`split` of `task` from tensorflow-datasets (`source` "tfds") or the official layout (`source` a directory)."""
    if os.fspath(source) == "tfds":
        return load_tfds_split(task, split, data_dir)
    return load_jsonl_split(task, source, split)
