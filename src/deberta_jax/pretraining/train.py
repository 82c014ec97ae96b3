"""The pretraining loop: data -> masking -> sharded train step -> logging and resumable checkpoints -> HF export.

    deberta-jax pretrain --config tiny_cpu --workdir runs/tiny [--set steps=200 --set rtd.sharing=es] [--resume]
"""

from __future__ import annotations

import itertools
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from deberta_jax.config import DebertaConfig, preset
from deberta_jax.conversion.hf_checkpoint import save_pretrained
from deberta_jax.conversion.model_card import write_pretraining_cards
from deberta_jax.data.masking import mask_batch
from deberta_jax.data.prepared import MANIFEST, TextFiles, TfdsText, prepare, preparation_plan
from deberta_jax.data.prepared_batches import PreparedBatches
from deberta_jax.data.token_ids import check_token_ids, check_vocabulary
from deberta_jax.distributed import (
    all_processes_reach, global_arrays, host_copy, is_main_process, maybe_initialize_distributed,
)
from deberta_jax.model.modeling import DebertaForMaskedLM, DebertaModel
from deberta_jax.pretraining.config import PretrainConfig
from deberta_jax.pretraining.emd import DebertaForMLMPretraining, masked_lm_params
from deberta_jax.pretraining.objectives import mlm_loss_fn, rtd_loss_fn
from deberta_jax.pretraining.rtd import (
    CLIP_GROUPS, ReplacedTokenDetection, clip_group_labels, export_discriminator_params, generator_config,
)
from deberta_jax.sharding.mesh import check_batch_divides, make_mesh
from deberta_jax.sharding.rules import batch_sharding
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.tokenization.training import train_spm_tokenizer
from deberta_jax.training.checkpointing import TrainCheckpointer, check_resume
from deberta_jax.training.compiler_options import mesh_compiler_options
from deberta_jax.training.loop import run_loop
from deberta_jax.training.optimizer import learning_rate_schedule, make_optimizer
from deberta_jax.training.progress import ProgressLogger
from deberta_jax.training.records import write_config, write_json
from deberta_jax.training.throughput import compiled_flops, measure_matmul_peak
from deberta_jax.training.train_step import create_train_state, make_train_step

log = logging.getLogger(__name__)


def load_tokenizer(cfg: PretrainConfig, workdir: str) -> DebertaV3Tokenizer:
    if cfg.data.tokenizer:
        return DebertaV3Tokenizer.from_pretrained(cfg.data.tokenizer)
    trained = os.path.join(workdir, "tokenizer")
    if is_main_process() and not os.path.exists(os.path.join(trained, "spm.model")):
        if not cfg.data.corpus:
            raise ValueError("training a tokenizer needs a text corpus; set data.tokenizer=PATH for a tfds dataset "
                             "or prepared data")
        log.info("training a %d-piece sentencepiece model on the corpus", cfg.data.tokenizer_vocab_size)
        train_spm_tokenizer(list(cfg.data.corpus), trained, cfg.data.tokenizer_vocab_size)
    all_processes_reach("tokenizer trained")
    return DebertaV3Tokenizer.from_pretrained(trained)


def prepared_directory(cfg: PretrainConfig, tokenizer: DebertaV3Tokenizer, workdir: str) -> str:
    """data.prepared, or the corpus prepared on first use into workdir/prepared/KEY by process 0 (one shard, so the
    rows are `PackedSequences` of the whole corpus; `deberta-jax prepare-data` does it with workers and hosts)."""
    if cfg.data.prepared:
        return cfg.data.prepared
    source = (TextFiles.open(list(cfg.data.corpus)) if cfg.data.corpus else
              TfdsText(cfg.data.tfds_dataset, cfg.data.tfds_split, cfg.data.tfds_text_key))
    # Keyed by the preparation, as a cache: a workdir may see another tokenizer or seq_len before its first checkpoint.
    # len(): every process, before process 0 prepares (a tfds split is prepared on first use, see TfdsText).
    out = os.path.join(workdir, "prepared", preparation_plan(source, tokenizer, cfg.data.seq_len, 1)[:16])
    if is_main_process() and not os.path.exists(os.path.join(out, MANIFEST)):
        prepare(source, tokenizer, cfg.data.seq_len, out, shards=1, log=log.info)
    all_processes_reach("corpus prepared")
    return out


def model_config(cfg: PretrainConfig, vocab_size: int) -> DebertaConfig:
    """The recipe's model for a tokenizer of `vocab_size` ids."""
    return preset(cfg.model.preset, **{"vocab_size": vocab_size, "dtype": cfg.model.dtype,
                                       "remat": cfg.model.remat, "max_position_embeddings": max(cfg.data.seq_len, 512),
                                       **cfg.model.overrides})


def build_objective(cfg: PretrainConfig, model_cfg: DebertaConfig):
    """(model, loss_fn, init_args, masking mode)."""
    init_ids = jnp.zeros((1, cfg.data.seq_len), jnp.int32)
    if cfg.objective == "mlm":
        model = DebertaForMLMPretraining(model_cfg, emd_steps=cfg.emd.steps,
                                         emd_position_only_for_unchanged=cfg.emd.position_only_for_unchanged)
        return model, mlm_loss_fn(model), (init_ids,), "mlm"
    generator_cfg = generator_config(model_cfg, cfg.rtd.generator_depth_ratio)
    model = ReplacedTokenDetection(generator_cfg, model_cfg, cfg.rtd.sharing, cfg.rtd.generator_emd_steps)
    return model, rtd_loss_fn(model, cfg.rtd.weight, cfg.rtd.temperature), (init_ids,), "rtd"


def pretrain_optimizer(cfg: PretrainConfig):
    """(schedule, optax optimizer) of a run: AdamW with warmup + linear decay; for RTD with
    `rtd.decoupled_clipping`, the generator and the discriminator clipped each by its own norm."""
    schedule = learning_rate_schedule(cfg.optimizer, cfg.steps)
    decoupled = cfg.objective == "rtd" and cfg.rtd.decoupled_clipping
    return schedule, make_optimizer(cfg.optimizer, schedule,
                                    clip_groups=(clip_group_labels, CLIP_GROUPS) if decoupled else None)


def step_batch(rows: dict, masked: dict, mode: str, accumulation: int) -> dict:
    """The train step's batch from packed rows (input_ids, attention_mask [B, N]) and their masks (`mask_batch`):
    every leaf [accumulation, B / accumulation, ...]."""
    batch = {"input_ids": masked["input_ids"], "original_ids": rows["input_ids"],
             "attention_mask": rows["attention_mask"], "masked_positions": masked["masked_positions"],
             "masked_labels": masked["masked_labels"], "masked_weights": masked["masked_weights"]}
    if mode == "mlm":
        batch["unchanged"] = masked["unchanged"]
    return {k: np.asarray(v).reshape((accumulation, -1) + np.shape(v)[1:]) for k, v in batch.items()}


class PretrainBatches:
    """Host-side batches: packed sequences -> masking -> [accumulation, micro-batch, ...] global arrays.

    Masking draws from generators keyed by (seed, step, global row), so a resumed run, or one with another number
    of processes, masks exactly as before.
    """

    def __init__(self, cfg: PretrainConfig, iterator: PreparedBatches, tokenizer: DebertaV3Tokenizer, mode: str,
                 sharding):
        self.cfg, self.iterator, self.tokenizer, self.mode, self.sharding = cfg, iterator, tokenizer, mode, sharding
        self.special = {tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id}

    def host_batch(self, step: int) -> dict:
        rows = next(self.iterator)
        # The tokenizer's ids fit the model (checked in `pretrain`); a stale or foreign token cache may not.
        check_token_ids(rows["input_ids"], self.tokenizer.vocab_size, f"pretraining step {step + 1}")
        return step_batch(rows, self.mask_rows(rows, step), self.mode, self.cfg.data.grad_accum_steps)

    def mask_rows(self, rows: dict, step: int) -> dict:
        """Masks each row with a generator keyed by (seed, step, the row's index in the global batch): the same
        masks whatever the number of processes (each holds a contiguous slice of the global batch), and again on
        resume."""
        ids, attention = rows["input_ids"], rows["attention_mask"]
        first = jax.process_index() * len(ids)
        masked = [mask_batch(ids[i:i + 1], attention[i:i + 1], np.random.default_rng([self.cfg.seed, step, first + i]),
                             self.cfg.masking, special_ids=self.special, mask_id=self.tokenizer.mask_id,
                             vocab_size=self.tokenizer.vocab_size, mode=self.mode) for i in range(len(ids))]
        return {key: np.concatenate([row[key] for row in masked]) for key in masked[0]}

    def global_batch(self, step: int) -> dict:
        return global_arrays(self.host_batch(step), self.sharding, batch_axis=1)


def export_hf(cfg: PretrainConfig, model, params, tokenizer: DebertaV3Tokenizer, out_dir: str) -> list[str]:
    """Writes HF directories: the discriminator (rtd) or the MLM model (mlm), plus the generator for rtd. Every
    process calls it (gathering `params` is collective); process 0 writes."""
    params = host_copy(params)
    if not is_main_process():
        return []
    written = []
    if cfg.objective == "mlm":
        targets = [("mlm", DebertaForMaskedLM(model.config), masked_lm_params(params))]
    else:
        targets = [("discriminator", DebertaModel(model.discriminator_config), export_discriminator_params(params)),
                   ("generator", DebertaForMaskedLM(model.generator_config), masked_lm_params(params["generator"]))]
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
    checkpoints = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=cfg.loop.keep_checkpoints)
    check_resume(workdir, checkpoints, resume)

    tokenizer = load_tokenizer(cfg, workdir)
    prepared = prepared_directory(cfg, tokenizer, workdir)
    model_cfg = model_config(cfg, tokenizer.vocab_size)
    check_vocabulary(tokenizer.vocab_size, tokenizer.spm_path, model_cfg.vocab_size,
                     f"{cfg.model.preset} (with model.overrides {cfg.model.overrides})")
    model, loss_fn, init_args, mode = build_objective(cfg, model_cfg)
    mesh = make_mesh(cfg.mesh.shape)
    check_batch_divides(cfg.data.micro_batch_size, mesh, "micro-batch (data.batch_size / data.grad_accum_steps)")
    iterator = PreparedBatches(prepared, cfg.data.batch_size, cfg.seed, tokenizer=tokenizer, seq_len=cfg.data.seq_len,
                               process_index=jax.process_index(), process_count=jax.process_count(),
                               read_threads=cfg.data.read_threads, read_workers=cfg.data.read_workers)
    schedule, optimizer = pretrain_optimizer(cfg)
    state, shardings = create_train_state(model, init_args, optimizer, cfg.seed, mesh)
    start = 0
    if resume:
        state, record = checkpoints.restore(state, shardings)
        iterator.set_state(record["data"])
        start = int(jax.device_get(state.step))
        log.info("resumed from step %d", start)
    batches = PretrainBatches(cfg, iterator, tokenizer, mode, batch_sharding(mesh, leading_axes=1))
    train_step = make_train_step(loss_fn, optimizer, schedule, shardings, mesh,
                                 compiler_options=mesh_compiler_options(cfg.compiler, mesh, "PretrainConfig.compiler"))

    first = batches.global_batch(start)
    t0 = time.perf_counter()
    train_step = train_step.lower(state, first).compile()  # compiled once; its FLOP count feeds the MFU figure
    if is_main_process():  # only now: a resume that fails above leaves the run's record as it was
        write_config(os.path.join(workdir, "config.json"), cfg.to_dict())
    compile_seconds = time.perf_counter() - t0
    flops = compiled_flops(train_step)
    peak = measure_matmul_peak(jnp.dtype(cfg.model.dtype))
    logger = ProgressLogger(workdir, cfg.steps, start, cfg.data.batch_size * cfg.data.seq_len, flops, peak,
                            enabled=is_main_process(), show_bar=progress)
    end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
    steps = itertools.chain([first], (batches.global_batch(step) for step in itertools.count(start + 1)))
    try:
        state, _ = run_loop(state, train_step, steps, start=start, end=end, total_steps=cfg.steps, config=cfg.loop,
                            checkpointer=checkpoints, logger=logger, data_state=iterator.get_state)
    finally:
        logger.close()
        checkpoints.close()

    finished = end == cfg.steps
    exported = export_hf(cfg, model, state.params, tokenizer, os.path.join(workdir, "export")) if finished else []
    last = logger.history[-1] if logger.history else {}
    summary = {"steps": cfg.steps, "stopped_at": end, "resumed_from": start, "compile_seconds": round(compile_seconds, 2),
               "flops_per_step": flops, "matmul_peak_flops": peak, "mesh": dict(mesh.shape),
               "devices": [d.device_kind for d in jax.devices()][:1] + [f"x{jax.device_count()}"],
               "final": last, "exported": exported, "history": logger.history}
    if is_main_process():
        write_json(os.path.join(workdir, "summary.json"), summary)
        write_pretraining_cards(exported, cfg.to_dict(), summary)
    return summary
