"""N-gram span masking for masked language modelling (MLM) and replaced token detection (RTD), in NumPy.

Per row, about `mask_prob` of the maskable tokens (attended, not special) are selected as non-overlapping spans of
1..max_ngram consecutive maskable tokens, span lengths drawn with p(n) proportional to 1/n (microsoft/DeBERTa's
NGramMaskGenerator). MLM then corrupts a selected token to [MASK], a random token or itself (80/10/10 by default);
RTD masks them all and lets the generator fill them in. Everything is drawn from the given np.random.Generator,
with draw sizes that depend only on the array shapes, so a seeded generator gives the same masks every time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Collection

import numpy as np

from deberta_jax.config_tree import Section


@dataclasses.dataclass(frozen=True)
class MaskingConfig(Section):
    """Selection rate, span lengths and how MLM corrupts selected tokens (the rest of the mass keeps them as is).

    max_predictions: prediction slots per row (M); None gives ceil(mask_prob * seq_len) + max_ngram.
    """

    mask_prob: float = 0.15
    max_ngram: int = 3
    mask_token_prob: float = 0.8
    random_token_prob: float = 0.1
    max_predictions: int | None = None

    def checks(self):
        return [
            (0 < self.mask_prob <= 1, "mask_prob", "must be in (0, 1]"),
            (isinstance(self.max_ngram, int) and self.max_ngram >= 1, "max_ngram", "must be an integer >= 1"),
            (0 <= self.mask_token_prob <= 1, "mask_token_prob", "must be in [0, 1]"),
            (0 <= self.random_token_prob <= 1, "random_token_prob", "must be in [0, 1]"),
            (self.mask_token_prob + self.random_token_prob <= 1, "random_token_prob",
             f"mask_token_prob + random_token_prob = {self.mask_token_prob + self.random_token_prob} exceeds 1"),
            (self.max_predictions is None or (isinstance(self.max_predictions, int) and self.max_predictions >= 1),
             "max_predictions", "must be None or an integer >= 1"),
        ]

    def num_predictions(self, seq_len: int) -> int:
        """M, the static number of prediction slots per row of `seq_len` tokens."""
        if self.max_predictions is not None:
            return self.max_predictions
        return math.ceil(self.mask_prob * seq_len) + self.max_ngram


def selection_targets(maskable: np.ndarray, config: MaskingConfig) -> np.ndarray:
    """Tokens to select per row [B] int64: max(1, round(mask_prob * n_maskable)) capped at M; 0 for no maskable.

    Args:
      maskable: [B, N] bool.
    """
    n_maskable = maskable.sum(axis=1)
    targets = np.maximum(1, np.rint(config.mask_prob * n_maskable)).astype(np.int64)  # half to even, as Python round()
    targets = np.minimum(targets, config.num_predictions(maskable.shape[1]))
    return np.where(n_maskable > 0, targets, 0)


def select_spans(maskable: np.ndarray, targets: np.ndarray, rng: np.random.Generator, max_ngram: int) -> np.ndarray:
    """Selected positions [B, N] bool: exactly targets[b] maskable positions of row b, as n-gram spans.

    Repeatedly, a start is drawn uniformly among the maskable positions not yet selected and a length n from
    p(n) ~ 1/n; the span covers start, start+1, ... up to n positions, stopping early at a position that is not
    maskable or already selected, or once the row's target is met.

    Args:
      maskable: [B, N] bool.
      targets: [B] int, each at most the row's maskable count.
    """
    batch, seq_len = maskable.shape
    # Visiting the maskable positions in a random order and skipping those already selected draws each start
    # uniformly among the unselected ones: the unvisited positions are in uniform random order, and every
    # unselected position is unvisited.
    keys = np.where(maskable, rng.random((batch, seq_len)), 2.0)
    visit_order = np.argsort(keys, axis=1, kind="stable")
    # Every span selects at least its start, so a row never needs more than seq_len lengths.
    probs = 1.0 / np.arange(1, max_ngram + 1)
    lengths = rng.choice(np.arange(1, max_ngram + 1), size=(batch, seq_len), p=probs / probs.sum())
    selected = np.zeros((batch, seq_len), bool)
    for row in range(batch):
        target = int(targets[row])
        if target == 0:
            continue
        row_maskable, row_lengths = maskable[row].tolist(), lengths[row].tolist()
        chosen = [False] * seq_len
        count, span = 0, 0
        for start in visit_order[row].tolist():
            if chosen[start]:
                continue
            end = min(start + row_lengths[span], seq_len)
            span += 1
            position = start
            while position < end and row_maskable[position] and not chosen[position] and count < target:
                chosen[position] = True
                count += 1
                position += 1
            if count == target:
                break
        selected[row] = chosen
    return selected


def mask_batch(input_ids: np.ndarray, attention_mask: np.ndarray, rng: np.random.Generator, config: MaskingConfig,
               *, special_ids: Collection[int], mask_id: int, vocab_size: int, mode: str = "mlm") -> dict:
    """Selects n-gram spans to predict and corrupts them for MLM or RTD.

    Args:
      input_ids: [B, N] int, the original tokens.
      attention_mask: [B, N], 1 for real tokens.
      special_ids: ids never selected nor drawn as random replacements ([CLS], [SEP], [PAD], ...); [MASK] is
        treated as special too.
      mask_id, vocab_size: the [MASK] id and the number of ids; random replacements are uniform over
        range(vocab_size) minus special_ids and mask_id.
      mode: "mlm" (mask_token_prob -> [MASK], random_token_prob -> random id, rest kept) or "rtd" (all -> [MASK]).
    Returns:
      dict with, for M = config.num_predictions(N):
        input_ids [B, N] int32: the corrupted inputs.
        masked_positions [B, M] int32: selected positions ascending, then padding slots (position 0).
        masked_labels [B, M] int32: the original ids there (0 in padding slots).
        masked_weights [B, M] float32: 1 for a selected position, 0 for a padding slot.
        selected [B, N] bool: the positions to predict.
        unchanged [B, N] bool: selected positions whose input still holds the original id (mlm); all False (rtd).
    """
    input_ids = np.asarray(input_ids)
    attention_mask = np.asarray(attention_mask)
    if input_ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, seq], got shape {input_ids.shape}")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask shape {attention_mask.shape} differs from input_ids shape {input_ids.shape}")
    if mode not in ("mlm", "rtd"):
        raise ValueError(f"mode={mode!r}: must be 'mlm' or 'rtd'")
    if not 0 <= mask_id < vocab_size:
        raise ValueError(f"mask_id={mask_id}: must be in [0, vocab_size={vocab_size})")
    excluded = np.asarray(sorted({int(i) for i in special_ids} | {int(mask_id)}), np.int64)
    batch, seq_len = input_ids.shape
    n_slots = config.num_predictions(seq_len)

    maskable = (attention_mask == 1) & ~np.isin(input_ids, excluded)
    selected = select_spans(maskable, selection_targets(maskable, config), rng, config.max_ngram)

    original = input_ids.astype(np.int32)
    if mode == "rtd":
        corrupted = np.where(selected, np.int32(mask_id), original)
        unchanged = np.zeros_like(selected)
    else:
        replacements = np.setdiff1d(np.arange(vocab_size), excluded).astype(np.int32)
        if len(replacements) == 0:
            raise ValueError(f"vocab_size={vocab_size} leaves no non-special id to draw random replacements from")
        action = rng.random((batch, seq_len))
        random_ids = replacements[rng.integers(len(replacements), size=(batch, seq_len))]
        corrupted = np.where(selected & (action < config.mask_token_prob), np.int32(mask_id), original)
        use_random = selected & (action >= config.mask_token_prob) & (
            action < config.mask_token_prob + config.random_token_prob)
        corrupted = np.where(use_random, random_ids, corrupted)
        unchanged = selected & (corrupted == original)

    # A stable sort of ~selected lists each row's selected positions first, in ascending order.
    order = np.argsort(~selected, axis=1, kind="stable")[:, :n_slots]
    if order.shape[1] < n_slots:
        order = np.pad(order, ((0, 0), (0, n_slots - order.shape[1])))
    weights = np.arange(n_slots) < selected.sum(axis=1, keepdims=True)
    positions = np.where(weights, order, 0).astype(np.int32)
    labels = np.where(weights, np.take_along_axis(original, positions, axis=1), 0).astype(np.int32)
    return {"input_ids": corrupted, "masked_positions": positions, "masked_labels": labels,
            "masked_weights": weights.astype(np.float32), "selected": selected, "unchanged": unchanged}
