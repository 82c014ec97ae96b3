"""The training loop that pretraining and fine-tuning both drive.

Each driver brings its own jitted step, its batches and, for fine-tuning, an evaluation; the loop owns what they
share: stepping, fetching metrics every few steps (so the device never waits on the host), stopping at the first
non-finite loss, evaluations, and checkpoints that a resumed run continues from.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterable

import jax

from deberta_jax.config_tree import Section
from deberta_jax.training.checkpointing import TrainCheckpointer
from deberta_jax.training.progress import ProgressLogger

GUARDED_METRICS = ("loss", "grad_norm")  # a non-finite value of these ends the run


@dataclasses.dataclass(frozen=True)
class LoopConfig(Section):
    """How often a run logs and checkpoints, and how many checkpoints it keeps."""

    log_every: int = 10          # steps between metric fetches (progress bar, metrics.jsonl, TensorBoard)
    checkpoint_every: int = 500  # steps; 0: only at evaluations and at the end
    keep_checkpoints: int = 3

    def checks(self):
        return [(self.log_every >= 1, "log_every", "must be >= 1"),
                (self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0"),
                (self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1 (a run must be able to resume)")]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient norm; the message names the step and the metric."""


@dataclasses.dataclass
class Evaluation:
    """`evaluate(params) -> (score, results)` every `every` steps and at the end of the run; the highest score is
    kept by the checkpointer's best directory."""

    evaluate: Callable[[Any], tuple[float, dict]]
    every: int


def check_finite(rows: list[dict], first_step: int, newest_checkpoint: int | None) -> None:
    """Raises NonFiniteLossError at the first of `rows` (host metrics of steps first_step, first_step + 1, ...)
    whose guarded metrics are not finite."""
    for offset, row in enumerate(rows):
        for name in GUARDED_METRICS:
            if name in row and not math.isfinite(float(row[name])):
                kept = f"the newest checkpoint is step {newest_checkpoint}" if newest_checkpoint is not None \
                    else "no checkpoint was written"
                raise NonFiniteLossError(f"step {first_step + offset}: {name} is {float(row[name])}; training "
                                         f"stopped ({kept}; lower the learning rate or check the inputs)")


def run_loop(state, train_step: Callable, batches: Iterable, *, start: int, end: int, total_steps: int,
             config: LoopConfig, checkpointer: TrainCheckpointer, logger: ProgressLogger,
             data_state: Callable[[], Any], evaluation: Evaluation | None = None,
             evaluations: list[dict] | None = None):
    """Runs steps start+1 .. end of a `total_steps` run; returns (state, evaluations).

    batches: yields the batch of each step from `start` on. data_state: the JSON-serialisable position of the
    batches, saved with each checkpoint. evaluations: those of the run before a resume; new ones are appended.
    A checkpoint is written every `config.checkpoint_every` steps, after each evaluation and at `end`; metrics
    are fetched and checked before each, so only finite states are ever saved.
    """
    evaluations = list(evaluations or [])
    pending = []  # device metrics of the steps since the last fetch

    def fetch(step: int) -> None:
        nonlocal pending
        if pending:
            rows = jax.device_get(pending)
            check_finite(rows, step - len(rows) + 1, checkpointer.latest_step())
            logger.log(step, rows)
            pending = []

    step = start
    iterator = iter(batches)
    while step < end:
        batch = next(iterator, None)
        if batch is None:
            raise RuntimeError(f"the batches ran out after step {step}, before step {end}")
        state, metrics = train_step(state, batch)
        pending.append(metrics)
        step += 1
        evaluate = evaluation is not None and (step % evaluation.every == 0 or step == total_steps)
        save = evaluate or step == end or (config.checkpoint_every and step % config.checkpoint_every == 0)
        if save or step % config.log_every == 0:
            fetch(step)
        score = None
        if evaluate:
            score, results = evaluation.evaluate(state.params)
            evaluations.append({"step": step, "score": score, **results})
        if save:
            checkpointer.save(step, state, {"data": data_state(), "evaluations": evaluations}, score=score)
    return state, evaluations
