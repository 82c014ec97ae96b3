"""One closed-form model FLOP count per workload, credited identically to every implementation.

Notation: B batch, N sequence length, H hidden size (= heads x head_dim), I intermediate size, L layers,
R = 2 x relative span (relative-embedding rows; 512 for v3), M masked positions per row, V vocabulary,
E word-embedding width (= H unless embedding_size is set), P = number of position terms (c2p, p2c; 2 for v3).
A multiply-add is 2 FLOPs; only matmul work is counted (softmax, LayerNorm, GELU, dropout, gathers, the optimizer
update and embedding look-ups are not).

Per encoder layer, forward:
  Q, K, V and output projections            8 B N H^2
  feed-forward (two matmuls)                4 B N H I
  c2c scores Q K^T                          2 B N^2 H
  probabilities x V                         2 B N^2 H
  c2p and p2c scores (useful work)          P x 2 B N^2 H
  relative table through K / Q projections  P x 2 R H^2

The c2p / p2c terms are credited as the N x N score matrices they produce (one dot product per pair and head),
not as the [N, R] products against every relative row that the reference computes and then gathers from: that
extra work (and the skew variant's [N, 2N-1] products) is an implementation choice, not model work.

  backbone forward = L x layer                                        (workload "forward")
  MLM head at the M masked positions = 2 B M H E + 2 B M E V          (transform dense + tied decoder)
  train step = 3 x (backbone forward + MLM head)                      (workload "train"; backward = 2 x forward)

transformers' DebertaV2ForMaskedLM computes the decoder at all N positions; the extra (N - M) / M of head work is
not credited (the task needs logits at the masked positions only).
"""

from __future__ import annotations

from deberta_jax.config import DebertaConfig


def layer_flops(cfg: DebertaConfig, batch: int, seq_len: int) -> dict[str, float]:
    """FLOPs of one encoder layer's forward, by term."""
    b, n, h, i = batch, seq_len, cfg.hidden_size, cfg.intermediate_size
    terms = len(cfg.pos_att_type) if cfg.relative_attention else 0
    rows = 2 * cfg.relative_span if cfg.relative_attention else 0
    return {
        "qkvo_projections": 8.0 * b * n * h * h,
        "feed_forward": 4.0 * b * n * h * i,
        "c2c_scores": 2.0 * b * n * n * h,
        "probs_times_values": 2.0 * b * n * n * h,
        "relative_scores": terms * 2.0 * b * n * n * h,
        "relative_projections": terms * 2.0 * rows * h * h,
    }


def mlm_head_flops(cfg: DebertaConfig, batch: int, masked: int) -> dict[str, float]:
    e = cfg.embed_dim
    return {"mlm_transform": 2.0 * batch * masked * cfg.hidden_size * e,
            "mlm_decoder": 2.0 * batch * masked * e * cfg.vocab_size}


def model_flops(cfg: DebertaConfig, workload: str, batch: int, seq_len: int, masked: int = 0) -> dict:
    """{"total": FLOPs of one call of the workload, "breakdown": {...}, "formula": text}."""
    per_layer = layer_flops(cfg, batch, seq_len)
    breakdown = {k: v * cfg.num_hidden_layers for k, v in per_layer.items()}
    if workload == "forward":
        return {"total": sum(breakdown.values()), "breakdown": breakdown,
                "formula": "L*(8BNH^2 + 4BNHI + (4+2P)BN^2H + 2PRH^2)"}
    if workload == "train":
        breakdown.update(mlm_head_flops(cfg, batch, masked))
        forward = sum(breakdown.values())
        return {"total": 3.0 * forward, "breakdown": {k: 3.0 * v for k, v in breakdown.items()},
                "formula": "3*(L*(8BNH^2 + 4BNHI + (4+2P)BN^2H + 2PRH^2) + 2BMHE + 2BMEV)"}
    raise ValueError(f"unknown workload {workload!r}")
