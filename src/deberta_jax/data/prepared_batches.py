"""Endless, resumable, multi-process batches of a prepared corpus (data/prepared.py), read through grain.

The rows are globally shuffled by grain (`MapDataset.shuffle`: a seeded index permutation, reshuffled each epoch,
computed per index, so no permutation of the whole corpus is held in memory) and repeated for ever; global batch k
is positions [k*B, (k+1)*B) of that stream (batches may straddle epochs; every row is seen once per epoch). Process
p of P reads only positions [k*B + p*B/P, k*B + (p+1)*B/P) of each: the contiguous block of the global batch that
`distributed.global_arrays` expects. A global batch is therefore the same whatever the process count, which grain's
`ShardByJaxProcess` (each process its own slice of the rows, batched locally) would not give.

The iterator is grain's, with grain's `get_state` / `set_state`; the state records the batch position too, which
restores another process count or number of read workers (the pipeline restarts at that batch).
"""

from __future__ import annotations

import os
from typing import Any

import grain
from absl import flags
import numpy as np

from deberta_jax.data.prepared import decode_row, read_manifest, shard_paths

_SEED_RANGE = 2 ** 32  # grain's shuffle seeds


class _ProcessBlocks(grain.MapDataset):
    """Element i: the parent's element (i // b) * B + p*b + i % b, with b = B / P (this process's rows of each
    global batch of B)."""

    def __init__(self, parent: grain.MapDataset, global_batch_size: int, process_index: int, process_count: int):
        super().__init__(parent)
        self._global = global_batch_size
        self._local = global_batch_size // process_count
        self._offset = process_index * self._local
        self._length = len(parent) // global_batch_size * self._local

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"_ProcessBlocks(global={self._global}, local={self._local}, offset={self._offset})"

    def _parent_index(self, index: int) -> int:
        batch, row = divmod(index, self._local)
        return batch * self._global + self._offset + row

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._parent_index(index)]


class _DecodeRow(grain.transforms.Map):
    """(stream index, record) -> {"input_ids": [seq], "attention_mask": [seq], "example_index": []}: epoch e reads
    row r at stream index e * rows + r."""

    def __init__(self, rows: int, seq_len: int, pad_id: int, sep_id: int):
        self.rows, self.seq_len, self.pad_id, self.sep_id = rows, seq_len, pad_id, sep_id

    def map(self, element: tuple[int, bytes]) -> dict[str, np.ndarray]:
        index, record = element
        ids, mask = decode_row(record, self.seq_len, self.pad_id, self.sep_id)
        return {"input_ids": ids, "attention_mask": mask, "example_index": np.int64(index % self.rows)}


class PreparedBatches:
    """Yields {"input_ids": [B/P, seq] int32, "attention_mask": [B/P, seq] int32, "example_index": [B/P] int64}
    forever; example_index is each row's index in the prepared corpus (shards in order)."""

    def __init__(self, directory: str | os.PathLike, global_batch_size: int, seed: int, *, tokenizer=None,
                 seq_len: int | None = None, shuffle: bool = True, process_index: int = 0, process_count: int = 1,
                 read_threads: int = 2, read_workers: int = 0):
        if global_batch_size < 1 or process_count < 1 or global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} must be >= 1 and divisible by "
                             f"process_count={process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index}: must be in [0, process_count={process_count})")
        manifest = read_manifest(directory, tokenizer, seq_len)
        if manifest["rows"] < global_batch_size:
            raise ValueError(f"{directory} has {manifest['rows']} rows, fewer than one global batch of "
                             f"{global_batch_size}")
        self.directory, self.manifest = os.fspath(directory), manifest
        self.global_batch_size, self.seed, self.shuffle = global_batch_size, seed, shuffle
        self.process_index, self.process_count = process_index, process_count
        tokens = manifest["tokenizer"]
        rows = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(shard_paths(directory, manifest)))
        rows = rows.map_with_index(lambda index, record: (index, record))
        if shuffle:
            rows = rows.shuffle(seed=seed % _SEED_RANGE)
        local = _ProcessBlocks(rows.repeat(), global_batch_size, process_index, process_count)
        local = local.map(_DecodeRow(manifest["rows"], manifest["seq_len"], tokens["pad_id"], tokens["sep_id"]))
        self._batches = local.batch(global_batch_size // process_count)  # MapDataset: batch k = global batch k
        self._read_options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
        self.read_workers = read_workers
        self._iterator = self._iterate_from(0)
        self._position = 0  # global batches yielded (from the start of the run)

    def _iterate_from(self, position: int):
        self._start = position  # grain's state counts from here
        dataset = self._batches[position:].to_iter_dataset(self._read_options)
        if self.read_workers:
            if not flags.FLAGS.is_parsed():  # grain's worker processes read its absl flags (at their defaults)
                flags.FLAGS.mark_as_parsed()
            dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.read_workers))
        return iter(dataset)

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    def __iter__(self) -> "PreparedBatches":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = next(self._iterator)
        self._position += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable: grain's iterator state, the batch position, and what defines the batch sequence."""
        return {"position": self._position, "grain": self._iterator.get_state(), "seed": self.seed,
                "shuffle": self.shuffle, "global_batch_size": self.global_batch_size,
                "rows": self.manifest["rows"], "plan": self.manifest["plan"],
                "start": self._start, "layout": self._layout()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues from `get_state()`'s position. The corpus, seed, shuffling and batch size must match; with
        another process layout or number of read workers, the position alone restores it."""
        expected = {"seed": self.seed, "shuffle": self.shuffle, "global_batch_size": self.global_batch_size,
                    "rows": self.manifest["rows"], "plan": self.manifest["plan"]}
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"data state {key}={state.get(key)!r} does not match this run's {key}={value!r} "
                                 f"({self.directory})")
        position = int(state["position"])
        if state.get("layout") == self._layout():
            if state["start"] != self._start:
                self._iterator = self._iterate_from(int(state["start"]))
            self._iterator.set_state(state["grain"])
        else:  # grain's state has another shape with other workers; every batch is a function of its position
            self._iterator = self._iterate_from(position)
        self._position = position

    def _layout(self) -> list[int]:
        return [self.process_index, self.process_count, self.read_workers]
