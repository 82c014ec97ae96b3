"""The SuperGLUE tasks: how each is posed to the model, its labels, metrics, splits, files and submission file.

Task names are "superglue/" + tfds' config name, so that they never clash with GLUE's (both have an RTE):

    task = get_task("superglue/copa")
    task.format, task.num_labels, task.main_metric   # "multiple_choice", 2, "accuracy"

Formats (`SuperGlueTask.format`):
  classification   one sequence (or pair) per example, `num_labels` classes: BoolQ, CB, RTE, WiC, WSC, AX-b, AX-g.
  multiple_choice  `num_choices` sequences per example, one score each, softmax over them: COPA.
  candidates       one sequence per candidate answer, scored as a binary class; an example is the group of its
                   candidates: MultiRC (every answer of a question judged true or false), ReCoRD (the best-scoring
                   entity of a query is its answer).
"""

from __future__ import annotations

import dataclasses

PREFIX = "superglue/"


@dataclasses.dataclass(frozen=True)
class SuperGlueTask:
    """A SuperGLUE task.

    label_names are the classes in tfds' id order (for candidates: ("False", "True") of each candidate);
    jsonl_labels how the official JSONL files write those classes (JSON values: booleans, strings or ints), and
    submission_labels how the leaderboard's files take them.
    """

    name: str  # "superglue/boolq"
    tfds_name: str  # "super_glue/boolq"
    directory: str  # of the official layout, e.g. "BoolQ"
    format: str  # "classification", "multiple_choice" or "candidates"
    label_names: tuple[str, ...]
    jsonl_labels: tuple
    submission_labels: tuple
    metric_names: tuple[str, ...]  # the first picks the best checkpoint
    splits: tuple[str, ...]
    files: tuple[tuple[str, str], ...]  # (split, file name under `directory`)
    submission_file: str  # "BoolQ.jsonl"
    num_choices: int = 0  # multiple_choice only

    @property
    def short_name(self) -> str:
        return self.name[len(PREFIX):]

    @property
    def num_labels(self) -> int:
        """Outputs of the model per sequence: classes, or 1 score per choice (multiple_choice)."""
        return 1 if self.format == "multiple_choice" else len(self.label_names)

    @property
    def main_metric(self) -> str:
        return self.metric_names[0]

    @property
    def validation_splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.splits if s == "validation")

    @property
    def test_splits(self) -> tuple[str, ...]:
        return ("test",)

    def file_name(self, split: str) -> str:
        check_split(self, split)
        return dict(self.files)[split]


_STANDARD_FILES = (("train", "train.jsonl"), ("validation", "val.jsonl"), ("test", "test.jsonl"))
_STANDARD_SPLITS = ("train", "validation", "test")
_BOOL = ("False", "True")
_NLI2 = ("entailment", "not_entailment")

_TASKS: dict[str, SuperGlueTask] = {}


def _register(short, directory, fmt, label_names, jsonl_labels, submission_labels, metrics, diagnostic=False,
              num_choices=0):
    splits, files = _STANDARD_SPLITS, _STANDARD_FILES
    if diagnostic:  # test only, one file named after the directory, labelled; predicted by an RTE model
        splits, files = ("test",), (("test", f"{directory}.jsonl"),)
    _TASKS[PREFIX + short] = SuperGlueTask(PREFIX + short, f"super_glue/{short}", directory, fmt, label_names,
                                           jsonl_labels, submission_labels, metrics, splits, files,
                                           f"{directory}.jsonl", num_choices)


# Submission labels as jiant's SuperGLUE baselines wrote them: "true"/"false" for BoolQ and WiC, "True"/"False" for WSC.
_register("boolq", "BoolQ", "classification", _BOOL, (False, True), ("false", "true"), ("accuracy",))
# CB's classes in tfds' order (entailment, contradiction, neutral); the leaderboard averages accuracy and macro-F1,
# selection takes macro-F1 (the classes are unbalanced: few neutral).
_register("cb", "CB", "classification", ("entailment", "contradiction", "neutral"),
          ("entailment", "contradiction", "neutral"), ("entailment", "contradiction", "neutral"),
          ("f1_macro", "accuracy"))
_register("copa", "COPA", "multiple_choice", ("choice1", "choice2"), (0, 1), (0, 1), ("accuracy",), num_choices=2)
_register("multirc", "MultiRC", "candidates", _BOOL, (0, 1), (0, 1), ("f1a", "em"))
_register("record", "ReCoRD", "candidates", _BOOL, (), (), ("f1", "em"))
_register("rte", "RTE", "classification", _NLI2, _NLI2, _NLI2, ("accuracy",))
_register("wic", "WiC", "classification", _BOOL, (False, True), ("false", "true"), ("accuracy",))
_register("wsc", "WSC", "classification", _BOOL, (False, True), ("False", "True"), ("accuracy",))
# The diagnostics: AX-b scored by Matthews correlation, AX-g by gender parity (pairs of examples that differ only in
# the pronoun's gender predicted alike) and accuracy.
_register("axb", "AX-b", "classification", _NLI2, _NLI2, _NLI2, ("mcc",), diagnostic=True)
_register("axg", "AX-g", "classification", _NLI2, _NLI2, _NLI2, ("gender_parity", "accuracy"), diagnostic=True)

TASK_NAMES = tuple(_TASKS)


def is_superglue(name) -> bool:
    return isinstance(name, SuperGlueTask) or str(name).lower().startswith(PREFIX)


def get_task(name: str | SuperGlueTask) -> SuperGlueTask:
    """The task called `name` ("superglue/boolq", ..., "superglue/axb", "superglue/axg")."""
    if isinstance(name, SuperGlueTask):
        return name
    key = str(name).lower()
    if key not in _TASKS:
        raise ValueError(f"unknown SuperGLUE task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return _TASKS[key]


def check_split(task: SuperGlueTask, split: str) -> None:
    if split not in task.splits:
        raise ValueError(f"task {task.name} has no split {split!r}; its splits are {', '.join(task.splits)}")
