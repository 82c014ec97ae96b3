"""GLUE: the task registry, readers for the official TSV layout and for tensorflow-datasets, encoding, and
fixed-shape batches bucketed by length.

Labels are integer ids in GLUE's (and tfds') order, e.g. MNLI entailment / neutral / contradiction = 0 / 1 / 2 and
QNLI, RTE not_entailment = 1; STS-B scores are floats in [0, 5]. Test splits have no labels (`Example.label` None,
-1 once encoded).

    task = get_task("mrpc")
    examples = load_split(task, "path/to/glue_data", "train")     # or load_split(task, "tfds", "train")
    encoded = encode_examples(examples, task, tokenizer, max_length=128)
    for batch in bucketed_batches(encoded, 32, shuffle=True, seed=0, epoch=0):
        batch["input_ids"]   # [32, L] with L one of encoded.buckets
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

DEFAULT_BUCKETS = (32, 64, 128, 256, 512)
STSB_RANGE = (0.0, 5.0)


# ================================================================================================ registry
@dataclasses.dataclass(frozen=True)
class TsvFile:
    """One file of the official layout.

    `header` is the file's official first line; None means the file has no header (CoLA train/dev) and columns are
    found by position. Otherwise columns are found by name in the header the file actually has, and every row must
    have as many fields as that header.
    """

    file_name: str
    header: tuple[str, ...] | None
    text_columns: tuple[str, ...] | tuple[int, ...]  # names (with a header) or 0-based positions (without)
    label_column: str | int | None  # None: no labels (test files)
    num_fields: int | None = None  # fields per row of a headerless file


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """A GLUE task: its features, labels, metrics, splits and files.

    label_names are GLUE's class names in id order (empty for STS-B, a regression); tsv_labels are how the TSV files
    and submission files write those classes ("0"/"1" or the names themselves).
    """

    name: str
    tfds_name: str
    text_keys: tuple[str, ...]  # tfds feature names: one (single sentence) or two (pair)
    label_names: tuple[str, ...]
    tsv_labels: tuple[str, ...]
    metric_names: tuple[str, ...]
    splits: tuple[str, ...]  # tfds split names, e.g. "train", "validation_matched", "test"
    validation_splits: tuple[str, ...]
    test_splits: tuple[str, ...]
    glue_dir: str  # directory of the official layout, e.g. "SST-2"
    files: tuple[tuple[str, TsvFile], ...]  # (split, file) pairs
    submission_files: tuple[tuple[str, str], ...]  # (test split, file name GLUE expects)

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        """Outputs of the classifier: 1 for regression (STS-B), else the number of classes."""
        return len(self.label_names) or 1

    @property
    def is_pair(self) -> bool:
        return len(self.text_keys) == 2

    def tsv_file(self, split: str) -> TsvFile:
        check_split(self, split)
        return dict(self.files)[split]


def _task(name, tfds_name, text_keys, label_names, tsv_labels, metric_names, glue_dir, header_train, header_test,
          text_train, text_test, label_column, submission):
    """Builds a standard task: train.tsv / dev.tsv / test.tsv with headers (MNLI and CoLA are built by hand)."""
    files = (("train", TsvFile("train.tsv", header_train, text_train, label_column)),
             ("validation", TsvFile("dev.tsv", header_train, text_train, label_column)),
             ("test", TsvFile("test.tsv", header_test, text_test, None)))
    return GlueTask(name, tfds_name, text_keys, label_names, tsv_labels, metric_names,
                    ("train", "validation", "test"), ("validation",), ("test",), glue_dir, files,
                    (("test", submission),))


_BINARY = ("0", "1")
_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")
_PAIR_IDX = ("index", "sentence1", "sentence2")
_MNLI_TEST_HEADER = ("index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                     "sentence1_parse", "sentence2_parse", "sentence1", "sentence2")
_MNLI_TRAIN_HEADER = _MNLI_TEST_HEADER + ("label1", "gold_label")
_MNLI_DEV_HEADER = _MNLI_TEST_HEADER + ("label1", "label2", "label3", "label4", "label5", "gold_label")
_STSB_TEST_HEADER = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1",
                     "sentence2")
_MRPC_HEADER = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")

_TASKS: dict[str, GlueTask] = {}


def _register(task: GlueTask) -> None:
    _TASKS[task.name] = task


_register(GlueTask(
    "cola", "glue/cola", ("sentence",), ("unacceptable", "acceptable"), _BINARY, ("mcc",),
    ("train", "validation", "test"), ("validation",), ("test",), "CoLA",
    # train/dev: no header; fields source, label, original label (blank or "*"), sentence.
    (("train", TsvFile("train.tsv", None, (3,), 1, 4)), ("validation", TsvFile("dev.tsv", None, (3,), 1, 4)),
     ("test", TsvFile("test.tsv", ("index", "sentence"), ("sentence",), None))),
    (("test", "CoLA.tsv"),)))
_register(_task("sst2", "glue/sst2", ("sentence",), ("negative", "positive"), _BINARY, ("accuracy",), "SST-2",
                ("sentence", "label"), ("index", "sentence"), ("sentence",), ("sentence",), "label",
                "SST-2.tsv"))
_register(_task("mrpc", "glue/mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), _BINARY,
                ("f1", "accuracy"), "MRPC", _MRPC_HEADER, ("index",) + _MRPC_HEADER[1:],
                ("#1 String", "#2 String"), ("#1 String", "#2 String"), "Quality", "MRPC.tsv"))
_register(_task("qqp", "glue/qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), _BINARY,
                ("f1", "accuracy"), "QQP", ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
                ("id", "question1", "question2"), ("question1", "question2"), ("question1", "question2"),
                "is_duplicate", "QQP.tsv"))
_register(_task("stsb", "glue/stsb", ("sentence1", "sentence2"), (), (), ("pearson", "spearman"), "STS-B",
                _STSB_TEST_HEADER + ("score",), _STSB_TEST_HEADER, ("sentence1", "sentence2"),
                ("sentence1", "sentence2"), "score", "STS-B.tsv"))
_register(GlueTask(
    "mnli", "glue/mnli", ("premise", "hypothesis"), _NLI3, _NLI3, ("accuracy",),
    ("train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"),
    ("validation_matched", "validation_mismatched"), ("test_matched", "test_mismatched"), "MNLI",
    (("train", TsvFile("train.tsv", _MNLI_TRAIN_HEADER, ("sentence1", "sentence2"), "gold_label")),
     ("validation_matched", TsvFile("dev_matched.tsv", _MNLI_DEV_HEADER, ("sentence1", "sentence2"), "gold_label")),
     ("validation_mismatched",
      TsvFile("dev_mismatched.tsv", _MNLI_DEV_HEADER, ("sentence1", "sentence2"), "gold_label")),
     ("test_matched", TsvFile("test_matched.tsv", _MNLI_TEST_HEADER, ("sentence1", "sentence2"), None)),
     ("test_mismatched", TsvFile("test_mismatched.tsv", _MNLI_TEST_HEADER, ("sentence1", "sentence2"), None))),
    (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv"))))
_register(_task("qnli", "glue/qnli", ("question", "sentence"), _NLI2, _NLI2, ("accuracy",), "QNLI",
                ("index", "question", "sentence", "label"), ("index", "question", "sentence"),
                ("question", "sentence"), ("question", "sentence"), "label", "QNLI.tsv"))
_register(_task("rte", "glue/rte", ("sentence1", "sentence2"), _NLI2, _NLI2, ("accuracy",), "RTE",
                _PAIR_IDX + ("label",), _PAIR_IDX, ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
                "RTE.tsv"))
# WNLI writes 0/1 with 1 = entailment, so its class order is the reverse of RTE's (as in tfds).
_register(_task("wnli", "glue/wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), _BINARY,
                ("accuracy",), "WNLI", _PAIR_IDX + ("label",), _PAIR_IDX, ("sentence1", "sentence2"),
                ("sentence1", "sentence2"), "label", "WNLI.tsv"))
# The diagnostic set: test only, predicted by an MNLI model, scored by GLUE with the 3-class Matthews correlation.
_register(GlueTask(
    "ax", "glue/ax", ("premise", "hypothesis"), _NLI3, _NLI3, ("mcc",), ("test",), (), ("test",), "diagnostic",
    (("test", TsvFile("diagnostic.tsv", _PAIR_IDX, ("sentence1", "sentence2"), None)),),
    (("test", "AX.tsv"),)))

TASK_NAMES = tuple(_TASKS)


def get_task(name: str | GlueTask) -> GlueTask:
    """The task called `name` ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax")."""
    if isinstance(name, GlueTask):
        return name
    key = str(name).lower()
    if key not in _TASKS:
        raise ValueError(f"unknown GLUE task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return _TASKS[key]


def check_split(task: GlueTask, split: str) -> None:
    if split not in task.splits:
        raise ValueError(f"task {task.name} has no split {split!r}; its splits are {', '.join(task.splits)}")


@dataclasses.dataclass(frozen=True)
class Example:
    """One example: `text_b` is None for single-sentence tasks, `label` None where the split has no labels.

    `idx` is the example's position in its split (tfds' `idx` feature), which GLUE's submission files use as index.
    """

    text_a: str
    text_b: str | None
    label: float | int | None
    idx: int


# ================================================================================================ TSV reader
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
    and trailing blank lines are dropped. Lines end at "\n" only, so a lone "\r" stays inside its field."""
    blank: list[tuple[int, str]] = []  # blank lines held back until a later line shows they are not trailing
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


def load_tsv_split(task: str | GlueTask, glue_dir: str | os.PathLike, split: str) -> list[Example]:
    """Reads `split` of `task` from the official GLUE layout under `glue_dir` (e.g. glue_dir/MNLI/dev_matched.tsv).

    Fields are split on tabs only: quotes are text (as csv.QUOTE_NONE reads them). A UTF-8 byte-order mark (MRPC's
    train and dev files have one) and trailing blank lines are ignored; every other line must be a complete row.
    Raises FileNotFoundError for a missing file and ValueError, naming the file and line, for a header lacking a
    needed column, a row with the wrong number of fields, a label outside the task's set, or a split with no rows.
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


# ================================================================================================ tfds reader
def _decode(value) -> str:
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def load_tfds_split(task: str | GlueTask, split: str, data_dir: str | None = None) -> list[Example]:
    """Reads `split` of `task` through `tfds.data_source` (array_record files; no TensorFlow needed).

    The dataset must already be prepared in `data_dir` (or tfds' default directory). tfds writes label -1 in test
    splits; those become None. `Example.idx` is tfds' `idx` feature: the row in the split's file, except for MRPC's
    train and validation splits, where it is the row in Microsoft's original training file.
    """
    task = get_task(task)
    check_split(task, split)
    import tensorflow_datasets as tfds
    import tensorflow_datasets.text.glue  # noqa: F401  registers the builder, which `import tfds` leaves lazy

    source = tfds.data_source(task.tfds_name, split=split, data_dir=data_dir)
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


# ================================================================================================ encoding
def bucket_lengths(buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
    """The sorted bucket lengths below `max_length`, then `max_length` itself."""
    if max_length < 3:
        raise ValueError(f"max_length={max_length}: must be >= 3 ([CLS], a token and [SEP])")
    bad = [b for b in buckets if int(b) != b or b < 1]
    if bad:
        raise ValueError(f"bucket lengths must be positive integers, got {list(buckets)}")
    return tuple(sorted({int(b) for b in buckets if b < max_length})) + (max_length,)


@dataclasses.dataclass(frozen=True, eq=False)
class EncodedSplit:
    """Token ids of a split, ragged: example i is `input_ids[offsets[i]:offsets[i+1]]` ([CLS] A [SEP] (B [SEP])),
    every token real (its attention mask is all ones).

    Fields:
      input_ids, token_type_ids: [total_tokens] int32.
      offsets: [n + 1] int64, offsets[0] = 0.
      labels: [n] int32 (class ids) or float32 (STS-B); -1 where the example has no label.
      idx: [n] int64, the examples' `idx`.
      max_length: the length examples were truncated to; buckets: sorted batch lengths, the last is max_length.
      num_truncated: how many examples were longer than max_length and cut ("longest_first").
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    idx: np.ndarray
    max_length: int
    buckets: tuple[int, ...]
    num_truncated: int
    cls_id: int
    sep_id: int
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        """[n] int64 tokens per example, special tokens included."""
        return np.diff(self.offsets)

    def rows(self, indices: Sequence[int] | np.ndarray, length: int) -> dict[str, np.ndarray]:
        """input_ids, token_type_ids, attention_mask [len(indices), length] int32 of examples `indices`, padded."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        lengths = self.lengths[indices]
        if len(indices) and lengths.max() > length:
            raise ValueError(f"length={length} is shorter than the longest of these examples ({lengths.max()})")
        positions = np.arange(length)
        mask = positions < lengths[:, None]  # [m, length]
        flat = np.where(mask, self.offsets[indices][:, None] + positions, 0)
        ids = np.where(mask, self.input_ids[flat], self.pad_id).astype(np.int32)
        types = np.where(mask, self.token_type_ids[flat], 0).astype(np.int32)
        return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask.astype(np.int32)}


def encode_examples(examples: Sequence[Example], task: str | GlueTask, tokenizer: "DebertaV3Tokenizer",
                    max_length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> EncodedSplit:
    """Tokenizes `examples` as `[CLS] a [SEP]` or `[CLS] a [SEP] b [SEP]` (token types 0, then 1 for b's part).

    Examples longer than `max_length` are cut with "longest_first" truncation and counted in `num_truncated`.
    Labels must suit the task (class ids in range, finite scores) or be None.
    """
    task = get_task(task)
    if not examples:
        raise ValueError(f"no examples to encode for task {task.name}")
    buckets = bucket_lengths(buckets, max_length)
    for example in examples:
        if (example.text_b is not None) != task.is_pair:
            raise ValueError(f"example idx={example.idx}: task {task.name} takes "
                             f"{'sentence pairs' if task.is_pair else 'single sentences'}")
    texts = [e.text_a for e in examples]
    pairs = [e.text_b for e in examples] if task.is_pair else None
    full = tokenizer(texts, pairs)
    long_rows = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > max_length]
    if long_rows:
        cut = tokenizer([texts[i] for i in long_rows], [pairs[i] for i in long_rows] if pairs else None,
                        max_length=max_length, truncation="longest_first")
        for key in ("input_ids", "token_type_ids"):
            for i, row in zip(long_rows, cut[key]):
                full[key][i] = row
    lengths = np.array([len(ids) for ids in full["input_ids"]], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return EncodedSplit(
        input_ids=np.fromiter((t for row in full["input_ids"] for t in row), np.int32, int(offsets[-1])),
        token_type_ids=np.fromiter((t for row in full["token_type_ids"] for t in row), np.int32, int(offsets[-1])),
        offsets=offsets, labels=_label_array(task, examples), idx=np.array([e.idx for e in examples], np.int64),
        max_length=max_length, buckets=buckets, num_truncated=len(long_rows),
        cls_id=tokenizer.cls_id, sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)


def _label_array(task: GlueTask, examples: Sequence[Example]) -> np.ndarray:
    """[n] float32 scores (regression) or int32 class ids, -1 for None."""
    out = np.empty(len(examples), np.float32 if task.is_regression else np.int32)
    for i, example in enumerate(examples):
        label = example.label
        if label is None:
            out[i] = -1
        elif task.is_regression:
            if not math.isfinite(float(label)):
                raise ValueError(f"example idx={example.idx}: label {label!r} is not a finite score")
            out[i] = label
        else:
            if int(label) != label or not 0 <= label < task.num_labels:
                raise ValueError(f"example idx={example.idx}: label {label!r} is not a class id in "
                                 f"[0, {task.num_labels}) of task {task.name}")
            out[i] = label
    return out


# ================================================================================================ batching
def num_batches(encoded: EncodedSplit, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches per epoch of `bucketed_batches`."""
    return len(encoded) // batch_size if drop_remainder else -(-len(encoded) // batch_size)


def bucketed_batches(encoded: EncodedSplit, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0, *,
                     sort_window: int = 1, drop_remainder: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of fixed-shape batches.

    Order: `np.random.default_rng([seed, epoch]).permutation(n)` (or 0..n-1 without shuffle), cut into windows of
    `sort_window * batch_size` examples; within a window examples are sorted by length (stably) and cut into batches,
    whose order is then shuffled (with shuffle). sort_window=1 keeps the permutation's order; larger windows pad
    less. Each batch is padded to the smallest of `encoded.buckets` that holds its longest example, so a run sees at
    most len(buckets) shapes per batch size.

    Every batch has exactly `batch_size` rows: the last one of the epoch is filled with padding rows of weight 0
    (`[CLS] [SEP]`, label 0, idx -1), so every example appears exactly once with weight 1; with drop_remainder that
    incomplete batch is skipped instead.

    Yields:
      {"input_ids", "token_type_ids", "attention_mask": [batch_size, L] int32, "labels": [batch_size] int32 or
       float32 (-1 where unlabelled), "idx": [batch_size] int64, "weights": [batch_size] float32}
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if sort_window < 1:
        raise ValueError(f"sort_window={sort_window}: must be >= 1")
    n = len(encoded)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n) if shuffle else np.arange(n)
    lengths = encoded.lengths
    buckets = np.asarray(encoded.buckets)
    window = sort_window * batch_size
    for start in range(0, n, window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")] if sort_window > 1 else chunk
        batches = [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
        if shuffle and len(batches) > 1:
            full = [b for b in batches if len(b) == batch_size]
            partial = [b for b in batches if len(b) < batch_size]  # kept last: at most one, the epoch's end
            batches = [full[i] for i in rng.permutation(len(full))] + partial
        for members in batches:
            if len(members) < batch_size and drop_remainder:
                continue
            yield _batch(encoded, members, batch_size, buckets)


def _batch(encoded: EncodedSplit, members: np.ndarray, batch_size: int, buckets: np.ndarray) -> dict:
    length = int(buckets[np.searchsorted(buckets, encoded.lengths[members].max())])
    batch = encoded.rows(members, length)
    n_pad = batch_size - len(members)
    if n_pad:
        pad_row = np.full(length, encoded.pad_id, np.int32)
        pad_row[:2] = encoded.cls_id, encoded.sep_id
        mask_row = (np.arange(length) < 2).astype(np.int32)
        batch["input_ids"] = np.concatenate([batch["input_ids"], np.tile(pad_row, (n_pad, 1))])
        batch["token_type_ids"] = np.concatenate([batch["token_type_ids"], np.zeros((n_pad, length), np.int32)])
        batch["attention_mask"] = np.concatenate([batch["attention_mask"], np.tile(mask_row, (n_pad, 1))])
    batch["labels"] = np.concatenate([encoded.labels[members], np.zeros(n_pad, encoded.labels.dtype)])
    batch["idx"] = np.concatenate([encoded.idx[members], np.full(n_pad, -1, np.int64)])
    batch["weights"] = np.concatenate([np.ones(len(members), np.float32), np.zeros(n_pad, np.float32)])
    return batch
