"""Resumable training checkpoints with orbax: train state (params, optimizer state, step, RNG) plus a JSON record
(the data iterator's position, evaluations so far), saved asynchronously, the newest `keep` retained; optionally
the parameters of the best-scoring step beside them.

Orbax writes each step into a temporary directory and renames it when complete, so a crash during a save leaves
the previous checkpoint intact; unfinished temporaries are ignored and cleaned up.
"""

from __future__ import annotations

import contextlib
import logging
import os

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class CheckpointSaveError(OSError):
    """A checkpoint could not be written (permissions, a full disk, a directory that went away)."""


class TrainCheckpointer:
    """Checkpoints in `directory`; with `best_directory`, also the params of the step with the highest score."""

    def __init__(self, directory: str | os.PathLike, keep: int = 3, best_directory: str | os.PathLike | None = None):
        if keep < 1:
            raise ValueError(f"keep_checkpoints={keep}: must be >= 1 (a run must be able to resume)")
        self.directory = os.path.abspath(os.fspath(directory))
        # Both managers name their barriers after the step directory ("6.orbax-checkpoint-tmp"): without distinct
        # prefixes, saving step 6 to both makes two processes' barriers collide and fail at random.
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=True, cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix="train"))
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._best = None
        self._failed = False  # a save failed and was reported; close() then only releases the managers
        self.best = {"score": None, "step": None}  # None until the first scored save (strict JSON)
        if best_directory is not None:
            self._best = ocp.CheckpointManager(os.path.abspath(os.fspath(best_directory)),
                                               options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix="best")))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state, record: dict, score: float | None = None) -> None:
        """Starts an asynchronous save of `state` and the JSON-serialisable `record` at `step`; with a best
        directory and a `score` above every earlier one, also saves `state.params` there."""
        improved = score is not None and (self.best["score"] is None or score > self.best["score"])
        with self._reporting_failures(step):
            if self._best is not None and improved:
                self.best = {"score": float(score), "step": step}
                self._best.save(step, args=ocp.args.StandardSave(state.params), force=True)
            # Orbax writes in the background: an earlier step's failure surfaces here or in close().
            self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                              data=ocp.args.JsonSave({**record, "best": self.best})))

    @contextlib.contextmanager
    def _reporting_failures(self, step: int | None):
        try:
            yield
        except Exception as error:
            self._failed = True
            at = f" (at step {step} or the save before it)" if step is not None else ""
            cause = " ".join(str(error).split())
            raise CheckpointSaveError(f"could not write a checkpoint in {self.directory}{at}: {cause}") from error

    def restore(self, state_like, shardings, step: int | None = None):
        """Restores (state, record), placing arrays in `shardings`; `state_like` gives shapes and dtypes.

        Without `step`, the newest readable checkpoint. When newer ones cannot be read but an older one can (a crash
        or disk fault while they were written), the newer ones are moved to `<directory>-unreadable/<step>` with a
        warning naming them, so that the run continues from the older one and can write those steps again. When
        none can be read (say, a config that no longer matches them), nothing is moved and the newest's error is
        raised.
        """
        if step is not None:
            return self._restore(state_like, shardings, step)
        steps = sorted(self._manager.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        failures = []
        for candidate in steps:
            try:
                restored = self._restore(state_like, shardings, candidate)
            except Exception as error:  # any failure to read it: try the one before
                failures.append((candidate, error))
                continue
            for unreadable, error in failures:
                aside = os.path.join(self.directory + "-unreadable", str(unreadable))
                log.warning("the checkpoint of step %d in %s is unreadable (%s); moved to %s, resuming from step %d",
                            unreadable, self.directory, " ".join(str(error).split())[:300], aside, candidate)
                os.makedirs(os.path.dirname(aside), exist_ok=True)
                os.replace(os.path.join(self.directory, str(unreadable)), aside)
            if failures:
                self._manager.reload()
            return restored
        raise failures[0][1]

    def _restore(self, state_like, shardings, step: int):
        if shardings is None:  # one device: place arrays where JAX puts them by default
            shardings = jax.tree_util.tree_map(lambda x: None, state_like)
        abstract = jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                          state_like, shardings, is_leaf=lambda x: x is None)
        restored = self._manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                                        data=ocp.args.JsonRestore()))
        record = dict(restored["data"])
        self.best = record.pop("best", self.best)
        return restored["state"], record

    def best_params(self, params_like):
        """The params saved at the best-scoring step; `params_like` gives shapes, dtypes and (for jax.Arrays, as
        a run of several processes needs) shardings."""
        if self._best is None or self.best["step"] is None:
            raise FileNotFoundError(f"no best checkpoint beside {self.directory}")
        self._best.wait_until_finished()
        abstract = jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), params_like)
        return self._best.restore(self.best["step"], args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        """Waits for pending saves, then releases the managers. After a reported failure it does not wait or raise
        again: the error being handled is the one to show."""
        for manager in (self._manager, self._best):
            if manager is None:
                continue
            if self._failed:
                with contextlib.suppress(Exception):
                    manager.close()
                continue
            with self._reporting_failures(None):
                manager.wait_until_finished()
                manager.close()


def check_resume(workdir: str, checkpointer: TrainCheckpointer, resume: bool) -> None:
    """A fresh run needs a workdir without checkpoints; a resumed one needs a checkpoint."""
    latest = checkpointer.latest_step()
    if resume and latest is None:
        raise FileNotFoundError(f"--resume: {checkpointer.directory} holds no checkpoint to resume from")
    if not resume and latest is not None:
        raise FileExistsError(f"{workdir} already has checkpoints (newest: step {latest}); pass --resume or use a "
                              f"new workdir")
