"""Model FLOPs of a train step, and the roofline bound on its time from the compiler's counts.

The model's FLOPs are the useful work, counted from the architecture (a multiply-add is 2 FLOPs). Per token, one
encoder's forward pass costs

    F_enc(n) = L · [ 2·(4·h·a + 2·h·f)            Q, K, V and output projections; the feed-forward pair
                     + 4·n·a                       content scores Q·Kᵀ and the context P·V over n keys
                     + 2·t·(2k)·a ]                c2p / p2c scores against the 2k relative-position rows (t terms)
               + 2·w·h²/g                          the v2 convolution branch (kernel w, groups g), when present

with L layers, h hidden, a = heads · head_dim, f the feed-forward width, n the sequence length, k the relative span
(position_buckets, or max_relative_positions). A train step costs 3 forward passes (the backward pass is twice the
forward), so for B rows of n tokens, T = B·n:

    RTD:             3 · [ T·(F_gen + F_disc) + B·M·(2·h_g² + 2·h_g·V) + T·(2·h² + 2·h) ]
    MLM (+EMD):      3 · [ T·(F_enc + e·F_layer) + B·M·(2·h² + 2·h·V) ]
    classification:  3 · [ T·F_enc + B·(2·h² + 2·h·c) ]

M prediction slots per row, V the vocabulary, e the EMD's extra passes of the last layer, c labels. This is
"6 · parameters · tokens" for the dense layers plus the attention term; it leaves out what does not scale with
tokens (projecting the 2k relative rows: under 1 % at n = 512), embedding look-ups and the optimizer, and counts
no recomputation (remat), which does cost the hardware time.

Roofline: a chip cannot finish a step faster than its FLOPs at peak, nor than its HBM traffic at full bandwidth:

    t_step ≥ max(flops_per_chip / peak, bytes_per_chip / hbm_bandwidth)
    roofline MFU = model_flops / (chips · peak · t_step)

Both counts per chip are the compiler's (`cost_analysis`), so both figures are estimates, not measurements.
"""

from __future__ import annotations

from deberta_jax.config import DebertaConfig


def layer_flops_per_token(cfg: DebertaConfig, seq_len: int) -> float:
    """Forward FLOPs per token of one encoder layer attending over `seq_len` keys."""
    h, a, f = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.intermediate_size
    relative = len(cfg.pos_att_type) * 2 * (2 * cfg.relative_span) * a if cfg.relative_attention else 0
    return 2 * (4 * h * a + 2 * h * f) + 4 * seq_len * a + relative


def encoder_flops_per_token(cfg: DebertaConfig, seq_len: int) -> float:
    """Forward FLOPs per token of the whole encoder, the v2 convolution branch included."""
    conv = 2 * cfg.conv_kernel_size * cfg.hidden_size ** 2 / cfg.conv_groups if cfg.conv_kernel_size > 0 else 0
    return cfg.num_hidden_layers * layer_flops_per_token(cfg, seq_len) + conv


def _mlm_head_flops(cfg: DebertaConfig) -> float:
    """Forward FLOPs of the MLM head at one predicted position: dense h -> h, then the vocabulary projection."""
    return 2 * cfg.hidden_size ** 2 + 2 * cfg.hidden_size * cfg.vocab_size


def rtd_step_flops(generator: DebertaConfig, discriminator: DebertaConfig, batch: int, seq_len: int,
                   predictions: int, generator_emd_steps: int = 0) -> float:
    """Model FLOPs of one RTD train step over `batch` rows of `seq_len` tokens, `predictions` slots per row, the
    generator's enhanced mask decoder (`generator_emd_steps` extra layer passes) included."""
    tokens = batch * seq_len
    h = discriminator.hidden_size
    generator_per_token = (encoder_flops_per_token(generator, seq_len)
                           + generator_emd_steps * layer_flops_per_token(generator, seq_len))
    forward = (tokens * (generator_per_token + encoder_flops_per_token(discriminator, seq_len))
               + batch * predictions * _mlm_head_flops(generator) + tokens * (2 * h * h + 2 * h))
    return 3 * forward


def mlm_step_flops(cfg: DebertaConfig, batch: int, seq_len: int, predictions: int, emd_steps: int) -> float:
    """Model FLOPs of one MLM train step, the enhanced mask decoder's `emd_steps` extra layer passes included."""
    tokens = batch * seq_len
    forward = (tokens * (encoder_flops_per_token(cfg, seq_len) + emd_steps * layer_flops_per_token(cfg, seq_len))
               + batch * predictions * _mlm_head_flops(cfg))
    return 3 * forward


def classification_step_flops(cfg: DebertaConfig, batch: int, seq_len: int) -> float:
    """Model FLOPs of one sequence-classification train step (pooler and classifier on the first token)."""
    h = cfg.hidden_size
    forward = batch * seq_len * encoder_flops_per_token(cfg, seq_len) + batch * (2 * h * h + 2 * h * cfg.num_labels)
    return 3 * forward


def roofline(model_flops: float, flops_per_chip: float, bytes_per_chip: float, chips: int, peak_flops: float,
             hbm_bandwidth: float) -> dict:
    """The roofline bound of one step: its time, which side bounds it, and the MFU the model's FLOPs would reach in
    that time. `flops_per_chip` and `bytes_per_chip` are the compiler's counts for one chip's program."""
    compute_s, memory_s = flops_per_chip / peak_flops, bytes_per_chip / hbm_bandwidth
    step_s = max(compute_s, memory_s)
    return {"compute_seconds": compute_s, "memory_seconds": memory_s, "step_seconds": step_s,
            "bound": "compute" if compute_s >= memory_s else "memory",
            "mfu": model_flops / (chips * peak_flops * step_s) if step_s > 0 else None}
