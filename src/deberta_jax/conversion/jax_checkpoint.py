"""deberta-jax's own checkpoint directory: orbax-saved params plus the HF config and the head name.

Layout: `DIR/config.json` (HF format), `DIR/deberta_jax.json` ({"head": ...}), `DIR/params/` (orbax). The params
hold `vocab_size` rows like HF files, so a checkpoint loads whatever `vocab_pad_multiple` either side uses.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from deberta_jax.config import DebertaConfig
from deberta_jax.config_tree import read_json
from deberta_jax.model.modeling import abstract_params, build_model, head_of, hf_architecture
from deberta_jax.model.vocab_padding import padded_params, unpadded_params

_META = "deberta_jax.json"


def save_checkpoint(path: str | os.PathLike, model, params) -> None:
    """Writes params with orbax (atomic: a crash leaves no half-written params directory)."""
    path = os.path.abspath(os.fspath(path))
    head = head_of(model)
    config: DebertaConfig = model.config
    if os.path.exists(os.path.join(path, "params")):
        raise FileExistsError(f"{path}/params exists; choose a new directory")
    os.makedirs(path, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(os.path.join(path, "params"), unpadded_params(model, params))
        checkpointer.wait_until_finished()
    architecture = None if (head == "multiple_choice" and config.is_v1) else hf_architecture(config, head)
    config.to_json_file(os.path.join(path, "config.json"), architecture)
    with open(os.path.join(path, _META), "w", encoding="utf-8") as f:
        json.dump({"head": head}, f)


def load_checkpoint(path: str | os.PathLike, **config_overrides):
    """Returns (model, params) from a directory written by `save_checkpoint`."""
    path = os.path.abspath(os.fspath(path))
    meta_file = os.path.join(path, _META)
    if not os.path.exists(meta_file):
        raise FileNotFoundError(f"{path} is not a deberta-jax checkpoint (no {_META})")
    head = read_json(meta_file)["head"]
    config = DebertaConfig.from_json_file(os.path.join(path, "config.json"), **config_overrides)
    model = build_model(config, head)
    target = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, config.storage_dtype),
                                    unpadded_params(model, abstract_params(model)))
    with ocp.StandardCheckpointer() as checkpointer:
        params = checkpointer.restore(os.path.join(path, "params"), target)
    return model, padded_params(model, params)
