"""GLUE and SuperGLUE fine-tuning and prediction: jitted, sharded steps; evaluation; best checkpoint; submission
files. What differs between tasks (head, encoding, metrics, submission) comes from `task_family`.

    deberta-jax finetune --task sst2 --model HF_DIR --data {tfds|GLUE_DIR} [--tfds-data-dir DIR] --workdir DIR
        [--recipe NAME] [--set optimizer.learning_rate=3e-5 --set sift.enabled=true ...] [--resume]
    deberta-jax finetune --task superglue/copa --model HF_DIR --data {tfds|SUPERGLUE_DIR} --workdir DIR
    deberta-jax predict --task sst2 --model DIR/export --data GLUE_DIR --out DIR
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import time
from typing import Sequence

import jax
import numpy as np

from deberta_jax.config_tree import ConfigError, Section, apply_overrides, from_dict, read_json, strip_comments
from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained
from deberta_jax.conversion.model_card import write_finetuning_card
from deberta_jax.data.token_ids import check_token_ids, check_vocabulary
from deberta_jax.distributed import (
    all_processes_reach, global_arrays, host_copy, is_main_process, local_rows, maybe_initialize_distributed,
)
from deberta_jax.finetuning.losses import task_loss
from deberta_jax.finetuning.sift import SiftConfig, sift_loss
from deberta_jax.finetuning.task_family import TASK_NAMES, task_family
from deberta_jax.model.embeddings import rescale_word_table
from deberta_jax.model.modeling import dummy_inputs
from deberta_jax.recipes import recipe_path
from deberta_jax.sharding.mesh import MeshConfig, check_batch_divides, make_mesh
from deberta_jax.sharding.rules import batch_sharding, replicated
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.training.compiler_options import CompilerSection, mesh_compiler_options
from deberta_jax.training.checkpointing import TrainCheckpointer, check_resume
from deberta_jax.training.loop import Evaluation, LoopConfig, run_loop
from deberta_jax.training.optimizer import OptimizerConfig, layer_decay_factors, learning_rate_schedule, make_optimizer
from deberta_jax.training.progress import ProgressLogger
from deberta_jax.training.records import write_json
from deberta_jax.training.train_step import create_train_state, make_train_step

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FinetuneConfig(Section):
    """Everything a fine-tuning run depends on."""

    task: str
    model: str                          # HF directory with spm.model (e.g. a pretraining export) or Hub id
    revision: str | None = None         # of a Hub id: branch, tag or commit (default: main)
    data: str = "tfds"                  # "tfds" or a directory in the official GLUE (SuperGLUE) layout
    tfds_data_dir: str | None = None    # with data="tfds": where tfds prepares and reads GLUE (None: tfds' default)
    max_length: int = 128
    buckets: tuple[int, ...] = (32, 64, 128, 256, 512)
    batch_size: int = 32
    eval_batch_size: int = 64
    epochs: float = 3.0
    eval_every: int = 0                 # steps; 0 = once per epoch
    seed: int = 42
    dtype: str = "float32"
    cls_dropout: float | None = None
    # Scale the loaded word table to the init RMS (initializer_range): the same function, but Adam turns its rows
    # as fast as fresh ones (model/embeddings.rescale_word_table; experiments/pretrain/README.md).
    rescale_word_table: bool = False
    optimizer: OptimizerConfig = dataclasses.field(
        default_factory=lambda: OptimizerConfig(learning_rate=2e-5, warmup_ratio=0.1))
    sift: SiftConfig = dataclasses.field(default_factory=SiftConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    compiler: CompilerSection = dataclasses.field(default_factory=CompilerSection)
    loop: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(checkpoint_every=0, keep_checkpoints=1))

    def checks(self):
        return [(self.task.lower() in TASK_NAMES, "task", f"unknown task; known: {', '.join(TASK_NAMES)}"),
                (self.max_length >= 8, "max_length", "must be >= 8"),
                (self.batch_size >= 1, "batch_size", "must be >= 1"),
                (self.eval_batch_size >= 1, "eval_batch_size", "must be >= 1"),
                (self.tfds_data_dir is None or self.data == "tfds", "tfds_data_dir",
                 f"is read with data=tfds only, not data={self.data!r}"),
                (self.epochs > 0, "epochs", "must be > 0"),
                (self.eval_every >= 0, "eval_every", "must be >= 0"),
                (self.cls_dropout is None or 0 <= self.cls_dropout < 1, "cls_dropout", "must be in [0, 1) or null")]


def load_recipe(task: str, name: str) -> dict:
    """FinetuneConfig values (a nested dict) of recipe `name` for `task`: microsoft/DeBERTa's published settings
    per task and model (`recipes/glue/published.json`, `recipes/superglue/published.json`), one of our
    task-independent recipes (`recipes/glue/ours.json`, e.g. "tiny-cpu" for models pretrained here), or our
    per-task choice where nothing is published (`recipes/superglue/ours.json`)."""
    our_recipes = strip_comments(read_json(recipe_path("glue", "ours")))
    family = task_family(task)
    kind, key = family.recipes
    published = strip_comments(read_json(recipe_path(kind, "published"))).get(key, {})
    # recipes/glue/ours.json is task-independent (read above); other kinds may add per-task choices of ours
    ours_for_task = (strip_comments(read_json(recipe_path(kind, "ours"))).get(key, {})
                     if kind != "glue" and os.path.exists(recipe_path(kind, "ours")) else {})
    for recipes in (our_recipes, published, ours_for_task):
        if name in recipes:
            return recipes[name]
    raise ConfigError(f"no published recipe {name!r} for task {family.task.name!r}; published: {sorted(published)}; "
                      f"ours for this task: {sorted(ours_for_task)}; ours (any task): {sorted(our_recipes)}")


def finetune_config(task: str, model: str, data: str = "tfds", recipe: str | None = None,
                    overrides: Sequence[str] = (), revision: str | None = None,
                    tfds_data_dir: str | None = None) -> FinetuneConfig:
    """The config of `finetune --task --model [--revision] --data [--tfds-data-dir] [--recipe] [--set key=value
    ...]`: the recipe's values under the dotted overrides."""
    values = {**(load_recipe(task, recipe) if recipe else {}), "task": task, "model": model,
              "revision": revision, "data": data}
    if tfds_data_dir is not None:
        values["tfds_data_dir"] = tfds_data_dir
    return from_dict(FinetuneConfig, apply_overrides(FinetuneConfig, values, overrides))


def model_overrides(cfg: FinetuneConfig) -> dict:
    """DebertaConfig fields that fine-tuning sets on the pretrained model's config."""
    family = task_family(cfg.task)
    overrides = {"dtype": cfg.dtype} if family.num_labels is None else {"dtype": cfg.dtype,
                                                                           "num_labels": family.num_labels}
    if cfg.cls_dropout is not None:
        overrides["cls_dropout"] = cfg.cls_dropout
    return overrides


def finetune_optimizer(cfg: FinetuneConfig, params, num_layers: int, total_steps: int):
    """(schedule, optimizer): AdamW with warmup + linear decay over `total_steps`, layer-wise decay over the
    `num_layers` encoder layers of `params` (arrays or their shapes)."""
    schedule = learning_rate_schedule(cfg.optimizer, total_steps)
    factors = layer_decay_factors(params, num_layers, cfg.optimizer.layer_decay)
    return schedule, make_optimizer(cfg.optimizer, schedule, factors)


# What the train step reads of a `bucketed_batches` batch, each with a leading accumulation axis of 1.
STEP_BATCH_KEYS = ("input_ids", "token_type_ids", "attention_mask", "labels", "weights")


def _device_batch(batch: dict, sharding, leading_axis: bool, vocab_size: int, where: str):
    """Global arrays of a batch that every process built whole; each process places only its block of rows."""
    check_token_ids(batch["input_ids"], vocab_size, where)
    rows = local_rows(len(batch["input_ids"]))
    arrays = {k: np.asarray(batch[k])[rows][None] if leading_axis else np.asarray(batch[k])[rows]
              for k in STEP_BATCH_KEYS}
    return global_arrays(arrays, sharding, batch_axis=1 if leading_axis else 0)


class Evaluator:
    """Jitted forward passes over every example of a split (padding rows have weight 0 and are dropped). In a run of
    several processes each places its block of every batch's rows, and all get every row's logits back."""

    def __init__(self, model, cfg: FinetuneConfig, mesh):
        check_batch_divides(cfg.eval_batch_size, mesh, "eval_batch_size")
        self.cfg = cfg
        self.vocab_size = model.config.vocab_size
        self.sharding = batch_sharding(mesh)
        self._logits = jax.jit(lambda params, b: model.apply(
            {"params": params}, b["input_ids"], attention_mask=b["attention_mask"],
            token_type_ids=b["token_type_ids"]).logits, out_shardings=replicated(mesh))

    def predict(self, params, batches, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(logits [n, outputs], labels [n], idx [n]) of the rows of `batches` (one pass over `split`, padding rows
        of weight 0 dropped), in increasing idx order."""
        all_logits, labels, idx = [], [], []
        for number, batch in enumerate(batches):
            device_batch = _device_batch(batch, self.sharding, False, self.vocab_size, f"{split} batch {number}")
            logits = np.asarray(self._logits(params, device_batch))
            keep = np.asarray(batch["weights"]) > 0
            all_logits.append(logits[keep])
            labels.append(np.asarray(batch["labels"])[keep])
            idx.append(np.asarray(batch["idx"])[keep])
        order = np.argsort(np.concatenate(idx), kind="stable")
        return (np.concatenate(all_logits)[order], np.concatenate(labels)[order], np.concatenate(idx)[order])


def make_loss_fn(model, cfg: FinetuneConfig):
    sift_cfg = cfg.sift

    def loss_fn(params, batch, rng):
        dropout_rng, sift_rng = jax.random.split(rng)
        logits = model.apply({"params": params}, batch["input_ids"], attention_mask=batch["attention_mask"],
                             token_type_ids=batch["token_type_ids"], deterministic=False,
                             rngs={"dropout": dropout_rng}).logits
        loss, metrics = task_loss(logits, batch["labels"], batch["weights"])
        if sift_cfg.enabled:
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


def _train_batches(family, train, cfg: FinetuneConfig, steps_per_epoch: int, start: int, sharding,
                   vocab_size: int):
    """Device batches of the steps from `start` on, epoch after epoch (a resumed run skips what it trained on)."""
    for epoch in itertools.count(start // steps_per_epoch):
        for position, batch in enumerate(family.batches(train, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                                        epoch=epoch)):
            step = epoch * steps_per_epoch + position
            if step >= start:
                yield _device_batch(batch, sharding, True, vocab_size, f"training step {step + 1}")


def finetune(cfg: FinetuneConfig, workdir: str, resume: bool = False, progress: bool = True,
             stop_after: int | None = None) -> dict:
    """Fine-tunes on cfg.task; keeps the best checkpoint by the task's main metric and exports it (HF format).

    stop_after: end this run after that many steps in total (checkpointing there), as a preempted job would; a
    later `resume=True` run continues. Only a finished run exports.
    """
    maybe_initialize_distributed()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    checkpoints = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=cfg.loop.keep_checkpoints,
                                    best_directory=os.path.join(workdir, "best"))
    check_resume(workdir, checkpoints, resume)
    family = task_family(cfg.task)
    task = family.task
    tokenizer = DebertaV3Tokenizer.from_pretrained(cfg.model, cfg.revision)
    model, params, report = load_pretrained(cfg.model, family.head, ignore_mismatched_sizes=True,
                                            return_report=True, revision=cfg.revision, **model_overrides(cfg))
    if [k for k in report.missing if not k.startswith(("pooler.", "classifier."))]:
        raise ValueError(f"{cfg.model} lacks backbone weights: {report.missing}")
    check_vocabulary(tokenizer.vocab_size, tokenizer.spm_path, model.config.vocab_size, cfg.model)
    if cfg.rescale_word_table:
        try:
            params, factor = rescale_word_table(params, model.config, model.config.initializer_range)
        except ValueError as e:
            raise ConfigError(f"FinetuneConfig.rescale_word_table: {cfg.model}: {e}; set it false for this model "
                              "(the tiny-cpu recipe turns it on)") from None
        log.info("word table scaled by %.3f to RMS %g (rescale_word_table)", factor, model.config.initializer_range)

    def encode(split):
        return family.encode(cfg.data, split, cfg.tfds_data_dir, tokenizer, cfg.max_length, cfg.buckets)

    train = encode("train")
    evals = {split: encode(split) for split in task.validation_splits}
    steps_per_epoch = math.ceil(family.batch_units(train) / cfg.batch_size)
    total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))

    schedule, optimizer = finetune_optimizer(cfg, params, model.config.num_hidden_layers, total_steps)
    mesh = make_mesh(cfg.mesh.shape)
    check_batch_divides(cfg.batch_size, mesh, "batch_size")
    init_args = (dummy_inputs(family.head),)
    state, shardings = create_train_state(model, init_args, optimizer, cfg.seed, mesh, params=params)
    train_step = make_train_step(make_loss_fn(model, cfg), optimizer, schedule, shardings, mesh,
                                 compiler_options=mesh_compiler_options(cfg.compiler, mesh, "FinetuneConfig.compiler"))
    evaluator = Evaluator(model, cfg, mesh)
    start, evaluations = 0, []
    if resume:
        state, record = checkpoints.restore(state, shardings)
        start, evaluations = int(jax.device_get(state.step)), record["evaluations"]

    metric_name = task.main_metric

    def evaluate(params) -> tuple[float, dict]:
        results = {}
        for split, encoded in evals.items():
            batches = family.batches(encoded, cfg.eval_batch_size, shuffle=False)
            results[split] = family.metrics(encoded, *evaluator.predict(params, batches, split))
        log.info("%s", json.dumps(results))
        return float(np.mean([r[metric_name] for r in results.values()])), results

    logger = ProgressLogger(workdir, total_steps, start, cfg.batch_size * cfg.max_length,
                            enabled=is_main_process(), show_bar=progress)
    end = total_steps if stop_after is None else min(stop_after, total_steps)
    batches = _train_batches(family, train, cfg, steps_per_epoch, start, batch_sharding(mesh, leading_axes=1),
                             model.config.vocab_size)
    t_start = time.perf_counter()
    try:
        state, evaluations = run_loop(
            state, train_step, batches, start=start, end=end, total_steps=total_steps, config=cfg.loop,
            checkpointer=checkpoints, logger=logger, data_state=dict,
            evaluation=Evaluation(evaluate, cfg.eval_every or steps_per_epoch), evaluations=evaluations)
        train_seconds = time.perf_counter() - t_start
        best = dict(checkpoints.best, metrics=next((e for e in evaluations if e["step"] == checkpoints.best["step"]),
                                                     {}))
        best["metrics"] = {k: v for k, v in best["metrics"].items() if k not in ("step", "score")}
        if end < total_steps:
            return {"task": cfg.task, "stopped_at": end, "best": best, "evaluations": evaluations}
        best_params = host_copy(checkpoints.best_params(state.params))
    finally:
        logger.close()
        checkpoints.close()

    export_dir = os.path.join(workdir, "export")
    summary = {"task": cfg.task, "main_metric": metric_name, "best": best, "steps": total_steps,
               "steps_per_second": (total_steps - start) / max(train_seconds, 1e-9),
               "train_examples": family.num_examples(train), "truncated_train_examples": family.num_truncated(train),
               "evaluations": evaluations, "export": export_dir, "config": cfg.to_dict()}
    if is_main_process():
        save_pretrained(export_dir, model, best_params)
        tokenizer.save_pretrained(export_dir)
        write_json(os.path.join(workdir, "metrics.json"), summary)
        write_finetuning_card(export_dir, summary)
    all_processes_reach("fine-tuning exported")
    return summary


def predict(task_name: str, model_dir: str, data: str, out_dir: str, split: str | None = None,
            max_length: int = 128, batch_size: int = 64, revision: str | None = None,
            tfds_data_dir: str | None = None) -> list[str]:
    """Writes GLUE or SuperGLUE submission files for the test split(s) of `task_name` with the model in `model_dir`
    (a directory, or a Hub id at `revision`). Run as several processes, all predict together and process 0 writes."""
    maybe_initialize_distributed()
    family = task_family(task_name)
    task = family.task
    tokenizer = DebertaV3Tokenizer.from_pretrained(model_dir, revision)
    model, params = load_pretrained(model_dir, family.head, revision=revision)
    check_vocabulary(tokenizer.vocab_size, tokenizer.spm_path, model.config.vocab_size, model_dir)
    if family.num_labels is not None and model.config.num_labels != family.num_labels:
        raise ValueError(f"{model_dir} has {model.config.num_labels} labels; task {task.name} needs "
                         f"{family.num_labels}")
    cfg = FinetuneConfig(task=task_name, model=model_dir, revision=revision, data=data, tfds_data_dir=tfds_data_dir,
                         max_length=max_length, eval_batch_size=batch_size)
    evaluator = Evaluator(model, cfg, make_mesh(cfg.mesh.shape))
    written = []
    for test_split in ([split] if split else task.test_splits):
        encoded = family.encode(data, test_split, tfds_data_dir, tokenizer, max_length, cfg.buckets)
        batches = family.batches(encoded, batch_size, shuffle=False)
        logits, _, idx = evaluator.predict(params, batches, test_split)
        if is_main_process():
            written.append(family.write_submission(encoded, logits, idx, out_dir, test_split))
    all_processes_reach("submission written")
    return written
