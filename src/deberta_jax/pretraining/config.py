"""Pretraining recipes: a frozen dataclass, read from JSON files and `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import os
import typing

from deberta_jax.overrides import apply_overrides

RECIPE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "experiments", "pretrain")


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Everything a pretraining run depends on. Batch sizes are global (all devices, one optimizer step)."""

    objective: str = "rtd"                  # "mlm" (with the EMD) or "rtd"
    model_preset: str = "deberta-v3-xsmall"
    model_overrides: dict = dataclasses.field(default_factory=dict)
    sharing: str = "gdes"                   # rtd: "gdes" | "es" | "nes"
    generator_depth_ratio: float = 0.5
    rtd_weight: float = 50.0
    temperature: float = 1.0
    emd_steps: int = 2                      # mlm: 0 disables the enhanced mask decoder
    emd_position_only_for_unchanged: bool = False
    corpus: tuple = ()                      # text files (.txt / .txt.gz); documents separated by blank lines
    tfds_dataset: str | None = None         # or a tensorflow-datasets text dataset
    tfds_split: str = "train"
    tfds_text_key: str = "text"
    tokenizer: str | None = None            # spm.model or a directory; trained on the corpus when None
    tokenizer_vocab_size: int = 8000
    seq_len: int = 128
    batch_size: int = 32
    grad_accum_steps: int = 1
    steps: int = 1000
    learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    adam_b1: float = 0.9
    adam_b2: float = 0.999
    adam_eps: float = 1e-6
    clip_norm: float = 1.0
    # rtd: clip the generator's and the discriminator's gradients each by its own norm (microsoft/DeBERTa's
    # decoupled training); one global norm lets the rtd_weight-scaled discriminator gradient shrink the generator's.
    decoupled_clipping: bool = True
    mask_prob: float = 0.15
    max_ngram: int = 1                      # longest masked span; microsoft/DeBERTa's RTD masks single tokens
    mesh_shape: tuple = (-1, 1, 1)          # (data, fsdp, tensor); one -1 takes the remaining devices
    dtype: str = "float32"                  # compute dtype; params stay float32
    remat: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10

    def __post_init__(self):
        object.__setattr__(self, "corpus", tuple(self.corpus))
        object.__setattr__(self, "mesh_shape", tuple(self.mesh_shape))
        checks = [
            (self.objective in ("mlm", "rtd"), "objective", "must be 'mlm' or 'rtd'"),
            (self.sharing in ("gdes", "es", "nes"), "sharing", "must be 'gdes', 'es' or 'nes'"),
            (bool(self.corpus) != bool(self.tfds_dataset), "corpus", "give exactly one of corpus and tfds_dataset"),
            (self.seq_len >= 8, "seq_len", "must be >= 8"),
            (self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.grad_accum_steps >= 1 and self.batch_size % self.grad_accum_steps == 0, "grad_accum_steps",
             "must divide batch_size"),
            (self.steps >= 1, "steps", "must be >= 1"),
            (self.log_every >= 1 and self.checkpoint_every >= 1, "log_every", "log/checkpoint intervals must be >= 1"),
            (0 < self.generator_depth_ratio <= 1, "generator_depth_ratio", "must be in (0, 1]"),
            (self.temperature > 0, "temperature", "must be > 0"),
        ]
        for ok, field, message in checks:
            if not ok:
                raise ValueError(f"PretrainConfig.{field}={getattr(self, field)!r}: {message}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum_steps


def load_pretrain_config(name_or_file: str, overrides: typing.Sequence[str] = ()) -> PretrainConfig:
    """A recipe by name (experiments/pretrain/NAME.json) or path, with `key=value` overrides applied."""
    path = name_or_file
    if not os.path.exists(path):
        path = os.path.join(RECIPE_DIR, name_or_file + ("" if name_or_file.endswith(".json") else ".json"))
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(RECIPE_DIR) if f.endswith(".json")) if os.path.isdir(
            RECIPE_DIR) else []
        raise FileNotFoundError(f"no pretraining recipe {name_or_file!r} (file or name; known: {known})")
    with open(path, encoding="utf-8") as f:
        values = json.load(f)
    values.pop("_comment", None)
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown}")
    base_dir = os.path.dirname(os.path.abspath(path))
    if "corpus" in values:  # recipe paths are relative to the recipe file
        values["corpus"] = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p))
                            for p in values["corpus"]]
    return PretrainConfig(**apply_overrides(PretrainConfig, values, overrides))
