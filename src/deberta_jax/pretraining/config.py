"""Pretraining recipes: a tree of frozen config sections, read from JSON files with dotted `--set` overrides.

    {"objective": "rtd", "steps": 1500, "model": {"preset": "deberta-v3-xsmall"}, "data": {"seq_len": 64},
     "optimizer": {"learning_rate": 1e-3, "warmup_steps": 100}, "rtd": {"sharing": "gdes"}}
"""

from __future__ import annotations

import dataclasses
import os
import typing

from deberta_jax import recipes
from deberta_jax.config_tree import ConfigError, Section, apply_overrides, from_dict, read_json, strip_comments
from deberta_jax.data.masking import MaskingConfig
from deberta_jax.sharding.mesh import MeshConfig
from deberta_jax.training.compiler_options import CompilerSection
from deberta_jax.training.loop import LoopConfig
from deberta_jax.training.optimizer import OptimizerConfig



@dataclasses.dataclass(frozen=True)
class ModelSection(Section):
    """The model trained: a preset (`deberta_jax.config.PRESETS`) with field overrides."""

    preset: str = "deberta-v3-xsmall"
    overrides: dict = dataclasses.field(default_factory=dict)
    dtype: str = "float32"   # compute dtype; params stay float32
    remat: str = "none"      # what the layers keep for the backward pass: a deberta_jax.config.REMAT_POLICIES name


@dataclasses.dataclass(frozen=True)
class CorpusSection(Section):
    """Text in, token rows out. Batch sizes are global (all devices, one optimizer step)."""

    corpus: tuple[str, ...] = ()         # text files (.txt / .txt.gz); documents separated by blank lines
    tfds_dataset: str | None = None      # or a tensorflow-datasets text dataset
    tfds_split: str = "train"
    tfds_text_key: str = "text"
    prepared: str | None = None          # or a directory of `deberta-jax prepare-data` (read through grain)
    tokenizer: str | None = None         # spm.model or a directory; trained on the corpus when None
    tokenizer_vocab_size: int = 8000
    seq_len: int = 128
    batch_size: int = 32
    grad_accum_steps: int = 1
    read_threads: int = 2                # grain's reading threads per process
    read_workers: int = 0                # grain's reading processes per process (0: none, read in this process)

    def checks(self):
        return [(self.seq_len >= 8, "seq_len", "must be >= 8"),
                (self.read_threads >= 1, "read_threads", "must be >= 1"),
                (self.read_workers >= 0, "read_workers", "must be >= 0"),
                (self.batch_size >= 1, "batch_size", "must be >= 1"),
                (self.grad_accum_steps >= 1 and self.batch_size % self.grad_accum_steps == 0, "grad_accum_steps",
                 "must divide batch_size"),
                (self.tokenizer_vocab_size >= 16, "tokenizer_vocab_size", "must be >= 16")]

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum_steps


@dataclasses.dataclass(frozen=True)
class RtdSection(Section):
    """Replaced token detection (DeBERTaV3): generator, discriminator and how they share the embeddings."""

    sharing: str = "gdes"                # "gdes" | "es" | "nes"
    generator_depth_ratio: float = 0.5
    # Last-layer passes of the generator's enhanced mask decoder (absolute positions before its MLM head), as
    # microsoft's generator, its MaskedLanguageModel, predicts (2 there); 0: a plain MLM head on the last layer.
    generator_emd_steps: int = 0
    weight: float = 50.0                 # lambda of L_MLM + lambda * L_RTD
    temperature: float = 1.0             # of the generator's sampling
    # Clip the generator's and the discriminator's gradients each by its own norm (microsoft/DeBERTa's decoupled
    # training); one global norm lets the weight-scaled discriminator gradient shrink the generator's.
    decoupled_clipping: bool = True

    def checks(self):
        return [(self.sharing in ("gdes", "es", "nes"), "sharing", "must be 'gdes', 'es' or 'nes'"),
                (0 < self.generator_depth_ratio <= 1, "generator_depth_ratio", "must be in (0, 1]"),
                (self.generator_emd_steps >= 0, "generator_emd_steps", "must be >= 0"),
                (self.weight > 0, "weight", "must be > 0"),
                (self.temperature > 0, "temperature", "must be > 0")]


@dataclasses.dataclass(frozen=True)
class EmdSection(Section):
    """The enhanced mask decoder of MLM pretraining."""

    steps: int = 2                       # 0 disables it
    position_only_for_unchanged: bool = False

    def checks(self):
        return [(self.steps >= 0, "steps", "must be >= 0")]


@dataclasses.dataclass(frozen=True)
class PretrainConfig(Section):
    """Everything a pretraining run depends on."""

    objective: str = "rtd"               # "mlm" (with the EMD) or "rtd"
    steps: int = 1000
    seed: int = 0
    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: CorpusSection = dataclasses.field(default_factory=CorpusSection)
    masking: MaskingConfig = dataclasses.field(default_factory=lambda: MaskingConfig(max_ngram=1))
    rtd: RtdSection = dataclasses.field(default_factory=RtdSection)
    emd: EmdSection = dataclasses.field(default_factory=EmdSection)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=lambda: OptimizerConfig(warmup_steps=100))
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
    compiler: CompilerSection = dataclasses.field(default_factory=CompilerSection)
    loop: LoopConfig = dataclasses.field(default_factory=LoopConfig)

    def checks(self):
        return [(self.objective in ("mlm", "rtd"), "objective", "must be 'mlm' or 'rtd'"),
                (self.steps >= 1, "steps", "must be >= 1"),
                (sum(map(bool, (self.data.corpus, self.data.tfds_dataset, self.data.prepared))) == 1, "data.corpus",
                 "give exactly one of data.corpus, data.tfds_dataset and data.prepared"),
                (not self.data.prepared or bool(self.data.tokenizer), "data.tokenizer",
                 "data.prepared needs the tokenizer it was prepared with")]


def load_pretrain_config(name_or_file: str, overrides: typing.Sequence[str] = ()) -> PretrainConfig:
    """A recipe by name (one that ships with the package, `deberta_jax/recipes/pretrain/NAME.json`) or by path,
    with dotted `key=value` overrides applied."""
    path = name_or_file
    if not os.path.exists(path):
        path = recipes.recipe_path("pretrain", name_or_file.removesuffix(".json"))
    if not os.path.exists(path):
        raise ConfigError(f"no pretraining recipe {name_or_file!r} (a file, or one of the recipes that ship with "
                          f"deberta-jax: {recipes.recipe_names('pretrain')})")
    values = read_json(path)
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a recipe is a JSON object, got {type(values).__name__}")
    values = strip_comments(values)
    data = values.get("data")
    corpus = data.get("corpus") if isinstance(data, dict) else None
    if isinstance(corpus, list):  # a recipe's paths are relative to the recipe file (overrides' to the cwd)
        base_dir = os.path.dirname(os.path.abspath(path))
        data["corpus"] = [os.path.normpath(os.path.join(base_dir, p)) if isinstance(p, str) and not os.path.isabs(p)
                          else p for p in corpus]
    values = apply_overrides(PretrainConfig, values, overrides)
    try:
        return from_dict(PretrainConfig, values)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
