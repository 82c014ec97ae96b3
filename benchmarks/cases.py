"""Benchmark cases: the model config, the shapes, the inputs and the shared random weights of one measurement.

A `Case` is plain data (it travels to the memory-probe child process as JSON); `make_inputs` derives every input
from the case's seed, so every implementation, in any process, sees the same token ids and masked positions.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from deberta_jax.config import DebertaConfig, preset

# A 2-layer DeBERTa-v3 of width 32 for smoke tests: every v3 switch on, compiles in about a second.
TINY_OVERRIDES = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=64, position_buckets=8)


def resolve_model(name: str) -> DebertaConfig:
    """'tiny', a preset name, or a path to an HF config.json."""
    if name == "tiny":
        return preset("deberta-v3-xsmall", **TINY_OVERRIDES)
    if os.path.exists(name):
        return DebertaConfig.from_json_file(name)
    return preset(name)


def config_to_dict(cfg: DebertaConfig) -> dict:
    data = dataclasses.asdict(cfg)
    data["pos_att_type"] = list(cfg.pos_att_type)
    return data


def config_from_dict(data: dict) -> DebertaConfig:
    return DebertaConfig(**data)


def num_masked(seq_len: int, fraction: float) -> int:
    """M, masked positions per row: round(fraction * N), at least 1."""
    return max(1, min(seq_len, int(round(fraction * seq_len))))


@dataclasses.dataclass
class Case:
    """One (model, workload, shape, dtype) measurement. `config` is the model's DebertaConfig as a dict, with
    attention_impl / scan_layers / dtype left at the values each implementation replaces."""

    model: str
    config: dict
    workload: str
    batch: int
    seq_len: int
    masked: int
    dtype: str
    seed: int

    @property
    def cfg(self) -> DebertaConfig:
        return config_from_dict(self.config)

    @property
    def key(self) -> str:
        return f"{self.model}/{self.workload}/B{self.batch}/N{self.seq_len}/{self.dtype}"


MASK_TOKEN_ID = 3  # any id works for timing; [MASK] of the released v3 vocabularies is 128000


def make_inputs(case: Case) -> dict[str, np.ndarray]:
    """Token ids (no padding: every implementation treats padded query rows differently), masked positions
    (M distinct, sorted, per row), their labels, and the transformers-style labels [B, N] (-100 elsewhere)."""
    rng = np.random.default_rng(case.seed + 1000 * case.seq_len + case.batch)
    vocab = case.config["vocab_size"]
    b, n, m = case.batch, case.seq_len, case.masked
    original = rng.integers(5, vocab, size=(b, n)).astype(np.int32)
    positions = np.sort(np.stack([rng.choice(n, size=m, replace=False) for _ in range(b)]), axis=1).astype(np.int32)
    rows = np.arange(b)[:, None]
    labels = original[rows, positions]
    ids = original.copy()
    ids[rows, positions] = MASK_TOKEN_ID % vocab
    hf_labels = np.full((b, n), -100, np.int64)
    hf_labels[rows, positions] = labels
    return {
        "input_ids": ids,
        "attention_mask": np.ones((b, n), np.int32),
        "masked_positions": positions,
        "masked_labels": labels.astype(np.int32),
        "masked_weights": np.ones((b, m), np.float32),
        "hf_labels": hf_labels,
    }


def hf_config(cfg: DebertaConfig):
    """The transformers DebertaV2Config (or DebertaConfig for v1) with the same numbers, via our to_hf_dict."""
    import transformers

    data = cfg.to_hf_dict()
    data.pop("model_type", None)
    cls = transformers.DebertaConfig if cfg.is_v1 else transformers.DebertaV2Config
    return cls(**data)


def random_hf_state(cfg: DebertaConfig, seed: int) -> dict[str, np.ndarray]:
    """Weights of transformers' `...ForMaskedLM` (its own init, plus N(0, 0.02) noise on every tensor so that a
    mis-mapped bias or LayerNorm cannot hide behind a zero or a one), as NumPy arrays in torch layout."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cls = transformers.DebertaForMaskedLM if cfg.is_v1 else transformers.DebertaV2ForMaskedLM
    model = cls(hf_config(cfg))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def backbone_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The `deberta.*` keys of an MLM state dict, prefix removed (what a bare DebertaV2Model loads)."""
    return {k[len("deberta."):]: v for k, v in state.items() if k.startswith("deberta.")}
