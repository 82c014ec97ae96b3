"""Max-abs difference to transformers per config family, backbone and MLM head, fp32 and bf16.

Uses the same random reference models as the parity tests (tests/reference.py) at a longer length:

    python experiments/parity/family_grid.py               # writes results/family_grid.json and .png
    python experiments/parity/family_grid.py --plot-only   # redraws the .png from the committed .json
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
from plotting import pyplot, redraw, save  # noqa: E402

RESULTS = os.path.join(HERE, "results", "family_grid.json")
# the test suite's bounds per compute dtype (tests/model_vs_reference_test.py)
BOUNDS = {"float32": (1e-5, "fp32 test bound 1e-5"),
          "bfloat16": (0.1, "bf16 test bound 0.1 (there: vs fp32 deberta-jax)")}


def measure(family: str, seq: int) -> dict:
    import jax.numpy as jnp
    import numpy as np
    import torch
    from reference import jax_twin, padded_batch, random_hf_model, to_torch

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


def plot(results: dict, path: str) -> None:
    """Per family: max-abs of the last hidden state and the MLM logits, fp32 and bf16, both lengths, log scale."""
    plt = pyplot()
    families = sorted({key.split("@")[0] for key in results})
    seqs = sorted({int(key.split("@")[1]) for key in results})
    series = [(d, q) for d in BOUNDS for q in ("last_hidden_state", "mlm_logits")]
    colors = {("float32", "last_hidden_state"): "tab:blue", ("float32", "mlm_logits"): "tab:cyan",
              ("bfloat16", "last_hidden_state"): "tab:orange", ("bfloat16", "mlm_logits"): "tab:brown"}
    markers = "o^sv"
    fig, ax = plt.subplots(figsize=(10, 5.5))
    width = 0.7 / (len(series) * len(seqs))
    for i, (dtype, quantity) in enumerate(series):
        for j, seq in enumerate(seqs):
            offset = (i * len(seqs) + j + 0.5) * width - 0.35
            xs = [x + offset for x, f in enumerate(families) if f"{f}@{seq}" in results]
            ys = [results[f"{f}@{seq}"][dtype][quantity] for f in families if f"{f}@{seq}" in results]
            ax.semilogy(xs, ys, ls="none", marker=markers[j % len(markers)], color=colors[dtype, quantity],
                        label=f"{dtype} {quantity}, N={seq}")
    for dtype, (bound, label) in BOUNDS.items():
        ax.axhline(bound, color="tab:red", ls="--" if dtype == "float32" else ":", lw=1)
        ax.text(len(families) - 0.5, bound, label, va="bottom", ha="right", fontsize=8, color="tab:red")
    ax.set_xticks(range(len(families)), families, rotation=30, ha="right")
    ax.set_xlim(-0.5, len(families) - 0.5)
    ax.set_ylabel("max |deberta-jax − transformers fp32|")
    ax.set_title("random tiny models of each config family (tests/reference.py), batch 4 padded, MLM head", fontsize=9)
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.3))
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot-only", action="store_true", help="redraw the .png from the existing .json and exit")
    args = parser.parse_args()
    png = os.path.splitext(RESULTS)[0] + ".png"
    if args.plot_only:
        return redraw(plot, RESULTS, png)

    from reference import FAMILIES

    results = {f"{family}@{seq}": measure(family, seq) for family in sorted(FAMILIES) for seq in (6, 100)}
    for name, row in results.items():
        print(f"{name:>28s}  fp32 hidden {row['float32']['last_hidden_state']:.1e} logits "
              f"{row['float32']['mlm_logits']:.1e}   bf16 hidden {row['bfloat16']['last_hidden_state']:.1e}")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    plot(results, png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
