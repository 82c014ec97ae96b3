"""HF-format checkpoints (config.json + safetensors or pytorch_model.bin) in and out of deberta-jax params.

The params tree mirrors HF's module names, so one rule maps every key:
`('deberta', 'encoder', 'layer_3', 'attention', 'self', 'query_proj', 'kernel')` <->
`deberta.encoder.layer.3.attention.self.query_proj.weight` (transposed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re

import flax.linen as nn
import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from deberta_jax.config import DebertaConfig
from deberta_jax.config_tree import read_json
from deberta_jax.conversion import hub, safetensors_io
from deberta_jax.model.layer_stacking import stack_layers, unstack_layers
from deberta_jax.model.modeling import abstract_boxed_params, build_model, head_of, hf_architecture, init_params
from deberta_jax.model.vocab_padding import resize_axis, unpadded_params, vocab_axes

log = logging.getLogger(__name__)

BACKBONE_PREFIX = "deberta."
# Keys the reference writes or tolerates that carry no parameter of ours: tied copies of the word embeddings and
# the MLM bias, and the position-ids buffer of old checkpoints.
_TIED_OR_BUFFER = re.compile(r"^(cls\.predictions\.decoder\.(weight|bias)|(deberta\.)?embeddings\.position_ids)$")
_LAYER = re.compile(r"^layer_(\d+)$")


@dataclasses.dataclass
class LoadReport:
    """What loading found: HF keys we expected but the checkpoint lacks (freshly initialised), keys the checkpoint
    has but the model does not use, and keys re-initialised because their shapes differ (ignore_mismatched_sizes)."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]


# ---------------------------------------------------------------------------------------------- key mapping
def hf_key(path: tuple[str, ...]) -> str:
    """Flax param path -> HF state-dict key."""
    *modules, leaf = path
    modules = [f"layer.{m.group(1)}" if (m := _LAYER.match(p)) else p for p in modules]
    leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight"}.get(leaf, leaf)
    return ".".join(modules + [leaf])


def swap_layout(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """Flax <-> torch layout (each is the other's transpose): Linear [in, out] <-> [out, in], Conv1d
    [k, in/g, out] <-> [out, in/g, k]; other tensors are shared as they are."""
    if path[-1] == "kernel":
        return np.transpose(value, (2, 1, 0)) if value.ndim == 3 else value.T
    return value


def hf_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(reversed(shape)) if path[-1] == "kernel" else tuple(shape)


def params_to_state_dict(params, head: str | None) -> dict[str, np.ndarray]:
    """deberta-jax params (either layer layout) -> HF state dict (NumPy arrays in torch layout). Vocabulary-sized
    params are written as they are: cut them to `vocab_size` first (`unpadded_params`)."""
    params = unstack_layers(nn.meta.unbox(params))
    return {hf_key(path): np.asarray(swap_layout(path, np.asarray(jax.device_get(v))))
            for path, v in flatten_dict(params).items()}


def _normalise_prefix(state: dict[str, np.ndarray], head: str | None) -> dict[str, np.ndarray]:
    """Base-model checkpoints have bare `embeddings.*` keys, head checkpoints `deberta.embeddings.*`."""
    out = {}
    for key, value in state.items():
        if head is None and key.startswith(BACKBONE_PREFIX):
            key = key[len(BACKBONE_PREFIX):]
        elif head is not None and key.split(".", 1)[0] in ("embeddings", "encoder"):
            key = BACKBONE_PREFIX + key
        out[key] = value
    return out


def state_dict_to_params(state: dict[str, np.ndarray], model: nn.Module, *, ignore_mismatched_sizes: bool = False,
                         seed: int = 0):
    """HF state dict -> params for `model`, with a LoadReport.

    Missing keys are filled from a fresh init (as HF does for a new head). A shape mismatch raises, naming the key
    and both shapes, unless `ignore_mismatched_sizes` (then that tensor is re-initialised and reported). A model
    with `scan_layers` gets its layers stacked after the per-layer conversion. Vocabulary-sized tensors hold
    `vocab_size` rows in the checkpoint and get zero rows up to the model's `padded_vocab_size`.
    """
    config: DebertaConfig = model.config
    if config.scan_layers:
        params, report = state_dict_to_params(state, model.clone(config=config.replace(scan_layers=False)),
                                              ignore_mismatched_sizes=ignore_mismatched_sizes, seed=seed)
        return stack_layers(params), report
    head = head_of(model)
    state = _normalise_prefix(state, head)
    boxed = abstract_boxed_params(model)
    expected, padded = flatten_dict(nn.meta.unbox(boxed)), vocab_axes(boxed)
    flat, missing, mismatched, used = {}, [], [], set()
    for path, spec in expected.items():
        key = hf_key(path)
        if key not in state:
            missing.append(key)
            continue
        used.add(key)
        value = np.asarray(state[key])
        shape = list(spec.shape)
        if path in padded:
            shape[padded[path]] = config.vocab_size
        expected_shape = hf_shape(path, tuple(shape))
        if tuple(value.shape) != expected_shape:
            if ignore_mismatched_sizes:
                mismatched.append(key)
                continue
            raise ValueError(f"checkpoint key {key!r} has shape {tuple(value.shape)}, but the model "
                             f"(param {'/'.join(path)}) expects {expected_shape}")
        value = swap_layout(path, value).astype(config.storage_dtype)
        flat[path] = resize_axis(value, padded[path], spec.shape[padded[path]]) if path in padded else value
    unexpected = sorted(k for k in state if k not in used and not _TIED_OR_BUFFER.match(k))
    if missing or mismatched:
        fresh = flatten_dict(init_params(model, jax.random.PRNGKey(seed)))
        for path in expected:
            if path not in flat:
                flat[path] = np.asarray(fresh[path])
    report = LoadReport(missing=sorted(missing), unexpected=unexpected, mismatched=sorted(mismatched))
    if report.missing:
        log.warning("newly initialised (not in the checkpoint): %s", ", ".join(report.missing))
    if report.mismatched:
        log.warning("re-initialised (shape differs from the checkpoint): %s", ", ".join(report.mismatched))
    if report.unexpected:
        log.info("unused checkpoint keys: %s", ", ".join(report.unexpected))
    return unflatten_dict(flat), report


# ---------------------------------------------------------------------------------------------- files
def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensors of an HF directory: model.safetensors, a sharded safetensors index, or pytorch_model.bin."""
    path = os.fspath(path)
    single = os.path.join(path, "model.safetensors")
    index = os.path.join(path, "model.safetensors.index.json")
    pt_bin = os.path.join(path, "pytorch_model.bin")
    if os.path.exists(single):
        return safetensors_io.load_file(single)
    if os.path.exists(index):
        shards = sorted(set(read_json(index)["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(safetensors_io.load_file(os.path.join(path, shard)))
        return state
    if os.path.exists(pt_bin):
        try:
            import torch
        except ImportError as e:  # torch is only needed for this legacy format
            raise ImportError(f"{pt_bin} is a PyTorch pickle; reading it needs torch installed "
                              "(safetensors checkpoints do not)") from e
        state = torch.load(pt_bin, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy() for k, v in state.items()}
    raise FileNotFoundError(f"{path} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_pretrained(path: str | os.PathLike, head: str | None = None, *, ignore_mismatched_sizes: bool = False,
                    return_report: bool = False, revision: str | None = None, **config_overrides):
    """Loads an HF-format DeBERTa directory or Hub model.

    Args:
      path: directory with config.json and model.safetensors (or pytorch_model.bin), or a Hub id (`owner/name`,
        when no such local path exists; only those files are downloaded, see conversion/hub.py).
      head: None (backbone), "masked_lm", "sequence_classification", "token_classification",
        "question_answering" or "multiple_choice".
      revision: of a Hub id: a branch, tag or commit (default: main).
      **config_overrides: DebertaConfig fields to replace, e.g. num_labels=3, dtype="bfloat16".
    Returns:
      (model, params), or (model, params, LoadReport) with return_report=True.
    """
    path = hub.resolve_model(path, revision)
    config = DebertaConfig.from_json_file(os.path.join(path, "config.json"), **config_overrides)
    model = build_model(config, head)
    params, report = state_dict_to_params(read_state_dict(path), model,
                                          ignore_mismatched_sizes=ignore_mismatched_sizes)
    return (model, params, report) if return_report else (model, params)


def save_pretrained(path: str | os.PathLike, model: nn.Module, params) -> None:
    """Writes config.json and model.safetensors that `transformers.AutoModel*.from_pretrained` loads."""
    head = head_of(model)
    config: DebertaConfig = model.config
    architecture = hf_architecture(config, head)
    os.makedirs(path, exist_ok=True)
    state = params_to_state_dict(unpadded_params(model, params), head)
    safetensors_io.save_file(state, os.path.join(path, "model.safetensors"))
    config.to_json_file(os.path.join(path, "config.json"), architecture)
