"""DeBERTa configuration: one frozen dataclass for v1, v2 and v3, read from and written to HF `config.json`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

from deberta_jax.activations import ACTIVATIONS
from deberta_jax.config_tree import ConfigError, Section, read_json

V1 = "deberta"
V2 = "deberta-v2"
_MODEL_TYPES = (V1, V2)
_POS_ATT_TYPES = ("c2p", "p2c")
_NORM_REL_EBD = ("none", "layer_norm")
# float64 (under jax_enable_x64) is for checks against a float64 reference: attention and losses then run in it.
_DTYPES = ("float32", "bfloat16", "float16", "float64")
# "reference" gathers c2p/p2c with take_along_axis like transformers; "skew" is the same dense math without a
# gather; "chunked" (pure JAX) and "pallas" (kernel) never materialise the [B, H, N, N] scores. "auto" is
# "pallas" where the step is lowered for a TPU and "chunked" elsewhere (the pod recipes' choice).
ATTENTION_IMPLS = ("reference", "skew", "chunked", "pallas", "auto")
FUSED_ATTENTION_IMPLS = ("chunked", "pallas", "auto")
# The Pallas kernels' tiles and head_dim are powers of two from this size up (Triton's smallest dot).
PALLAS_MIN_TILE = 16


def is_pallas_tile_size(n: int) -> bool:
    return n >= PALLAS_MIN_TILE and n & (n - 1) == 0

# What the encoder layers keep for the backward pass (model/remat.py describes each).
REMAT_POLICIES = ("none", "full", "save_dots", "save_dots_except_attention", "save_qkv", "save_qkv_context")
# Fields that choose how the network is computed, not what it computes: never written to or read from HF files.
_JAX_ONLY_FIELDS = ("dtype", "param_dtype", "remat", "attention_impl", "attention_block_q", "attention_block_k",
                    "scan_layers", "vocab_pad_multiple")

# HF config keys that do not change the numbers of the network itself; accepted and dropped when reading.
_IGNORED_HF_KEYS = frozenset(
    {
        "architectures", "transformers_version", "torch_dtype", "dtype", "return_dict", "output_hidden_states",
        "output_attentions", "use_cache", "bos_token_id", "eos_token_id", "sep_token_id", "tie_word_embeddings",
        "problem_type", "chunk_size_feed_forward", "is_decoder", "is_encoder_decoder", "add_cross_attention",
        "tokenizer_class", "prefix", "finetuning_task", "task_specific_params", "torchscript", "pruned_heads",
        "tie_encoder_decoder", "cross_attention_hidden_size", "tf_legacy_loss", "use_bfloat16",
        "_name_or_path", "_attn_implementation_autoset", "_commit_hash", "gradient_checkpointing", "z_steps", "max_length", "min_length", "output_scores", "return_dict_in_generate",
    }
)


@dataclasses.dataclass(frozen=True)
class DebertaConfig(Section):
    """Every hyper-parameter that changes DeBERTa's numbers.

    Field names follow HF's `config.json` so that checkpoints convert without a key table. `model_type` picks the
    architecture: "deberta" is v1 (fused `in_proj`, no buckets), "deberta-v2" is v2 and v3.
    `dtype` is the compute dtype; `param_dtype` the storage dtype of the parameters.
    """

    model_type: str = V2
    vocab_size: int = 128100
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 0
    layer_norm_eps: float = 1e-7
    relative_attention: bool = False
    max_relative_positions: int = -1
    position_buckets: int = -1
    pos_att_type: tuple[str, ...] = ()
    share_att_key: bool = False
    norm_rel_ebd: str = "none"
    conv_kernel_size: int = 0
    conv_groups: int = 1
    conv_act: str = "tanh"
    embedding_size: int | None = None
    position_biased_input: bool = True
    pad_token_id: int = 0
    attention_head_size: int | None = None
    talking_head: bool = False
    pooler_hidden_size: int | None = None  # None means hidden_size
    pooler_dropout: float = 0.0
    pooler_hidden_act: str = "gelu"
    cls_dropout: float | None = None
    legacy: bool = True
    num_labels: int = 2
    initializer_range: float = 0.02
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"  # a REMAT_POLICIES name
    attention_impl: str = "reference"
    attention_block_q: int = 128
    attention_block_k: int = 128
    scan_layers: bool = False
    # Vocabulary-sized parameters (word table, MLM bias, RTD's embedding delta) get this many rows more than
    # vocab_size, rounded up to a multiple of it, so that tensor / fsdp mesh axes divide them (v3: 128100 -> 128128).
    # The padded ids are never predicted or sampled; HF files hold vocab_size rows. 1 pads nothing.
    vocab_pad_multiple: int = 128

    def __post_init__(self):
        if isinstance(self.pos_att_type, str):
            object.__setattr__(self, "pos_att_type", _parse_pos_att_type(self.pos_att_type))
        elif isinstance(self.pos_att_type, list):
            object.__setattr__(self, "pos_att_type", tuple(x.strip().lower() for x in self.pos_att_type))
        if self.pos_att_type is None:
            object.__setattr__(self, "pos_att_type", ())
        if self.pooler_hidden_size is None:
            object.__setattr__(self, "pooler_hidden_size", self.hidden_size)
        super().__post_init__()

    # ------------------------------------------------------------------ validation
    def checks(self):
        v1 = self.model_type == V1
        norm = [x.strip() for x in self.norm_rel_ebd.lower().split("|")]
        unknown_terms = [t for t in self.pos_att_type if t not in _POS_ATT_TYPES]
        conv = self.conv_kernel_size > 0
        return [
            (self.model_type in _MODEL_TYPES, "model_type", f"must be one of {_MODEL_TYPES}"),
            *[(getattr(self, name) >= 1, name, "must be a positive integer")
              for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings", "attention_block_q", "attention_block_k",
                           "vocab_pad_multiple")],
            (self.type_vocab_size >= 0, "type_vocab_size", "must be >= 0"),
            (self.attention_head_size is not None or self.num_attention_heads < 1
             or self.hidden_size % self.num_attention_heads == 0,
             "num_attention_heads", f"does not divide hidden_size={self.hidden_size}"),
            (self.attention_head_size is None or not v1, "attention_head_size",
             "is a v2/v3 option; v1 always uses hidden_size // num_attention_heads"),
            (self.attention_head_size is None or self.attention_head_size * self.num_attention_heads == self.hidden_size,
             "attention_head_size", f"times num_attention_heads must equal hidden_size={self.hidden_size}: the "
             "reference's output projection is hidden_size x hidden_size"),
            (not unknown_terms, "pos_att_type", f"unknown terms {unknown_terms}; allowed: {list(_POS_ATT_TYPES)}"),
            (len(set(self.pos_att_type)) == len(self.pos_att_type), "pos_att_type", "lists a term twice"),
            (not self.pos_att_type or self.relative_attention, "pos_att_type", "needs relative_attention=True"),
            *[(getattr(self, name) in ACTIVATIONS, name, f"unknown activation; known: {sorted(ACTIVATIONS)}")
              for name in ("hidden_act", "pooler_hidden_act", "conv_act")],
            (all(x in _NORM_REL_EBD for x in norm), "norm_rel_ebd", f"terms must be among {_NORM_REL_EBD}"),
            *[(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
              for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "pooler_dropout")],
            (self.cls_dropout is None or 0.0 <= self.cls_dropout < 1.0, "cls_dropout", "must be in [0, 1)"),
            (self.conv_kernel_size >= 0, "conv_kernel_size", "must be >= 0"),
            (not (conv and v1), "conv_kernel_size", "the conv layer exists only in v2/v3"),
            (not conv or self.conv_kernel_size % 2 == 1, "conv_kernel_size",
             "must be odd: the reference pads (k-1)//2 and would shorten the sequence"),
            (not conv or (self.conv_groups >= 1 and self.hidden_size % self.conv_groups == 0), "conv_groups",
             f"does not divide hidden_size={self.hidden_size}"),
            (not (v1 and self.position_buckets > 0), "position_buckets", "log buckets exist only in v2/v3"),
            (not (v1 and self.share_att_key), "share_att_key", "exists only in v2/v3"),
            (not (v1 and "layer_norm" in norm), "norm_rel_ebd", "exists only in v2/v3"),
            (v1 or not self.talking_head, "talking_head", "exists only in v1"),
            (self.embedding_size is None or self.embedding_size >= 1, "embedding_size", "must be a positive integer"),
            (self.pooler_hidden_size == self.hidden_size, "pooler_hidden_size",
             f"must equal hidden_size={self.hidden_size}: the classifier reads hidden_size"),
            (self.num_labels >= 1, "num_labels", "must be >= 1"),
            (0 <= self.pad_token_id < self.vocab_size, "pad_token_id",
             f"must be a token id below vocab_size={self.vocab_size}"),
            *[(getattr(self, name) in _DTYPES, name, f"must be one of {_DTYPES}") for name in ("dtype", "param_dtype")],
            (self.attention_impl in ATTENTION_IMPLS, "attention_impl", f"must be one of {ATTENTION_IMPLS}"),
            (self.remat in REMAT_POLICIES, "remat", f"must be one of {REMAT_POLICIES}"),
            (not (self.scan_layers and conv and self.num_hidden_layers < 2), "scan_layers",
             "with a conv branch layer_0 runs outside the scan, which then needs >= 2 layers"),
            *[(self.attention_impl not in ("pallas", "auto") or is_pallas_tile_size(size), name,
               f"must be a power of two >= {PALLAS_MIN_TILE} for attention_impl={self.attention_impl!r} (the Pallas "
               f"kernels' tiles); got {size}") for name, size in (("attention_block_q", self.attention_block_q),
                                                                  ("attention_block_k", self.attention_block_k))],
            (self.attention_impl not in ("pallas", "auto") or is_pallas_tile_size(self.head_dim), "attention_impl",
             f"{self.attention_impl!r} needs head_dim (hidden_size / num_attention_heads, or attention_head_size) a "
             f"power of two >= {PALLAS_MIN_TILE}; got {self.head_dim}: use 'chunked'"),
            (not (self.talking_head and self.attention_impl in FUSED_ATTENTION_IMPLS), "attention_impl",
             "fused attention cannot mix heads between softmax and value (talking_head=True); use 'reference' or "
             "'skew'"),
        ]

    # ------------------------------------------------------------------ derived values
    @property
    def is_v1(self) -> bool:
        return self.model_type == V1

    @property
    def head_dim(self) -> int:
        return self.attention_head_size or self.hidden_size // self.num_attention_heads

    @property
    def embed_dim(self) -> int:
        """Width of the word embedding table (`embedding_size`, defaulting to `hidden_size`)."""
        return self.embedding_size or self.hidden_size

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the vocabulary-sized parameters: `vocab_size` rounded up to a multiple of `vocab_pad_multiple`."""
        return -(-self.vocab_size // self.vocab_pad_multiple) * self.vocab_pad_multiple

    @property
    def max_relative(self) -> int:
        """`max_relative_positions`, where a value < 1 means `max_position_embeddings`."""
        return self.max_relative_positions if self.max_relative_positions >= 1 else self.max_position_embeddings

    @property
    def relative_span(self) -> int:
        """Half the number of relative-embedding rows that attention uses (k in the paper)."""
        if not self.is_v1 and self.position_buckets > 0:
            return self.position_buckets
        return self.max_relative

    @property
    def norm_rel_embeddings(self) -> bool:
        return "layer_norm" in [x.strip() for x in self.norm_rel_ebd.lower().split("|")]

    @property
    def compute_dtype(self):
        """`dtype` as a jnp dtype: what activations are computed in."""
        return jnp.dtype(self.dtype)

    @property
    def storage_dtype(self):
        """`param_dtype` as a jnp dtype: what parameters are stored in."""
        return jnp.dtype(self.param_dtype)

    def replace(self, **changes: Any) -> "DebertaConfig":
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown DebertaConfig fields {unknown}")
        if "hidden_size" in changes and "pooler_hidden_size" not in changes:
            changes["pooler_hidden_size"] = None  # follows the new width
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ HF config.json
    @classmethod
    def from_hf_dict(cls, data: dict[str, Any], **overrides: Any) -> "DebertaConfig":
        """Builds a config from an HF `config.json` dict; keys that change the numbers but are unknown fail."""
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        unknown = []
        for key, value in data.items():
            if key in fields and key not in _JAX_ONLY_FIELDS:
                kwargs[key] = value
            elif key in ("id2label", "label2id"):
                if key == "id2label" and "num_labels" not in data:
                    kwargs["num_labels"] = len(value)
            elif key not in _IGNORED_HF_KEYS:
                unknown.append(key)
        if unknown:
            raise ValueError(f"config.json has keys deberta-jax does not know: {sorted(unknown)}")
        if "model_type" not in kwargs:
            raise ValueError("config.json has no 'model_type' (expected 'deberta' or 'deberta-v2')")
        if kwargs.get("pos_att_type") is None:
            kwargs["pos_att_type"] = ()
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> "DebertaConfig":
        """From an HF `config.json`; a syntax error names the file, line and column (ConfigError)."""
        data = read_json(path)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a JSON object of config keys, got {type(data).__name__}")
        return cls.from_hf_dict(data, **overrides)

    def to_hf_dict(self, architecture: str | None = None) -> dict[str, Any]:
        """The HF `config.json` dict; `transformers.AutoConfig` reads it back with the same numbers."""
        data = dataclasses.asdict(self)
        for key in _JAX_ONLY_FIELDS:
            data.pop(key)
        data["pos_att_type"] = list(self.pos_att_type)
        if self.embedding_size is None:
            data.pop("embedding_size")
        for key in ("attention_head_size", "cls_dropout"):
            if data[key] is None:
                data.pop(key)
        num_labels = data.pop("num_labels")
        data["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        data["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
        if architecture:
            data["architectures"] = [architecture]
        return data

    def to_json_file(self, path: str | os.PathLike, architecture: str | None = None) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_hf_dict(architecture), f, indent=2, sort_keys=True)
            f.write("\n")


def _parse_pos_att_type(text: str) -> tuple[str, ...]:
    return tuple(x.strip().lower() for x in text.split("|") if x.strip() and x.strip().lower() != "none")


def _v3(**kw) -> DebertaConfig:
    base = dict(
        model_type=V2, vocab_size=128100, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=("p2c", "c2p"), position_biased_input=False, max_relative_positions=-1,
        type_vocab_size=0, layer_norm_eps=1e-7,
    )
    base.update(kw)
    return DebertaConfig(**base)


# Values from the released config.json files of the microsoft/* checkpoints.
PRESETS: dict[str, DebertaConfig] = {
    "deberta-base": DebertaConfig(
        model_type=V1, vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, relative_attention=True, max_relative_positions=-1, pos_att_type=("c2p", "p2c"),
        position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
    ),
    "deberta-large": DebertaConfig(
        model_type=V1, vocab_size=50265, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
        intermediate_size=4096, relative_attention=True, max_relative_positions=-1, pos_att_type=("c2p", "p2c"),
        position_biased_input=False, type_vocab_size=0, layer_norm_eps=1e-7,
    ),
    "deberta-v2-xlarge": DebertaConfig(
        model_type=V2, vocab_size=128100, hidden_size=1536, num_hidden_layers=24, num_attention_heads=24,
        intermediate_size=6144, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=("p2c", "c2p"), position_biased_input=False, conv_kernel_size=3,
        conv_act="gelu", max_relative_positions=-1, layer_norm_eps=1e-7,
    ),
    "deberta-v2-xxlarge": DebertaConfig(
        model_type=V2, vocab_size=128100, hidden_size=1536, num_hidden_layers=48, num_attention_heads=24,
        intermediate_size=6144, relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
        share_att_key=True, pos_att_type=("p2c", "c2p"), position_biased_input=False, conv_kernel_size=3,
        conv_act="gelu", max_relative_positions=-1, layer_norm_eps=1e-7,
    ),
    "deberta-v3-xsmall": _v3(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536),
    "deberta-v3-small": _v3(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
    "deberta-v3-base": _v3(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "deberta-v3-large": _v3(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}


def preset(name: str, **overrides: Any) -> DebertaConfig:
    """A named preset (e.g. "deberta-v3-base"), optionally with fields replaced."""
    key = name.removeprefix("microsoft/")
    if key not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[key].replace(**overrides)
