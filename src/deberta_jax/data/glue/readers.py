"""Reading a GLUE split into `Example`s, from the official TSV layout or from tensorflow-datasets.

Test splits have no labels (`Example.label` None).

    examples = load_split("mrpc", "path/to/glue_data", "train")     # or load_split("mrpc", "tfds", "train")
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Iterator

import numpy as np

from deberta_jax.data.glue.tasks import STSB_RANGE, GlueTask, check_split, get_task
from deberta_jax.data.text_files import not_utf8_error
from deberta_jax.data.tfds_source import prepared_data_source


@dataclasses.dataclass(frozen=True)
class Example:
    """One example: `text_b` is None for single-sentence tasks, `label` None where the split has no labels.

    `idx` is the example's position in its split (tfds' `idx` feature), which GLUE's submission files use as index.
    """

    text_a: str
    text_b: str | None
    label: float | int | None
    idx: int


# ================================================================================================ TSV layout
def tsv_path(task: str | GlueTask, glue_dir: str | os.PathLike, split: str) -> str:
    """Path of `split`'s file under `glue_dir` (the directory holding CoLA/, SST-2/, ..., diagnostic/)."""
    task = get_task(task)
    return os.path.join(os.fspath(glue_dir), task.glue_dir, task.tsv_file(split).file_name)


def _parse_label(task: GlueTask, raw: str, where: str) -> int | float:
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not STSB_RANGE[0] <= value <= STSB_RANGE[1]:  # also rejects nan
            raise ValueError(f"{where}: label {raw!r} is not a score in [{STSB_RANGE[0]:g}, {STSB_RANGE[1]:g}] "
                             f"for task {task.name}")
        return value
    if raw not in task.tsv_labels:
        raise ValueError(f"{where}: label {raw!r} is not one of task {task.name}'s labels {list(task.tsv_labels)}")
    return task.tsv_labels.index(raw)


def _tsv_lines(path: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its "\n" or "\r\n") of a UTF-8 file, streamed; a leading byte-order mark
    and trailing blank lines are dropped. Lines end at "\n" only, so a lone "\r" stays inside its field. A byte
    that is not UTF-8 raises ValueError naming its line and byte offset."""
    blank: list[tuple[int, str]] = []  # blank lines held back until a later line shows they are not trailing
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for number, line in enumerate(f, start=1):
                line = line[:-1] if line.endswith("\n") else line
                line = line[:-1] if line.endswith("\r") else line
                if not line:
                    blank.append((number, line))
                    continue
                yield from blank
                blank.clear()
                yield number, line
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None


def load_tsv_split(task: str | GlueTask, glue_dir: str | os.PathLike, split: str) -> list[Example]:
    """Reads `split` of `task` from the official GLUE layout under `glue_dir` (e.g. glue_dir/MNLI/dev_matched.tsv).

    Fields are split on tabs only: quotes are text (as csv.QUOTE_NONE reads them). A UTF-8 byte-order mark (MRPC's
    train and dev files have one) and trailing blank lines are ignored; every other line must be a complete row.
    Raises FileNotFoundError for a missing file and ValueError, naming the file and line, for bytes that are not
    UTF-8, a header lacking a needed column, a row with the wrong number of fields, a label outside the task's set,
    or a split with no rows.
    """
    task = get_task(task)
    spec = task.tsv_file(split)
    path = tsv_path(task, glue_dir, split)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {split} file for task {task.name}: {path} does not exist")
    lines = _tsv_lines(path)
    first = next(lines, None)
    if spec.header is not None:
        if first is None:
            raise ValueError(f"{path} is empty: task {task.name}, split {split} has no header and no rows")
        header = first[1].split("\t")
        needed = list(spec.text_columns) + ([spec.label_column] if spec.label_column is not None else [])
        missing = [c for c in needed if c not in header]
        if missing:
            raise ValueError(f"{path}: the header lacks the column(s) {missing} that task {task.name} reads; "
                             f"found {header}, expected a header like {list(spec.header)}")
        text_pos = [header.index(c) for c in spec.text_columns]
        label_pos = header.index(spec.label_column) if spec.label_column is not None else None
        num_fields = len(header)
        expected = f"{num_fields} tab-separated fields as in the header"
    else:
        lines = itertools.chain([first] if first is not None else [], lines)
        text_pos, label_pos = list(spec.text_columns), spec.label_column
        num_fields = spec.num_fields
        expected = f"{num_fields} tab-separated fields (no header)"
    examples = []
    for line_number, line in lines:
        fields = line.split("\t")
        where = f"{path}, line {line_number}"
        if len(fields) != num_fields:
            raise ValueError(f"{where}: expected {expected}, got {len(fields)}")
        texts = [fields[i] for i in text_pos]
        label = None if label_pos is None else _parse_label(task, fields[label_pos], where)
        examples.append(Example(texts[0], texts[1] if task.is_pair else None, label, len(examples)))
    if not examples:
        raise ValueError(f"{path} has no rows: task {task.name}, split {split} is empty")
    return examples


# ================================================================================================ tfds
def _decode(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def load_tfds_split(task: str | GlueTask, split: str, data_dir: str | None = None) -> list[Example]:
    """Reads `split` of `task` from tfds' GLUE builder (array_record files; no TensorFlow needed).

    The first read of a task downloads and prepares it in `data_dir` (tfds' default: $TFDS_DATA_DIR or
    ~/tensorflow_datasets); see data/tfds_source.py. tfds writes label -1 in test splits; those become None.
    `Example.idx` is tfds' `idx` feature: the row in the split's file, except for MRPC's train and validation
    splits, where it is the row in Microsoft's original training file.
    """
    task = get_task(task)
    check_split(task, split)
    # Registers the builder. tfds' own lazy registry imports its dataset modules in a fixed order and stops at the
    # first that fails to import (nearest_neighbors and d4rl need h5py), before it reaches text/glue.py.
    import tensorflow_datasets.text.glue  # noqa: F401

    source = prepared_data_source(task.tfds_name, split, data_dir)
    examples = []
    for position in range(len(source)):
        record = source[position]
        missing = [k for k in (*task.text_keys, "label", "idx") if k not in record]
        if missing:
            raise ValueError(f"{task.tfds_name} split {split}, record {position}: no feature(s) {missing}; "
                             f"it has {sorted(record)}")
        texts = [_decode(record[k]) for k in task.text_keys]
        raw = np.asarray(record["label"]).item()
        if raw == -1:
            label = None
        elif task.is_regression:
            label = float(raw)
        else:
            label = int(raw)
            if not 0 <= label < task.num_labels:
                raise ValueError(f"{task.tfds_name} split {split}, record {position}: label {raw} is not in "
                                 f"[0, {task.num_labels}) (task {task.name}'s labels {list(task.label_names)})")
        examples.append(Example(texts[0], texts[1] if task.is_pair else None, label,
                                int(np.asarray(record["idx"]).item())))
    if not examples:
        raise ValueError(f"{task.tfds_name} split {split} has no records")
    return examples


def load_split(task: str | GlueTask, source: str | os.PathLike, split: str,
               data_dir: str | None = None) -> list[Example]:
    """`split` of `task` from tensorflow-datasets (`source` "tfds"; `data_dir` is tfds') or from the official TSV
    layout (`source` the directory holding CoLA/, SST-2/, ...)."""
    if os.fspath(source) == "tfds":
        return load_tfds_split(task, split, data_dir)
    return load_tsv_split(task, source, split)
