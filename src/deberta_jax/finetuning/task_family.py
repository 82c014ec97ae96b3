"""What fine-tuning and prediction ask of a task, for GLUE's and SuperGLUE's: the head, encoded splits, their
batches, metrics from logits, and submission files.

    family = task_family("superglue/copa")     # or "sst2"
    encoded = family.encode(data, "train", tfds_data_dir, tokenizer, max_length, buckets)
    for batch in family.batches(encoded, 16, shuffle=True, seed=0, epoch=0): ...
    family.metrics(encoded, logits, labels, idx)   # logits, labels, idx in increasing idx order, padding dropped
"""

from __future__ import annotations

import dataclasses
import os

from deberta_jax.data.glue import encoding as glue_encoding
from deberta_jax.data.glue import readers as glue_readers
from deberta_jax.data.glue import tasks as glue_tasks
from deberta_jax.data.superglue import encoding as sg_encoding
from deberta_jax.data.superglue import readers as sg_readers
from deberta_jax.data.superglue import tasks as sg_tasks
from deberta_jax.finetuning import superglue_predictions
from deberta_jax.finetuning.metrics import task_metrics
from deberta_jax.finetuning.submission import write_submission

TASK_NAMES = glue_tasks.TASK_NAMES + sg_tasks.TASK_NAMES


@dataclasses.dataclass(frozen=True)
class GlueFamily:
    """GLUE: one row per example, a sequence-classification head, the TSV submission files."""

    task: glue_tasks.GlueTask
    benchmark = "GLUE"
    head = "sequence_classification"

    @property
    def num_labels(self) -> int:
        return self.task.num_labels

    @property
    def recipes(self) -> tuple[str, str]:
        """(recipes/ folder, key) of the task's published recipes."""
        return "glue", self.task.name

    def encode(self, data, split, tfds_data_dir, tokenizer, max_length, buckets):
        examples = glue_readers.load_split(self.task, data, split, tfds_data_dir)
        return glue_encoding.encode_examples(examples, self.task, tokenizer, max_length, buckets)

    def num_examples(self, encoded) -> int:
        return len(encoded)

    def batch_units(self, encoded) -> int:
        return len(encoded)

    def num_truncated(self, encoded) -> int:
        return encoded.num_truncated

    def batches(self, encoded, batch_size, shuffle, seed=0, epoch=0):
        return glue_encoding.bucketed_batches(encoded, batch_size, shuffle, seed, epoch)

    def metrics(self, encoded, logits, labels, idx) -> dict[str, float]:
        return task_metrics(self.task, logits, labels)

    def write_submission(self, encoded, logits, idx, out_dir: str | os.PathLike, split: str) -> str:
        return write_submission(self.task, idx, logits, out_dir, split=split)


@dataclasses.dataclass(frozen=True)
class SuperGlueFamily:
    """SuperGLUE: rows, choices or candidates per example (`data/superglue/encoding.py`); the multiple-choice head
    for COPA; the JSONL submission files."""

    task: sg_tasks.SuperGlueTask
    benchmark = "SuperGLUE"

    @property
    def head(self) -> str:
        return "multiple_choice" if self.task.format == "multiple_choice" else "sequence_classification"

    @property
    def num_labels(self) -> int | None:
        """The config's num_labels; None for multiple choice, whose head has one output whatever it says."""
        return None if self.task.format == "multiple_choice" else self.task.num_labels

    @property
    def recipes(self) -> tuple[str, str]:
        return "superglue", self.task.short_name

    def encode(self, data, split, tfds_data_dir, tokenizer, max_length, buckets):
        examples = sg_readers.load_split(self.task, data, split, tfds_data_dir)
        return sg_encoding.encode_task(examples, self.task, tokenizer, max_length, buckets)

    def num_examples(self, encoded) -> int:
        return len(encoded)

    def batch_units(self, encoded) -> int:
        """Rows of the batches: examples for multiple choice, sequences otherwise."""
        return len(encoded) if self.task.format == "multiple_choice" else len(encoded.rows)

    def num_truncated(self, encoded) -> int:
        return encoded.rows.num_truncated

    def batches(self, encoded, batch_size, shuffle, seed=0, epoch=0):
        return sg_encoding.task_batches(encoded, batch_size, shuffle, seed, epoch)

    def metrics(self, encoded, logits, labels, idx) -> dict[str, float]:
        return superglue_predictions.metrics(encoded, logits)

    def write_submission(self, encoded, logits, idx, out_dir: str | os.PathLike, split: str) -> str:
        return superglue_predictions.write_submission(encoded, logits, out_dir, split)


def task_family(name: str) -> GlueFamily | SuperGlueFamily:
    """The family of task `name`: SuperGLUE's names start with "superglue/", the rest are GLUE's."""
    if sg_tasks.is_superglue(name):
        return SuperGlueFamily(sg_tasks.get_task(name))
    return GlueFamily(glue_tasks.get_task(name))
