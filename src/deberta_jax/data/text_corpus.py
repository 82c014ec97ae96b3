"""Text corpora -> one token stream -> fixed-length packed sequences for pretraining.

A corpus is a list of `.txt` / `.txt.gz` files (documents separated by blank lines) or a tensorflow-datasets text
dataset (data/prepared.py). Documents are tokenized into a flat int32 stream with [SEP] after each document and cut
into `[CLS] chunk [SEP]` rows of `seq_len` tokens; data/prepared.py writes the rows to disk once, shard by shard.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from deberta_jax.data.text_files import text_lines

if TYPE_CHECKING:
    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer


def existing_files(paths: Sequence[str | os.PathLike], argument: str = "paths") -> list[str]:
    """`paths` as a list of str, checked to be a non-empty list of existing files (`argument` names it in errors)."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise ValueError(f"{argument} must be a list of file names, got the single name {paths!r}")
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError(f"{argument} is empty: give at least one text file")
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no text file at {path}")
    return paths


def read_documents(paths: Sequence[str | os.PathLike]) -> Iterator[str]:
    """Yields the documents of `paths` in order: runs of non-blank lines, joined with single spaces.

    All files are checked to exist before the first document is yielded. A document never spans two files. A
    file that is not UTF-8 raises ValueError naming its line and byte (see `text_lines`).
    """
    for path in existing_files(paths):
        lines: list[str] = []
        for line in text_lines(path):
            line = line.strip()
            if line:
                lines.append(line)
            elif lines:
                yield " ".join(lines)
                lines = []
        if lines:
            yield " ".join(lines)


def tokenize_documents(documents: Iterable[str], tokenizer: "DebertaV3Tokenizer", progress: bool = True,
                       allow_empty: bool = False) -> np.ndarray:
    """Token stream [total_tokens] int32: each document's ids followed by [SEP]; documents without tokens skipped.
    No tokens at all raise ValueError, or give an empty stream with `allow_empty` (one shard of a corpus)."""
    pieces = []
    for document in tqdm(documents, desc="tokenizing", unit="documents", disable=not progress):
        ids = tokenizer.encode(document)
        if ids:
            pieces.append(np.asarray(ids + [tokenizer.sep_id], np.int32))
    if not pieces:
        if allow_empty:
            return np.zeros(0, np.int32)
        raise ValueError("the corpus has no tokens: no documents, or none with text")
    return np.concatenate(pieces)


@dataclasses.dataclass(frozen=True, eq=False)
class PackedSequences:
    """Fixed-length rows cut from a token stream: row i is `[CLS] tokens[i*(seq_len-2) : (i+1)*(seq_len-2)] [SEP]`.

    Only the last row can be shorter; it is padded with `pad_id` after its [SEP]. Documents run on across rows, as in
    DeBERTa's pretraining data (the [SEP] inside the stream marks where one ends).
    """

    tokens: np.ndarray  # [total_tokens] int
    seq_len: int
    cls_id: int
    sep_id: int
    pad_id: int

    def __post_init__(self):
        if self.seq_len < 3:
            raise ValueError(f"seq_len={self.seq_len}: must be >= 3 to hold [CLS], a token and [SEP]")
        if np.ndim(self.tokens) != 1 or len(self.tokens) == 0:
            raise ValueError(f"tokens must be a non-empty 1-D array, got shape {np.shape(self.tokens)}")

    @property
    def body_len(self) -> int:
        """Stream tokens per row: seq_len minus [CLS] and [SEP]."""
        return self.seq_len - 2

    def __len__(self) -> int:
        return -(-len(self.tokens) // self.body_len)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids [seq_len] int32, attention_mask [seq_len] int32) of row `index`."""
        ids, mask = self.batch([index])
        return ids[0], mask[0]

    def batch(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids [n, seq_len] int32, attention_mask [n, seq_len] int32) of rows `indices` [n]."""
        indices = np.asarray(indices, np.int64).reshape(-1)
        n_rows, total = len(self), len(self.tokens)
        bad = (indices < -n_rows) | (indices >= n_rows)
        if bad.any():
            raise IndexError(f"row index {indices[bad][0]} out of range for {n_rows} rows")
        indices = np.where(indices < 0, indices + n_rows, indices)
        starts = indices * self.body_len
        lengths = np.minimum(total - starts, self.body_len)  # [n], >= 1
        positions = starts[:, None] + np.arange(self.body_len)  # [n, body_len]
        inside = positions < total
        body = np.where(inside, np.asarray(self.tokens)[np.minimum(positions, total - 1)], self.pad_id)
        ids = np.full((len(indices), self.seq_len), self.pad_id, np.int32)
        ids[:, 0] = self.cls_id
        ids[:, 1:-1] = body
        ids[np.arange(len(indices)), lengths + 1] = self.sep_id
        mask = (np.arange(self.seq_len) < (lengths + 2)[:, None]).astype(np.int32)
        return ids, mask
