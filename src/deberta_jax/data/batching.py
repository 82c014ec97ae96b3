"""Endless, resumable, multi-process batches of a dataset of fixed-length rows.

Epoch e visits the rows in the order `np.random.default_rng([seed, e]).permutation(len(dataset))`; global batch k of
the epoch is `order[k*B : (k+1)*B]` and the incomplete tail is dropped, so every step has the same shape. Process p
of P reads rows `[p*B/P, (p+1)*B/P)` of each global batch. The position is global (epoch, batch), so a state saved by
one process restores every process, with the same or a different process count.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class RowDataset(Protocol):
    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids [n, seq], attention_mask [n, seq]) of rows `indices` [n]."""


class BatchIterator:
    """Yields {"input_ids": [B/P, seq], "attention_mask": [B/P, seq], "example_index": [B/P] int64} forever."""

    def __init__(self, dataset: RowDataset, global_batch_size: int, seed: int, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1):
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size={global_batch_size}: must be >= 1")
        if process_count < 1:
            raise ValueError(f"process_count={process_count}: must be >= 1")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index}: must be in [0, process_count={process_count})")
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by "
                             f"process_count={process_count}")
        if len(dataset) < global_batch_size:
            raise ValueError(f"the dataset has {len(dataset)} rows, fewer than one global batch of "
                             f"global_batch_size={global_batch_size}")
        self.dataset = dataset
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.process_index = process_index
        self.process_count = process_count
        self.epoch = 0
        self.batch_in_epoch = 0
        self._order_epoch, self._order = None, None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.dataset) // self.global_batch_size

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Row indices [len(dataset)] int64 in the order epoch `epoch` visits them."""
        if self._order_epoch != epoch:
            n = len(self.dataset)
            self._order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                           else np.arange(n, dtype=np.int64))
            self._order_epoch = epoch
        return self._order

    def global_batch_indices(self, epoch: int, batch_in_epoch: int) -> np.ndarray:
        """Row indices [B] int64 of global batch `batch_in_epoch` of epoch `epoch`."""
        if not 0 <= batch_in_epoch < self.steps_per_epoch:
            raise ValueError(f"batch_in_epoch={batch_in_epoch}: must be in [0, {self.steps_per_epoch})")
        start = batch_in_epoch * self.global_batch_size
        return self.epoch_order(epoch)[start:start + self.global_batch_size]

    def __iter__(self) -> "BatchIterator":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        rows = self.global_batch_indices(self.epoch, self.batch_in_epoch)
        local = rows[self.process_index * self.local_batch_size:(self.process_index + 1) * self.local_batch_size]
        input_ids, attention_mask = self.dataset.batch(local)
        self.batch_in_epoch += 1
        if self.batch_in_epoch == self.steps_per_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "example_index": local.astype(np.int64)}

    def get_state(self) -> dict:
        """The position of the next batch, as JSON-serialisable plain values."""
        return {"epoch": int(self.epoch), "batch_in_epoch": int(self.batch_in_epoch), "seed": int(self.seed),
                "shuffle": bool(self.shuffle), "global_batch_size": int(self.global_batch_size),
                "dataset_size": int(len(self.dataset)), "process_index": int(self.process_index),
                "process_count": int(self.process_count)}

    def set_state(self, state: dict) -> None:
        """Continues from `get_state()`'s position. Seed, shuffling, batch size and dataset size must match (they
        define the batch sequence); the process layout may differ."""
        expected = {"seed": self.seed, "shuffle": self.shuffle, "global_batch_size": self.global_batch_size,
                    "dataset_size": len(self.dataset)}
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(f"state[{key!r}]={state.get(key)!r} does not match this iterator's {key}={value!r}")
        epoch, batch_in_epoch = int(state["epoch"]), int(state["batch_in_epoch"])
        if epoch < 0:
            raise ValueError(f"state['epoch']={epoch}: must be >= 0")
        if not 0 <= batch_in_epoch < self.steps_per_epoch:
            raise ValueError(f"state['batch_in_epoch']={batch_in_epoch}: must be in [0, {self.steps_per_epoch})")
        self.epoch, self.batch_in_epoch = epoch, batch_in_epoch
