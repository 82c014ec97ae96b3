"""The pretraining loop: data -> masking -> sharded train step -> logging and resumable checkpoints -> HF export.

    deberta-jax pretrain --config tiny_cpu --workdir runs/tiny [--set steps=200 --set sharing=es] [--resume]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from deberta_jax.config import DebertaConfig, preset
from deberta_jax.conversion.hf_checkpoint import save_pretrained
from deberta_jax.data.batching import BatchIterator
from deberta_jax.data.masking import MaskingConfig, mask_batch
from deberta_jax.data.text_corpus import PackedSequences, tokenize_corpus, tokenize_documents, tfds_documents
from deberta_jax.model.modeling import DebertaForMaskedLM, DebertaModel
from deberta_jax.pretraining.config import PretrainConfig
from deberta_jax.pretraining.emd import DebertaForMLMPretraining
from deberta_jax.pretraining.objectives import mlm_loss_fn, rtd_loss_fn
from deberta_jax.pretraining.rtd import (
    CLIP_GROUPS, ReplacedTokenDetection, clip_group_labels, export_discriminator_params, generator_config,
)
from deberta_jax.sharding.mesh import make_mesh
from deberta_jax.sharding.rules import batch_sharding
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.tokenization.training import train_spm_tokenizer
from deberta_jax.training.checkpointing import TrainCheckpointer
from deberta_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
from deberta_jax.training.progress import ProgressLogger
from deberta_jax.training.throughput import compiled_flops, measure_matmul_peak
from deberta_jax.training.train_step import create_train_state, make_train_step

log = logging.getLogger(__name__)


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the launcher says there is one: JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES
    set by hand, or DEBERTA_JAX_DISTRIBUTED=1 on a cluster that `jax.distributed` detects by itself (a TPU pod
    slice, SLURM). A single process needs nothing."""
    if jax.process_count() > 1:
        return
    if (os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("JAX_NUM_PROCESSES", "1")) > 1
            or os.environ.get("DEBERTA_JAX_DISTRIBUTED") == "1"):
        jax.distributed.initialize()


def load_tokenizer(cfg: PretrainConfig, workdir: str) -> DebertaV3Tokenizer:
    if cfg.tokenizer:
        return DebertaV3Tokenizer.from_pretrained(cfg.tokenizer)
    trained = os.path.join(workdir, "tokenizer")
    if os.path.exists(os.path.join(trained, "spm.model")):
        return DebertaV3Tokenizer.from_pretrained(trained)
    if not cfg.corpus:
        raise ValueError("training a tokenizer needs a text corpus; pass tokenizer=PATH for a tfds dataset")
    if jax.process_index() == 0:
        log.info("training a %d-piece sentencepiece model on the corpus", cfg.tokenizer_vocab_size)
        train_spm_tokenizer(list(cfg.corpus), trained, cfg.tokenizer_vocab_size)
    return DebertaV3Tokenizer.from_pretrained(trained)


def load_tokens(cfg: PretrainConfig, tokenizer: DebertaV3Tokenizer, workdir: str) -> np.ndarray:
    cache = os.path.join(workdir, "cache")
    if cfg.corpus:
        return tokenize_corpus(list(cfg.corpus), tokenizer, cache_dir=cache, progress=jax.process_index() == 0)
    documents = tfds_documents(cfg.tfds_dataset, cfg.tfds_split, text_key=cfg.tfds_text_key)
    return tokenize_documents(documents, tokenizer, progress=jax.process_index() == 0)


def model_config(cfg: PretrainConfig, tokenizer: DebertaV3Tokenizer) -> DebertaConfig:
    return preset(cfg.model_preset, **{"vocab_size": tokenizer.vocab_size, "dtype": cfg.dtype, "remat": cfg.remat,
                                      "max_position_embeddings": max(cfg.seq_len, 512), **cfg.model_overrides})


def build_objective(cfg: PretrainConfig, config: DebertaConfig):
    """(model, loss_fn, init_args, masking mode)."""
    init_ids = jnp.zeros((1, cfg.seq_len), jnp.int32)
    if cfg.objective == "mlm":
        model = DebertaForMLMPretraining(config, emd_steps=cfg.emd_steps,
                                         emd_position_only_for_unchanged=cfg.emd_position_only_for_unchanged)
        return model, mlm_loss_fn(model), (init_ids,), "mlm"
    gen = generator_config(config, cfg.generator_depth_ratio)
    model = ReplacedTokenDetection(gen, config, cfg.sharing)
    return model, rtd_loss_fn(model, cfg.rtd_weight, cfg.temperature), (init_ids,), "rtd"


def pretrain_optimizer(cfg: PretrainConfig):
    """(OptimizerConfig, optax optimizer) of a run: AdamW with warmup + linear decay; for RTD with
    `decoupled_clipping`, the generator and the discriminator clipped each by its own norm."""
    opt_cfg = OptimizerConfig(learning_rate=cfg.learning_rate, warmup_steps=min(cfg.warmup_steps, cfg.steps),
                              total_steps=cfg.steps, weight_decay=cfg.weight_decay, b1=cfg.adam_b1, b2=cfg.adam_b2,
                              eps=cfg.adam_eps, clip_norm=cfg.clip_norm)
    decoupled = cfg.objective == "rtd" and cfg.decoupled_clipping
    return opt_cfg, make_optimizer(opt_cfg, clip_groups=(clip_group_labels, CLIP_GROUPS) if decoupled else None)


class PretrainBatches:
    """Host-side batches: packed sequences -> masking -> [accumulation, micro-batch, ...] global arrays.

    Masking draws from a generator keyed by (seed, step, process), so a resumed run masks exactly as before.
    """

    def __init__(self, cfg: PretrainConfig, iterator: BatchIterator, tokenizer: DebertaV3Tokenizer, mode: str,
                 sharding):
        self.cfg, self.iterator, self.tokenizer, self.mode, self.sharding = cfg, iterator, tokenizer, mode, sharding
        self.masking = MaskingConfig(mask_prob=cfg.mask_prob, max_ngram=cfg.max_ngram)
        self.special = {tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id}

    def host_batch(self, step: int) -> dict:
        rows = next(self.iterator)
        rng = np.random.default_rng([self.cfg.seed, step, jax.process_index()])
        masked = mask_batch(rows["input_ids"], rows["attention_mask"], rng, self.masking, special_ids=self.special,
                            mask_id=self.tokenizer.mask_id, vocab_size=self.tokenizer.vocab_size, mode=self.mode)
        batch = {"input_ids": masked["input_ids"], "original_ids": rows["input_ids"],
                 "attention_mask": rows["attention_mask"], "masked_positions": masked["masked_positions"],
                 "masked_labels": masked["masked_labels"], "masked_weights": masked["masked_weights"]}
        if self.mode == "mlm":
            batch["unchanged"] = masked["unchanged"]
        accumulation = self.cfg.grad_accum_steps
        return {k: np.asarray(v).reshape((accumulation, -1) + np.shape(v)[1:]) for k, v in batch.items()}

    def global_batch(self, step: int) -> dict:
        local = self.host_batch(step)
        shape = lambda x: (x.shape[0], x.shape[1] * jax.process_count()) + x.shape[2:]
        return {k: jax.make_array_from_process_local_data(self.sharding, v, shape(v)) for k, v in local.items()}


def export_hf(cfg: PretrainConfig, model, params, tokenizer: DebertaV3Tokenizer, out_dir: str) -> list[str]:
    """Writes HF directories: the discriminator (rtd) or the MLM model (mlm), plus the generator for rtd."""
    params = jax.device_get(params)
    written = []
    if cfg.objective == "mlm":
        mlm = {k: v for k, v in params.items() if k != "emd_position_embeddings"}
        targets = [("mlm", DebertaForMaskedLM(model.config), mlm)]
    else:
        targets = [("discriminator", DebertaModel(model.discriminator_config), export_discriminator_params(params)),
                   ("generator", DebertaForMaskedLM(model.generator_config), params["generator"])]
    for name, target, target_params in targets:
        path = os.path.join(out_dir, name)
        save_pretrained(path, target, target_params)
        tokenizer.save_pretrained(path)
        written.append(path)
    return written


def pretrain(cfg: PretrainConfig, workdir: str, resume: bool = False, progress: bool = True,
             stop_after: int | None = None) -> dict:
    """Runs (or resumes) pretraining; returns the final summary (also written to workdir/summary.json).

    progress: draw the progress bar (metrics.jsonl and TensorBoard events are written either way).
    stop_after: end this run after that many steps in total (checkpointing there), as a job with a time limit or a
    preemption would; a later `resume=True` run continues to `cfg.steps`.
    """
    maybe_initialize_distributed()
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    checkpoints = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=cfg.keep_checkpoints)
    if not resume and checkpoints.latest_step() is not None:
        raise FileExistsError(f"{workdir} already has checkpoints; pass --resume or use a new workdir")
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(cfg), f, indent=2)

    tokenizer = load_tokenizer(cfg, workdir)
    dataset = PackedSequences(load_tokens(cfg, tokenizer, workdir), cfg.seq_len, tokenizer.cls_id,
                              tokenizer.sep_id, tokenizer.pad_id)
    config = model_config(cfg, tokenizer)
    model, loss_fn, init_args, mode = build_objective(cfg, config)
    mesh = make_mesh(cfg.mesh_shape)
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if cfg.micro_batch_size % data_parallel:
        raise ValueError(f"micro-batch {cfg.micro_batch_size} (batch_size / grad_accum_steps) is not divisible by "
                         f"the {data_parallel} data-parallel devices of mesh {dict(mesh.shape)}")
    iterator = BatchIterator(dataset, cfg.batch_size, cfg.seed, process_index=jax.process_index(),
                             process_count=jax.process_count())
    opt_cfg, optimizer = pretrain_optimizer(cfg)
    state, shardings = create_train_state(model, init_args, optimizer, cfg.seed, mesh)
    start = 0
    if resume and checkpoints.latest_step() is not None:
        state, data_state = checkpoints.restore(state, shardings)
        iterator.set_state(data_state)
        start = int(jax.device_get(state.step))
        log.info("resumed from step %d", start)
    batches = PretrainBatches(cfg, iterator, tokenizer, mode, batch_sharding(mesh, leading_axes=1))
    train_step = make_train_step(loss_fn, optimizer, learning_rate_schedule(opt_cfg), shardings, mesh)

    batch = batches.global_batch(start)
    t0 = time.perf_counter()
    train_step = train_step.lower(state, batch).compile()  # compiled once; its FLOP count feeds the MFU figure
    compile_seconds = time.perf_counter() - t0
    flops = compiled_flops(train_step)
    peak = measure_matmul_peak(jnp.dtype(cfg.dtype))
    logger = ProgressLogger(workdir, cfg.steps, start, cfg.batch_size * cfg.seq_len, flops, peak,
                            enabled=jax.process_index() == 0, show_bar=progress)
    pending = []
    end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
    try:
        for step in range(start, end):
            if step > start:
                batch = batches.global_batch(step)
            state, metrics = train_step(state, batch)
            pending.append(metrics)
            done = step + 1
            if done % cfg.log_every == 0 or done == end:
                logger.log(done, pending)
                pending = []
            if done % cfg.checkpoint_every == 0 or done == end:
                checkpoints.save(done, state, iterator.get_state())
    finally:
        logger.close()
        checkpoints.close()

    finished = end == cfg.steps
    exported = export_hf(cfg, model, state.params, tokenizer, os.path.join(workdir, "export")) \
        if finished and jax.process_index() == 0 else []
    last = logger.history[-1] if logger.history else {}
    summary = {"steps": cfg.steps, "stopped_at": end, "resumed_from": start, "compile_seconds": round(compile_seconds, 2),
               "flops_per_step": flops, "matmul_peak_flops": peak, "mesh": dict(mesh.shape),
               "devices": [d.device_kind for d in jax.devices()][:1] + [f"x{jax.device_count()}"],
               "final": last, "exported": exported, "history": logger.history}
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return summary
