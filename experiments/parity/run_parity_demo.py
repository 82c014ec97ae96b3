"""Main job of the core issue: make an HF-format DeBERTa-v3 checkpoint, convert it, report parity with PyTorch.

A randomly initialised `transformers.DebertaV2ForMaskedLM` of the deberta-v3-xsmall shape stands in for a
published checkpoint (hubs are unreachable here); its weights are perturbed so that no bias is zero and no
LayerNorm weight is one. The real conversion path runs end to end:
HF directory -> `deberta-jax convert` -> deberta-jax checkpoint -> `deberta-jax convert` -> HF directory, then
`deberta-jax parity` on the round-tripped directory. Writes results/parity_PRESET.json and .png.

    python experiments/parity/run_parity_demo.py [--preset deberta-v3-xsmall] [--workdir DIR]
    python experiments/parity/run_parity_demo.py --plot-only   # redraw the .png from the committed .json
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from plotting import pyplot, redraw, save  # noqa: E402

TOLERANCE = 1e-5  # max-abs bound of the test suite for fp32 outputs (tests/model_vs_reference_test.py)


def make_reference_checkpoint(name: str, path: str) -> None:
    import torch
    import transformers

    from deberta_jax.config import preset

    config = transformers.AutoConfig.for_model(**preset(name).to_hf_dict("DebertaV2ForMaskedLM"))
    torch.manual_seed(0)
    model = transformers.DebertaV2ForMaskedLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(path)


def plot(result: dict, path: str) -> None:
    """Max-abs difference to transformers per stage (embeddings, each layer, output, logits), log scale."""
    plt = pyplot()
    names, values = list(result["max_abs"]), list(result["max_abs"].values())
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.semilogy(range(len(names)), values, "o-", label="max |deberta-jax − transformers|")
    ax.axhline(TOLERANCE, color="tab:red", ls="--", label=f"{TOLERANCE:g} (test-suite tolerance)")
    ax.set_ylim(min(values) / 10, max(TOLERANCE, max(values)) * 10)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylabel("max-abs difference")
    ax.set_title(f"{result['preset']} {result['head']}, batch {result['batch']} × {result['seq_len']} tokens "
                 f"(padded), fp32, vs transformers {result.get('transformers', '?')}; worst {result['worst']:.1e}",
                 fontsize=9)
    ax.grid(True, which="both", axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="deberta-v3-xsmall")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--seq-len", type=int, default=512, help="512 reaches the log-bucketed offsets")
    parser.add_argument("--plot-only", action="store_true", help="redraw the .png from the existing .json and exit")
    args = parser.parse_args()
    out = os.path.join(HERE, "results", f"parity_{args.preset}.json")
    png = os.path.splitext(out)[0] + ".png"
    if args.plot_only:
        return redraw(plot, out, png)

    import torch
    import transformers

    from deberta_jax.cli import main as cli
    from deberta_jax.conversion.parity import compare_with_reference

    workdir = args.workdir or tempfile.mkdtemp(prefix="deberta-jax-demo-")
    hf_dir, jax_dir, back_dir = (os.path.join(workdir, d) for d in ("hf", "jax", "hf_roundtrip"))

    print(f"[1/4] making a random HF {args.preset} masked-LM checkpoint in {hf_dir}")
    make_reference_checkpoint(args.preset, hf_dir)
    print("[2/4] deberta-jax convert HF -> JAX")
    if cli(["convert", hf_dir, jax_dir, "--head", "masked_lm"]):
        sys.exit("convert HF -> JAX failed")  # the CLI printed why
    print("[3/4] deberta-jax convert JAX -> HF")
    if cli(["convert", jax_dir, back_dir]):
        sys.exit("convert JAX -> HF failed")
    print(f"[4/4] parity with transformers {transformers.__version__} (batch 2, seq {args.seq_len}, padded)")
    t0 = time.perf_counter()
    result = compare_with_reference(back_dir, "masked_lm", batch=2, seq_len=args.seq_len)
    for name, value in result["max_abs"].items():
        print(f"  {name:>18s}  max|jax - torch| = {value:.2e}")
    result.update(preset=args.preset, seconds=round(time.perf_counter() - t0, 1), machine=platform.machine(),
                  transformers=transformers.__version__, torch=torch.__version__,
                  date_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    plot(result, png)
    verdict = "PASS" if result["worst"] <= TOLERANCE else "FAIL"
    print(f"worst stage {result['worst']:.2e} (fp32): {verdict}; figures written to {out} and {png}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
