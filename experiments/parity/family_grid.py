"""Max-abs difference to transformers per config family, backbone and MLM head, fp32 and bf16.

Uses the same random reference models as the parity tests (tests/reference.py) at a longer length:

    python experiments/parity/family_grid.py   # writes experiments/parity/results/family_grid.json
"""

import json
import os
import sys

import jax.numpy as jnp
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
from reference import FAMILIES, jax_twin, padded_batch, random_hf_model, to_torch  # noqa: E402


def measure(family: str, seq: int) -> dict:
    hf_model = random_hf_model(family, "masked_lm")
    cfg = hf_model.config
    ids, mask, types = padded_batch(cfg.vocab_size, 4, seq, type_vocab=cfg.type_vocab_size)
    tids, tmask, ttypes = to_torch(ids, mask, types)
    with torch.no_grad():
        ref = hf_model(tids, attention_mask=tmask, token_type_ids=ttypes, output_hidden_states=True)
    row = {}
    for dtype in ("float32", "bfloat16"):
        model, params = jax_twin(hf_model, "masked_lm", dtype=dtype)
        out = model.apply({"params": params}, jnp.asarray(ids), attention_mask=jnp.asarray(mask),
                          token_type_ids=jnp.asarray(types))
        row[dtype] = {
            "last_hidden_state": float(np.abs(np.asarray(out.last_hidden_state, np.float32)
                                              - ref.hidden_states[-1].numpy()).max()),
            "mlm_logits": float(np.abs(np.asarray(out.logits, np.float32) - ref.logits.numpy()).max()),
        }
    return row


def main():
    results = {f"{family}@{seq}": measure(family, seq) for family in sorted(FAMILIES) for seq in (6, 100)}
    for name, row in results.items():
        print(f"{name:>28s}  fp32 hidden {row['float32']['last_hidden_state']:.1e} logits "
              f"{row['float32']['mlm_logits']:.1e}   bf16 hidden {row['bfloat16']['last_hidden_state']:.1e}")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "family_grid.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
