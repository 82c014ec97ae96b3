"""GLUE examples as token ids, and one epoch of fixed-shape batches bucketed by length.

Encoded labels are -1 where an example has none (test splits).

    encoded = encode_examples(examples, "mrpc", tokenizer, max_length=128)
    for batch in bucketed_batches(encoded, 32, shuffle=True, seed=0, epoch=0):
        batch["input_ids"]   # [32, L] with L one of encoded.buckets
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from deberta_jax.data.glue.readers import Example
from deberta_jax.data.glue.tasks import GlueTask, get_task

if TYPE_CHECKING:
    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

DEFAULT_BUCKETS = (32, 64, 128, 256, 512)


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

    `task` is a GLUE task's name, or any object with its `name`, `is_pair`, `is_regression` and `num_labels` (as
    SuperGLUE's rows pass).

    Examples longer than `max_length` are cut with "longest_first" truncation and counted in `num_truncated`.
    Labels must suit the task (class ids in range, finite scores) or be None.
    """
    task = get_task(task) if isinstance(task, str) else task
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
    _check_batch_size(batch_size)
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
    _check_batch_size(batch_size)
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


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")


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
