"""The pretraining loop: data -> masking -> sharded train step -> logging and resumable checkpoints -> HF export.

    deberta-jax pretrain --config tiny_cpu --workdir runs/tiny [--set steps=200 --set rtd.sharing=es] [--resume]
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import time

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np

from deberta_jax.config import DebertaConfig, preset
from deberta_jax.conversion.hf_checkpoint import save_pretrained
from deberta_jax.data.batching import BatchIterator
from deberta_jax.data.masking import mask_batch
from deberta_jax.data.text_corpus import PackedSequences, tokenize_corpus, tokenize_documents, tfds_documents
from deberta_jax.data.token_ids import check_token_ids, check_vocabulary
from deberta_jax.model.modeling import DebertaForMaskedLM, DebertaModel
from deberta_jax.pretraining.config import PretrainConfig
from deberta_jax.pretraining.emd import DebertaForMLMPretraining
from deberta_jax.pretraining.objectives import mlm_loss_fn, rtd_loss_fn
from deberta_jax.pretraining.rtd import (
    CLIP_GROUPS, ReplacedTokenDetection, clip_group_labels, export_discriminator_params, generator_config,
)
from deberta_jax.sharding.mesh import check_batch_divides, make_mesh
from deberta_jax.sharding.rules import batch_sharding
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.tokenization.training import train_spm_tokenizer
from deberta_jax.training.checkpointing import TrainCheckpointer, check_resume
from deberta_jax.training.loop import run_loop
from deberta_jax.training.optimizer import learning_rate_schedule, make_optimizer
from deberta_jax.training.progress import ProgressLogger
from deberta_jax.training.records import write_config, write_json
from deberta_jax.training.throughput import compiled_flops, measure_matmul_peak
from deberta_jax.training.train_step import create_train_state, make_train_step

log = logging.getLogger(__name__)


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the launcher says there is one: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
    and JAX_PROCESS_ID set by hand (all three), or DEBERTA_JAX_DISTRIBUTED=1 on a cluster that `jax.distributed`
    detects by itself (a TPU pod slice, SLURM). A single process needs nothing. Decided from the environment alone:
    any JAX call that starts the backend first would make initialising impossible. A process that cannot reach the
    coordinator gives up after DEBERTA_JAX_INIT_TIMEOUT seconds (default 300)."""
    if jax.distributed.is_initialized():
        return
    names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    given = {name: os.environ.get(name) for name in names if os.environ.get(name)}
    if given:
        # CPU processes exchange collectives through gloo; GPU and TPU backends ignore the setting.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        missing = [name for name in names if name not in given]
        if missing:
            raise ValueError(f"a multi-process run needs all of {', '.join(names)}; missing: {', '.join(missing)}")
        timeout = int(os.environ.get("DEBERTA_JAX_INIT_TIMEOUT", "300"))
        address, process_id = given["JAX_COORDINATOR_ADDRESS"], int(given["JAX_PROCESS_ID"])
        if process_id != 0:  # the runtime aborts the process when it cannot connect: check first, and say why
            _wait_for_coordinator(address, timeout, f"process {process_id} of {given['JAX_NUM_PROCESSES']}")
        jax.distributed.initialize(coordinator_address=address, num_processes=int(given["JAX_NUM_PROCESSES"]),
                                   process_id=process_id, initialization_timeout=timeout)
    elif os.environ.get("DEBERTA_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def _wait_for_coordinator(address: str, timeout: float, who: str) -> None:
    """Waits until the coordinator's port (process 0's) accepts connections; a clear error after `timeout` s."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{who} could not reach the coordinator at {address} within {timeout:g} s "
                                   f"(DEBERTA_JAX_INIT_TIMEOUT): is process 0 running there? ({error})") from None
            time.sleep(0.5)


def _all_processes_reach(name: str) -> None:
    """A barrier: what process 0 wrote before it is there for every process after it."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def load_tokenizer(cfg: PretrainConfig, workdir: str) -> DebertaV3Tokenizer:
    if cfg.data.tokenizer:
        return DebertaV3Tokenizer.from_pretrained(cfg.data.tokenizer)
    trained = os.path.join(workdir, "tokenizer")
    if jax.process_index() == 0 and not os.path.exists(os.path.join(trained, "spm.model")):
        if not cfg.data.corpus:
            raise ValueError("training a tokenizer needs a text corpus; set data.tokenizer=PATH for a tfds dataset")
        log.info("training a %d-piece sentencepiece model on the corpus", cfg.data.tokenizer_vocab_size)
        train_spm_tokenizer(list(cfg.data.corpus), trained, cfg.data.tokenizer_vocab_size)
    _all_processes_reach("tokenizer trained")
    return DebertaV3Tokenizer.from_pretrained(trained)


def load_tokens(cfg: PretrainConfig, tokenizer: DebertaV3Tokenizer, workdir: str) -> np.ndarray:
    """The corpus as token ids; process 0 tokenizes a corpus into the workdir's cache, the others then read it."""
    first = jax.process_index() == 0
    if cfg.data.corpus:
        def tokens():
            return tokenize_corpus(list(cfg.data.corpus), tokenizer, cache_dir=os.path.join(workdir, "cache"),
                                   progress=first)

        ids = tokens() if first else None
        _all_processes_reach("corpus tokenized")
        return ids if first else tokens()
    documents = tfds_documents(cfg.data.tfds_dataset, cfg.data.tfds_split, text_key=cfg.data.tfds_text_key)
    return tokenize_documents(documents, tokenizer, progress=first)


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
    model = ReplacedTokenDetection(generator_cfg, model_cfg, cfg.rtd.sharing)
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

    def __init__(self, cfg: PretrainConfig, iterator: BatchIterator, tokenizer: DebertaV3Tokenizer, mode: str,
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
    checkpoints = TrainCheckpointer(os.path.join(workdir, "checkpoints"), keep=cfg.loop.keep_checkpoints)
    check_resume(workdir, checkpoints, resume)

    tokenizer = load_tokenizer(cfg, workdir)
    dataset = PackedSequences(load_tokens(cfg, tokenizer, workdir), cfg.data.seq_len, tokenizer.cls_id,
                              tokenizer.sep_id, tokenizer.pad_id)
    model_cfg = model_config(cfg, tokenizer.vocab_size)
    check_vocabulary(tokenizer.vocab_size, tokenizer.spm_path, model_cfg.vocab_size,
                     f"{cfg.model.preset} (with model.overrides {cfg.model.overrides})")
    model, loss_fn, init_args, mode = build_objective(cfg, model_cfg)
    mesh = make_mesh(cfg.mesh.shape)
    check_batch_divides(cfg.data.micro_batch_size, mesh, "micro-batch (data.batch_size / data.grad_accum_steps)")
    iterator = BatchIterator(dataset, cfg.data.batch_size, cfg.seed, process_index=jax.process_index(),
                             process_count=jax.process_count())
    schedule, optimizer = pretrain_optimizer(cfg)
    state, shardings = create_train_state(model, init_args, optimizer, cfg.seed, mesh)
    start = 0
    if resume:
        state, record = checkpoints.restore(state, shardings)
        iterator.set_state(record["data"])
        start = int(jax.device_get(state.step))
        log.info("resumed from step %d", start)
    batches = PretrainBatches(cfg, iterator, tokenizer, mode, batch_sharding(mesh, leading_axes=1))
    train_step = make_train_step(loss_fn, optimizer, schedule, shardings, mesh)

    first = batches.global_batch(start)
    t0 = time.perf_counter()
    train_step = train_step.lower(state, first).compile()  # compiled once; its FLOP count feeds the MFU figure
    if jax.process_index() == 0:  # only now: a resume that fails above leaves the run's record as it was
        write_config(os.path.join(workdir, "config.json"), cfg.to_dict())
    compile_seconds = time.perf_counter() - t0
    flops = compiled_flops(train_step)
    peak = measure_matmul_peak(jnp.dtype(cfg.model.dtype))
    logger = ProgressLogger(workdir, cfg.steps, start, cfg.data.batch_size * cfg.data.seq_len, flops, peak,
                            enabled=jax.process_index() == 0, show_bar=progress)
    end = cfg.steps if stop_after is None else min(stop_after, cfg.steps)
    steps = itertools.chain([first], (batches.global_batch(step) for step in itertools.count(start + 1)))
    try:
        state, _ = run_loop(state, train_step, steps, start=start, end=end, total_steps=cfg.steps, config=cfg.loop,
                            checkpointer=checkpoints, logger=logger, data_state=iterator.get_state)
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
        write_json(os.path.join(workdir, "summary.json"), summary)
    return summary
