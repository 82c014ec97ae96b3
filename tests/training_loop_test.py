"""The shared training loop with a stand-in step: non-finite guard, checkpoints, evaluations and resume records."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from deberta_jax.training.checkpointing import TrainCheckpointer, check_resume
from deberta_jax.training.loop import Evaluation, LoopConfig, NonFiniteLossError, run_loop
from deberta_jax.training.progress import ProgressLogger
from deberta_jax.training.train_step import TrainState


def _state():
    return TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.zeros(3)}, opt_state=(),
                      rng=jnp.zeros(2, jnp.uint32))


def _step(state, batch):
    """params.w += batch; loss = the batch's value, so a batch of NaN gives a NaN loss."""
    params = {"w": state.params["w"] + batch}
    return state.replace(step=state.step + 1, params=params), {"loss": jnp.mean(batch), "grad_norm": jnp.float32(1)}


def _run(workdir, batches, *, end, total, start=0, state=None, evaluation=None, evaluations=None, resume=False,
         config=LoopConfig(log_every=2, checkpoint_every=3, keep_checkpoints=2)):
    checkpoints = TrainCheckpointer(workdir / "checkpoints", keep=config.keep_checkpoints,
                                    best_directory=workdir / "best")
    check_resume(str(workdir), checkpoints, resume)
    state = state or _state()
    if resume:
        state, record = checkpoints.restore(state, None)
        start, evaluations = int(state.step), record["evaluations"]
    logger = ProgressLogger(str(workdir), total, start, 1, show_bar=False)
    try:
        state, evaluations = run_loop(state, _step, (jnp.full(3, b) for b in batches[start:]), start=start, end=end,
                                      total_steps=total, config=config, checkpointer=checkpoints, logger=logger,
                                      data_state=dict, evaluation=evaluation, evaluations=evaluations)
        return state, evaluations, checkpoints
    finally:
        logger.close()
        checkpoints.close()


def test_a_nan_loss_stops_the_run_naming_the_step_and_keeps_only_finite_checkpoints(tmp_path):
    batches = [1.0, 1.0, 1.0, 1.0, float("nan"), 1.0, 1.0, 1.0]
    with pytest.raises(NonFiniteLossError, match=r"step 5: loss is nan.*newest checkpoint is step 3"):
        _run(tmp_path, batches, end=8, total=8)
    checkpoints = TrainCheckpointer(tmp_path / "checkpoints")
    assert checkpoints.latest_step() == 3  # the NaN state of step 5 (and step 6's save) never written
    state, _ = checkpoints.restore(_state(), None)
    np.testing.assert_array_equal(state.params["w"], [3.0, 3.0, 3.0])
    checkpoints.close()


def test_resume_needs_a_checkpoint_and_a_fresh_run_an_empty_workdir(tmp_path):
    with pytest.raises(FileNotFoundError, match="holds no checkpoint to resume from"):
        _run(tmp_path, [1.0] * 4, end=4, total=4, resume=True)
    _run(tmp_path, [1.0] * 4, end=2, total=4)
    with pytest.raises(FileExistsError, match=r"already has checkpoints \(newest: step 2\)"):
        _run(tmp_path, [1.0] * 4, end=4, total=4)


def test_resumed_run_logs_each_step_once_and_keeps_every_evaluation(tmp_path):
    batches = [float(i) for i in range(1, 9)]
    evaluation = Evaluation(lambda params: (float(-abs(params["w"][0] - 10.0)), {"dev": {"w": float(params["w"][0])}}),
                            every=2)
    config = LoopConfig(log_every=1, checkpoint_every=0, keep_checkpoints=1)
    straight, straight_evals, straight_ckpt = _run(tmp_path / "a", batches, end=8, total=8, evaluation=evaluation,
                                                   config=config)
    # Stop at step 5 (after the evaluation and checkpoint of step 4: step 5's save is the stop's), then pretend the
    # process died after logging step 6 and 7 rows that the resumed run will log again.
    _run(tmp_path / "b", batches, end=5, total=8, evaluation=evaluation, config=config)
    with open(tmp_path / "b" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 6, "loss": 0.0}) + "\n" + json.dumps({"step": 7, "loss": 0.0}) + "\n")
    resumed, resumed_evals, resumed_ckpt = _run(tmp_path / "b", batches, end=8, total=8, evaluation=evaluation,
                                                config=config, resume=True)
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == list(range(1, 9))
    assert [e["step"] for e in resumed_evals] == [e["step"] for e in straight_evals] == [2, 4, 6, 8]
    assert resumed_evals == straight_evals
    np.testing.assert_array_equal(resumed.params["w"], straight.params["w"])
    # w after step 4 is 10: the best score (0) is there, in both runs, and the best params are step 4's.
    assert straight_ckpt.best == resumed_ckpt.best == {"score": 0.0, "step": 4}


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    batches = [float(i) for i in range(1, 9)]
    config = LoopConfig(log_every=1, checkpoint_every=2, keep_checkpoints=2)
    straight, _, _ = _run(tmp_path / "a", batches, end=8, total=8, config=config)
    _run(tmp_path / "b", batches, end=5, total=8, config=config)  # keeps steps 4 and 5
    for path in (tmp_path / "b" / "checkpoints" / "5").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")  # a disk fault in every file of the newest checkpoint
    with caplog.at_level("WARNING"):
        resumed, _, checkpoints = _run(tmp_path / "b", batches, end=8, total=8, config=config, resume=True)
    assert "checkpoint of step 5" in caplog.text and "unreadable" in caplog.text
    assert (tmp_path / "b" / "checkpoints-unreadable" / "5").is_dir()
    np.testing.assert_array_equal(resumed.params["w"], straight.params["w"])  # steps 5..8 redone from step 4
    steps = [json.loads(line)["step"] for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert steps == list(range(1, 9))
