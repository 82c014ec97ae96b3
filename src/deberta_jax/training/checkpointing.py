"""Resumable training checkpoints with orbax: train state (params, optimizer state, step, RNG) plus the data
iterator's position, saved asynchronously, the newest `keep` retained.

Orbax writes each step into a temporary directory and renames it when complete, so a crash during a save leaves
the previous checkpoint intact; unfinished temporaries are ignored and cleaned up.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class TrainCheckpointer:
    def __init__(self, directory: str | os.PathLike, keep: int = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, enable_async_checkpointing=True,
                                               cleanup_tmp_directories=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, data_state: dict) -> None:
        """Starts an asynchronous save of `state` and the JSON-serialisable `data_state` at `step`."""
        self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          data=ocp.args.JsonSave(data_state)))

    def restore(self, state_like, shardings, step: int | None = None):
        """Restores (state, data_state), placing arrays in `shardings`; `state_like` gives shapes and dtypes."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                          state_like, shardings)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                        data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
