"""MLM vs RTD with NES / ES / GDES on the tiny CPU recipe, equal steps, same data, tokenizer and seed.

    python experiments/pretrain/compare_objectives.py [--steps 400] [--workdir /tmp/compare] [--set key=value ...]
    python experiments/pretrain/compare_objectives.py --plot-only   # redraw results/NAME.png from the NAME.json

Writes results/NAME.json (every logged step of every run) and results/NAME.png.
Figures are training-batch metrics averaged over the last 20% of steps (no held-out split at this scale).
"""

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from plotting import pyplot, redraw, save  # noqa: E402

RUNS = {
    "MLM (+EMD)": ["objective=mlm"],
    "RTD + NES": ["objective=rtd", "sharing=nes"],
    "RTD + ES": ["objective=rtd", "sharing=es"],
    "RTD + GDES": ["objective=rtd", "sharing=gdes"],
}


def tail_mean(history, key, fraction=0.2):
    values = [row[key] for row in history if key in row]
    return float(np.mean(values[-max(1, int(len(values) * fraction)):])) if values else None


def plot(results, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, run in results["runs"].items():
        steps = [r["step"] for r in run["history"]]
        axes[0].plot(steps, [r["mlm_accuracy"] for r in run["history"]], label=name)
        if "rtd_accuracy" in run["history"][0]:
            axes[1].plot(steps, [r["rtd_accuracy"] for r in run["history"]], label=name)
            axes[2].plot(steps, [r["rtd_loss"] for r in run["history"]], label=name)
    axes[1].axhline(1 - results["replaced_fraction"], color="grey", ls=":", label="all 'original'")
    titles = ("(generator) MLM accuracy at masked positions", "discriminator RTD accuracy", "RTD loss")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--workdir", default="/tmp/deberta-jax-compare")
    parser.add_argument("--set", action="append", default=[], help="recipe override applied to every run")
    parser.add_argument("--name", default="compare_objectives", help="results file stem")
    parser.add_argument("--plot-only", action="store_true", help="redraw NAME.png from the existing NAME.json and exit")
    args = parser.parse_args()
    out = os.path.join(HERE, "results", f"{args.name}.json")
    if args.plot_only:
        return redraw(plot, out, os.path.splitext(out)[0] + ".png")

    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import load_tokenizer, pretrain

    common = [f"steps={args.steps}", "log_every=10", f"checkpoint_every={args.steps}"] + args.set
    tokenizer_dir = os.path.join(args.workdir, "shared")
    load_tokenizer(load_pretrain_config("tiny_cpu", common), tokenizer_dir)  # one tokenizer for every run
    common.append(f"tokenizer={os.path.join(tokenizer_dir, 'tokenizer')}")
    results = {"recipe": "tiny_cpu", "overrides": common, "steps": args.steps, "machine": platform.machine(),
               "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": "python experiments/pretrain/compare_objectives.py " + " ".join(
                   [f"--steps {args.steps}"] + [f"--set {o}" for o in args.set] + [f"--name {args.name}"]),
               "runs": {}}
    for name, overrides in RUNS.items():
        cfg = load_pretrain_config("tiny_cpu", common + overrides)
        workdir = os.path.join(args.workdir, name.split()[0].lower() + "_" + name.split()[-1].lower())
        summary = pretrain(cfg, workdir, resume=os.path.exists(os.path.join(workdir, "checkpoints")))
        history = summary["history"]
        results["runs"][name] = {
            "overrides": overrides, "history": history,
            "final_mlm_accuracy": tail_mean(history, "mlm_accuracy"),
            "final_rtd_accuracy": tail_mean(history, "rtd_accuracy"),
            "final_rtd_loss": tail_mean(history, "rtd_loss"),
            "tokens_per_second": tail_mean(history, "tokens_per_second"),
            "mfu": tail_mean(history, "mfu"),
        }
        print(json.dumps({k: v for k, v in results["runs"][name].items() if k != "history"}))
    rtd_runs = [r for r in results["runs"].values() if r["final_rtd_accuracy"] is not None]
    results["replaced_fraction"] = float(np.mean([tail_mean(r["history"], "replaced_fraction") for r in rtd_runs]))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.splitext(out)[0] + ".png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
