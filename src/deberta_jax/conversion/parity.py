"""Side-by-side check of a converted model against the PyTorch reference (needs torch and transformers).

Feeds the same padded batch to `transformers` and to deberta-jax and reports the max-abs difference per stage:
embeddings, every layer, the last hidden state and the head's logits.
"""

from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

from deberta_jax.conversion.hf_checkpoint import load_pretrained
from deberta_jax.conversion.hub import resolve_model

_AUTO = {
    None: "AutoModel",
    "masked_lm": "AutoModelForMaskedLM",
    "sequence_classification": "AutoModelForSequenceClassification",
    "token_classification": "AutoModelForTokenClassification",
    "question_answering": "AutoModelForQuestionAnswering",
}


def sample_batch(vocab_size: int, batch: int, seq_len: int, seed: int = 0):
    """Random ids with right padding: row b keeps seq_len * (1 - b / (2 * batch)) tokens."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(4, vocab_size, size=(batch, seq_len))
    mask = np.ones((batch, seq_len), np.int64)
    for b in range(batch):
        mask[b, seq_len - (seq_len * b) // (2 * batch):] = 0
    return np.where(mask == 1, ids, 0), mask


def compare_with_reference(hf_dir: str | os.PathLike, head: str | None = None, batch: int = 2,
                           seq_len: int = 128, seed: int = 0, revision: str | None = None) -> dict:
    """Max-abs differences per stage between transformers and deberta-jax on the checkpoint in `hf_dir` (a
    directory, or a Hub id at `revision`)."""
    import torch
    import transformers

    if head not in _AUTO:
        raise ValueError(f"parity supports heads {list(_AUTO)}; got {head!r}")
    local_dir = resolve_model(hf_dir, revision)  # both sides read the same files
    t0 = time.perf_counter()
    model, params = load_pretrained(local_dir, head)
    load_s = time.perf_counter() - t0
    reference = getattr(transformers, _AUTO[head]).from_pretrained(local_dir).eval()
    ids, mask = sample_batch(model.config.vocab_size, batch, seq_len, seed)
    with torch.no_grad():
        ref = reference(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                      output_hidden_states=True)
    ref_hidden = ref.hidden_states
    stages = {"embeddings": (out.hidden_states[0], ref_hidden[0])}
    for i in range(1, len(out.hidden_states)):
        stages[f"layer_{i - 1}"] = (out.hidden_states[i], ref_hidden[i])
    stages["last_hidden_state"] = (out.last_hidden_state, ref_hidden[-1])
    if head == "question_answering":
        stages["start_logits"] = (out.start_logits, ref.start_logits)
        stages["end_logits"] = (out.end_logits, ref.end_logits)
    elif head is not None:
        stages["logits"] = (out.logits, ref.logits)
    max_abs = {name: float(np.abs(np.asarray(a, np.float32) - b.numpy()).max()) for name, (a, b) in stages.items()}
    return {"checkpoint": os.fspath(hf_dir), "head": head, "batch": batch, "seq_len": seq_len,
            "load_seconds": round(load_s, 2), "max_abs": max_abs, "worst": max(max_abs.values())}
