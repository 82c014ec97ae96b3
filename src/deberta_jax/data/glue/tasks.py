"""The GLUE tasks: features, labels, metrics, splits, and the files of the official TSV layout.

Labels are integer ids in GLUE's (and tfds') order, e.g. MNLI entailment / neutral / contradiction = 0 / 1 / 2 and
QNLI, RTE not_entailment = 1; STS-B scores are floats in [0, 5].

    task = get_task("mrpc")
    task.num_labels, task.metric_names, task.main_metric   # 2, ("f1", "accuracy"), "f1"
"""

from __future__ import annotations

import dataclasses

STSB_RANGE = (0.0, 5.0)


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
    metric_names: tuple[str, ...]  # GLUE's, in order; the first is `main_metric`
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

    @property
    def main_metric(self) -> str:
        """The metric that picks the best checkpoint: the first of metric_names.

        GLUE's leaderboard scores a task with two metrics by their mean; for selection we follow the usual single
        choice: F1 for MRPC and QQP (the positive class is the rarer one), Pearson for STS-B, Matthews correlation
        for CoLA and AX, accuracy for the rest.
        """
        return self.metric_names[0]

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
