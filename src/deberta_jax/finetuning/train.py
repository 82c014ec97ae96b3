"""GLUE fine-tuning and prediction: jitted, sharded steps; evaluation; best checkpoint; submission files.

    deberta-jax finetune --task sst2 --model HF_DIR --data {tfds|GLUE_DIR} --workdir DIR [--set key=value] [--resume]
    deberta-jax predict --task sst2 --model DIR/export --data GLUE_DIR --out DIR
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained
from deberta_jax.data.glue.encoding import bucketed_batches, encode_examples
from deberta_jax.data.glue.readers import load_split
from deberta_jax.data.glue.tasks import get_task
from deberta_jax.finetuning.losses import task_loss
from deberta_jax.finetuning.metrics import main_metric, task_metrics
from deberta_jax.finetuning.sift import SiftConfig, sift_loss
from deberta_jax.finetuning.submission import write_submission
from deberta_jax.sharding.mesh import make_mesh
from deberta_jax.sharding.rules import batch_sharding, replicated
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.training.checkpointing import TrainCheckpointer
from deberta_jax.training.optimizer import (
    OptimizerConfig, layer_decay_factors, learning_rate_schedule, make_optimizer,
)
from deberta_jax.training.progress import ProgressLogger
from deberta_jax.training.train_step import create_train_state, make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
    task: str
    model: str                          # HF directory with spm.model (e.g. a pretraining export)
    data: str = "tfds"                  # "tfds" or a directory in the official GLUE layout
    max_length: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: float = 3.0
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    warmup_steps: int | None = None     # when set, replaces warmup_ratio (microsoft's scripts give steps)
    weight_decay: float = 0.01
    layer_decay: float = 1.0
    clip_norm: float = 1.0
    eval_every: int = 0                 # steps; 0 = once per epoch
    seed: int = 42
    dtype: str = "float32"
    mesh_shape: tuple = (-1, 1, 1)
    cls_dropout: float | None = None
    sift: bool = False
    sift_weight: float = 1.0
    sift_step_size: float = 1e-3
    sift_init_std: float = 0.01
    buckets: tuple = (32, 64, 128, 256, 512)
    log_every: int = 10

    def __post_init__(self):
        object.__setattr__(self, "mesh_shape", tuple(self.mesh_shape))
        object.__setattr__(self, "buckets", tuple(self.buckets))
        get_task(self.task)
        checks = [(self.batch_size >= 1, "batch_size"), (self.eval_batch_size >= 1, "eval_batch_size"),
                  (self.epochs > 0, "epochs"), (self.learning_rate > 0, "learning_rate"),
                  (0 <= self.warmup_ratio < 1, "warmup_ratio"), (0 < self.layer_decay <= 1, "layer_decay"),
                  (self.max_length >= 8, "max_length"), (self.eval_every >= 0, "eval_every")]
        for ok, field in checks:
            if not ok:
                raise ValueError(f"FinetuneConfig.{field}={getattr(self, field)!r} is out of range")


GLUE_RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "glue", "recipes.json")
OUR_RECIPES = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "glue", "our_recipes.json")


def load_glue_recipe(task: str, name: str, path: str = GLUE_RECIPES, ours: str = OUR_RECIPES) -> dict:
    """FinetuneConfig fields of recipe `name` for `task`: microsoft/DeBERTa's published settings per task and model
    (`path`), or one of our task-independent recipes (`ours`, e.g. "tiny-cpu" for models pretrained here)."""
    with open(ours, encoding="utf-8") as f:
        our_recipes = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    with open(path, encoding="utf-8") as f:
        recipes = json.load(f)
    key = get_task(task).name
    if name in our_recipes:
        return {k: v for k, v in our_recipes[name].items() if not k.startswith("_")}
    if key not in recipes or name not in recipes[key]:
        known = sorted(recipes.get(key, {}))
        raise ValueError(f"no published recipe {name!r} for task {key!r}; published: {known}; "
                         f"ours (any task): {sorted(our_recipes)}")
    return dict(recipes[key][name])


def _device_batch(batch: dict, sharding, leading_axis: bool):
    keys = ("input_ids", "token_type_ids", "attention_mask", "labels", "weights")
    arrays = {k: np.asarray(batch[k])[None] if leading_axis else np.asarray(batch[k]) for k in keys}
    return jax.device_put(arrays, sharding)


class Evaluator:
    """Jitted forward passes over every example of a split (padding rows have weight 0 and are dropped)."""

    def __init__(self, model, cfg: FinetuneConfig, mesh):
        self.cfg = cfg
        self.sharding = batch_sharding(mesh)
        self._logits = jax.jit(lambda params, b: model.apply(
            {"params": params}, b["input_ids"], attention_mask=b["attention_mask"],
            token_type_ids=b["token_type_ids"]).logits, out_shardings=replicated(mesh))

    def predict(self, params, encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predictions [n], labels [n], idx [n]) in dataset order."""
        preds, labels, idx = [], [], []
        for batch in bucketed_batches(encoded, self.cfg.eval_batch_size, shuffle=False, seed=0, epoch=0):
            logits = np.asarray(self._logits(params, _device_batch(batch, self.sharding, False)))
            keep = np.asarray(batch["weights"]) > 0
            out = logits[:, 0] if logits.shape[-1] == 1 else logits.argmax(-1)
            preds.append(out[keep])
            labels.append(np.asarray(batch["labels"])[keep])
            idx.append(np.asarray(batch["idx"])[keep])
        order = np.argsort(np.concatenate(idx), kind="stable")
        return (np.concatenate(preds)[order], np.concatenate(labels)[order], np.concatenate(idx)[order])


def make_loss_fn(model, cfg: FinetuneConfig):
    sift_cfg = SiftConfig(weight=cfg.sift_weight, step_size=cfg.sift_step_size, init_std=cfg.sift_init_std,
                          init_clip=2 * cfg.sift_init_std)

    def loss_fn(params, batch, rng):
        dropout_rng, sift_rng = jax.random.split(rng)
        logits = model.apply({"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch["token_type_ids"], deterministic=False,
                             rngs={"dropout": dropout_rng}).logits
        loss, metrics = task_loss(logits, batch["labels"], batch["weights"])
        if cfg.sift:
            def perturbed_logits(p, perturbation):
                return model.apply({"params": p}, batch["input_ids"], attention_mask=batch["attention_mask"],
                                   token_type_ids=batch["token_type_ids"],
                                   embedding_perturbation=perturbation).logits

            shape = batch["input_ids"].shape + (model.config.hidden_size,)
            adversarial = sift_loss(perturbed_logits, params, logits, sift_rng, shape, sift_cfg)
            loss = loss + sift_cfg.weight * adversarial
            metrics = dict(metrics, sift_loss=adversarial, loss=loss)
        return loss, metrics

    return loss_fn


def finetune(cfg: FinetuneConfig, workdir: str, resume: bool = False, progress: bool = True,
             stop_after: int | None = None) -> dict:
    """Fine-tunes on cfg.task; keeps the best checkpoint by the task's main metric and exports it (HF format).

    stop_after: end this run after that many steps in total (checkpointing there), as a preempted job would; a
    later `resume=True` run continues. Only a finished run exports.
    """
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    task = get_task(cfg.task)
    tokenizer = DebertaV3Tokenizer.from_pretrained(cfg.model)
    overrides = {"num_labels": task.num_labels, "dtype": cfg.dtype}
    if cfg.cls_dropout is not None:
        overrides["cls_dropout"] = cfg.cls_dropout
    model, params, report = load_pretrained(cfg.model, "sequence_classification", ignore_mismatched_sizes=True,
                                            return_report=True, **overrides)
    if [k for k in report.missing if not k.startswith(("pooler.", "classifier."))]:
        raise ValueError(f"{cfg.model} lacks backbone weights: {report.missing}")

    train = encode_examples(load_split(task, cfg.data, "train"), task, tokenizer, cfg.max_length, cfg.buckets)
    evals = {split: encode_examples(load_split(task, cfg.data, split), task, tokenizer, cfg.max_length,
                                    cfg.buckets) for split in task.validation_splits}
    steps_per_epoch = math.ceil(len(train.labels) / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
    eval_every = cfg.eval_every or steps_per_epoch

    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(cfg.warmup_ratio * total_steps)
    opt_cfg = OptimizerConfig(learning_rate=cfg.learning_rate, warmup_steps=min(warmup, total_steps),
                              total_steps=total_steps, weight_decay=cfg.weight_decay, clip_norm=cfg.clip_norm,
                              layer_decay=cfg.layer_decay)
    factors = layer_decay_factors(params, model.config.num_hidden_layers, cfg.layer_decay)
    optimizer = make_optimizer(opt_cfg, factors)
    mesh = make_mesh(cfg.mesh_shape)
    init_args = (jnp.zeros((1, 8), jnp.int32),)
    state, shardings = create_train_state(model, init_args, optimizer, cfg.seed, mesh, params=params)
    train_step = make_train_step(make_loss_fn(model, cfg), optimizer, learning_rate_schedule(opt_cfg), shardings,
                                 mesh)
    evaluator = Evaluator(model, cfg, mesh)
    last = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=1)
    best_dir = os.path.join(workdir, "best")
    best_manager = ocp.CheckpointManager(best_dir, options=ocp.CheckpointManagerOptions(
        max_to_keep=1, create=True, best_fn=lambda m: m["score"], best_mode="max"))
    best = {"score": -math.inf, "step": None, "metrics": None}
    start = 0
    if resume and last.latest_step() is not None:
        state, data_state = last.restore(state, shardings)
        start, best = int(jax.device_get(state.step)), data_state["best"]
    elif not resume and last.latest_step() is not None:
        raise FileExistsError(f"{workdir} already has checkpoints; pass --resume or use a new workdir")

    metric_name = main_metric(task)
    logger = ProgressLogger(workdir, total_steps, start, cfg.batch_size * cfg.max_length, enabled=True,
                            show_bar=progress)
    sharding = batch_sharding(mesh, leading_axes=1)
    history_eval = []
    t_start = time.perf_counter()
    pending = []
    end = total_steps if stop_after is None else min(stop_after, total_steps)
    try:
        step = start
        epoch = start // steps_per_epoch
        while step < end:
            batches = bucketed_batches(train, cfg.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)
            for position, batch in enumerate(batches):
                if epoch * steps_per_epoch + position < step:
                    continue  # resumed mid-epoch: these batches were already trained on
                state, metrics = train_step(state, _device_batch(batch, sharding, True))
                step += 1
                pending.append(metrics)
                if step % cfg.log_every == 0 or step == end:
                    logger.log(step, pending)
                    pending = []
                evaluate = step % eval_every == 0 or step == total_steps
                if evaluate:
                    results = {}
                    for split, encoded in evals.items():
                        preds, labels, _ = evaluator.predict(state.params, encoded)
                        results[split] = task_metrics(task, preds, labels)
                    score = float(np.mean([r[metric_name] for r in results.values()]))
                    history_eval.append({"step": step, "score": score, **results})
                    log.info("step %d: %s", step, json.dumps(results))
                    if score > best["score"]:
                        best = {"score": score, "step": step, "metrics": results}
                        best_manager.save(step, args=ocp.args.StandardSave(state.params),
                                          metrics={"score": score})
                if evaluate or step == end:
                    last.save(step, state, {"best": best})
                if step >= end:
                    break
            epoch += 1
    finally:
        logger.close()
        last.close()
        best_manager.wait_until_finished()

    train_seconds = time.perf_counter() - t_start
    if end < total_steps:
        best_manager.close()
        return {"task": cfg.task, "stopped_at": end, "best": best, "evaluations": history_eval}
    best_params = best_manager.restore(best_manager.best_step(), args=ocp.args.StandardRestore(
        jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state.params)))
    best_manager.close()
    export_dir = os.path.join(workdir, "export")
    save_pretrained(export_dir, model, jax.device_get(best_params))
    tokenizer.save_pretrained(export_dir)
    summary = {"task": cfg.task, "main_metric": metric_name, "best": best, "steps": total_steps,
               "steps_per_second": (total_steps - start) / max(train_seconds, 1e-9),
               "train_examples": int(len(train.labels)), "truncated_train_examples": int(train.num_truncated),
               "evaluations": history_eval, "export": export_dir, "config": dataclasses.asdict(cfg)}
    with open(os.path.join(workdir, "metrics.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def predict(task_name: str, model_dir: str, data: str, out_dir: str, split: str | None = None,
            max_length: int = 128, batch_size: int = 64) -> list[str]:
    """Writes GLUE submission files for the test split(s) of `task_name` with the model in `model_dir`."""
    task = get_task(task_name)
    tokenizer = DebertaV3Tokenizer.from_pretrained(model_dir)
    model, params = load_pretrained(model_dir, "sequence_classification")
    if model.config.num_labels != task.num_labels:
        raise ValueError(f"{model_dir} has {model.config.num_labels} labels; task {task.name} needs {task.num_labels}")
    cfg = FinetuneConfig(task=task_name, model=model_dir, data=data, max_length=max_length,
                         eval_batch_size=batch_size)
    evaluator = Evaluator(model, cfg, make_mesh((-1, 1, 1)))
    written = []
    for test_split in ([split] if split else task.test_splits):
        encoded = encode_examples(load_split(task, data, test_split), task, tokenizer, max_length, cfg.buckets)
        preds, _, idx = evaluator.predict(params, encoded)
        written.append(write_submission(task, idx, preds, out_dir, split=test_split))
    return written
