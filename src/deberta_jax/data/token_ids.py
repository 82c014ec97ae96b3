"""Host-side checks that token ids fit the model's vocabulary, before anything reaches the device.

Inside jit, `model.apply` cannot raise: an id >= vocab_size embeds as NaN and turns its whole sequence's outputs
into NaN, and -1 silently embeds as the last row (a gather's semantics; see `deberta_jax.model.checked` for an
opt-in check on the device). So the drivers check once when they load a tokenizer and a model, and then every
batch, which costs a min and a max over its ids.
"""

from __future__ import annotations

import numpy as np


def check_vocabulary(tokenizer_size: int, tokenizer_path: str, vocab_size: int, model: str) -> None:
    """Raises ValueError when the tokenizer can produce ids the model has no embedding for.

    A tokenizer with fewer ids than the model is fine (microsoft's v3 checkpoints pad the table to 128100).
    """
    if tokenizer_size > vocab_size:
        raise ValueError(f"the tokenizer {tokenizer_path} has {tokenizer_size} ids but the model {model} has "
                         f"vocab_size={vocab_size}: ids {vocab_size}..{tokenizer_size - 1} have no embedding; use the "
                         "tokenizer the model was trained with")


def check_token_ids(input_ids: np.ndarray, vocab_size: int, where: str) -> None:
    """Raises ValueError naming `where` (a step or a split) and the id when `input_ids` (any shape) holds an id
    outside [0, vocab_size)."""
    if input_ids.size == 0:
        return
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= vocab_size:
        bad = low if low < 0 else high
        raise ValueError(f"{where}: token id {bad} is outside the vocabulary [0, {vocab_size})")
