"""The end-to-end demo behind `make demo`: pretrain a tiny DeBERTa-v3 (RTD + GDES) on the bundled KJV corpus,
fine-tune it on a small real labelled dataset (VADER movie-review snippets, binary sentiment, SST-2 layout), and
report the validation accuracy, throughput and where everything was written (results/demo.json and demo.png).

    python experiments/demo/run_demo.py [--pretrain-steps 300] [--epochs 2] [--workdir /tmp/deberta-jax-demo]
    python experiments/demo/run_demo.py --plot-only   # redraw results/demo.png from the committed demo.json
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "data", "vader_movies"))
RESULTS = os.path.join(HERE, "results", "demo.json")
sys.path.insert(0, os.path.dirname(HERE))
from plotting import pyplot, redraw, save  # noqa: E402


def majority_accuracy() -> float:
    from deberta_jax.data.glue import get_task, load_split

    labels = [e.label for e in load_split(get_task("sst2"), DATA, "validation")]
    return max(labels.count(0), labels.count(1)) / len(labels)


def plot(result: dict, path: str) -> None:
    """Validation accuracy against the majority class; the pretraining loss and each evaluation where the JSON
    holds them (runs before 2026-11-24 recorded final numbers only, shown as text)."""
    plt = pyplot()
    curves = "pretrain_history" in result and "finetune_evaluations" in result
    fig, axes = plt.subplots(1, 3 if curves else 2, figsize=(14 if curves else 10, 4.2))
    majority = result["majority_class_accuracy"]
    values = [majority, result["finetune_validation_accuracy"]]
    ax = axes[0]
    ax.bar(["majority class", f"fine-tuned\n(best: step {result['finetune_best_step']})"], values,
           color=["grey", "tab:blue"])
    for x, v in enumerate(values):
        ax.text(x, v, f"{v:.3f}", ha="center", va="bottom")
    ax.set_ylim(0, 1)
    ax.set_ylabel("validation accuracy")
    ax.set_title("VADER movie reviews, dev split (binary sentiment)", fontsize=9)
    if curves:
        history, evals = result["pretrain_history"], result["finetune_evaluations"]
        axes[1].plot([r["step"] for r in history], [r["loss"] for r in history])
        axes[1].set(xlabel="step", ylabel="training loss", title="pretraining tiny_cpu (RTD + GDES)")
        axes[2].plot([e["step"] for e in evals], [e["validation"]["accuracy"] for e in evals], "o-",
                     label="fine-tuned")
        axes[2].axhline(majority, color="grey", ls=":", label="majority class")
        axes[2].set(xlabel="fine-tuning step", ylabel="validation accuracy", title="fine-tuning evaluations")
        axes[2].legend(fontsize=8)
    else:
        p = result["pretrain_final"]
        axes[1].axis("off")
        axes[1].text(0, 0.5, "\n".join([
            f"pretraining tiny_cpu (RTD + GDES): {result['pretrain_steps']} steps, "
            f"{result['pretrain_seconds'] / 60:.1f} min",
            f"  final loss {p['loss']:.2f}, generator MLM accuracy {p['mlm_accuracy']:.3f},",
            f"  RTD accuracy {p['rtd_accuracy']:.3f}, {p['tokens_per_second']:,.0f} tokens/s, MFU {p['mfu']:.0%}",
            f"fine-tuning: {result['finetune_steps']} steps, {result['finetune_steps_per_second']} steps/s, "
            f"{result['finetune_seconds'] / 60:.1f} min",
            "", "(this demo.json holds final numbers only, no curves)"]), va="center", fontsize=9)
    fig.suptitle(f"make demo ({result.get('date_utc', 'date not in the JSON')}, {result['machine']})", fontsize=10)
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--workdir", default="/tmp/deberta-jax-demo")
    parser.add_argument("--plot-only", action="store_true", help="redraw demo.png from the existing demo.json and exit")
    args = parser.parse_args()
    png = os.path.splitext(RESULTS)[0] + ".png"
    if args.plot_only:
        return redraw(plot, RESULTS, png)

    from deberta_jax.finetuning.train import FinetuneConfig, finetune
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import pretrain

    pre_dir, ft_dir = os.path.join(args.workdir, "pretrain"), os.path.join(args.workdir, "finetune")

    print(f"[1/2] pretraining tiny_cpu (RTD + GDES) for {args.pretrain_steps} steps -> {pre_dir}")
    t0 = time.perf_counter()
    cfg = load_pretrain_config("tiny_cpu", [f"steps={args.pretrain_steps}",
                                            f"checkpoint_every={args.pretrain_steps}"])
    resume = os.path.exists(os.path.join(pre_dir, "checkpoints"))
    pre = pretrain(cfg, pre_dir, resume=resume)
    pre_seconds = time.perf_counter() - t0

    print(f"[2/2] fine-tuning the discriminator on VADER movie reviews (sst2 layout) -> {ft_dir}")
    t0 = time.perf_counter()
    ft_cfg = FinetuneConfig(task="sst2", model=os.path.join(pre_dir, "export", "discriminator"), data=DATA,
                            max_length=64, batch_size=32, epochs=args.epochs, learning_rate=1e-4,
                            warmup_ratio=0.1, eval_every=0)
    ft = finetune(ft_cfg, ft_dir, resume=os.path.exists(os.path.join(ft_dir, "checkpoints")))
    ft_seconds = time.perf_counter() - t0

    result = {
        "machine": platform.machine(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "pretrain_steps": args.pretrain_steps,
        "pretrain_final": {k: pre["final"].get(k) for k in ("loss", "mlm_accuracy", "rtd_accuracy",
                                                            "tokens_per_second", "mfu")},
        "pretrain_seconds": round(pre_seconds, 1),
        "finetune_validation_accuracy": ft["best"]["metrics"]["validation"]["accuracy"],
        "finetune_best_step": ft["best"]["step"], "finetune_steps": ft["steps"],
        "finetune_steps_per_second": round(ft["steps_per_second"], 3), "finetune_seconds": round(ft_seconds, 1),
        "majority_class_accuracy": majority_accuracy(), "export": ft["export"],
        "pretrain_history": pre["history"], "finetune_evaluations": ft["evaluations"],
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    plot(result, png)
    print(json.dumps({k: v for k, v in result.items() if k not in ("pretrain_history", "finetune_evaluations")},
                     indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
