"""MLM (+EMD) vs RTD with NES / ES / GDES on the tiny CPU recipe, judged downstream.

Every objective pretrains the same tiny model for the same number of steps on the same corpus (the demo's: KJV plus
the demo task's unlabeled train sentences) with one shared tokenizer, once per pretraining seed. Each export (the
MLM model, or the RTD discriminator) is then fine-tuned on the demo task (VADER movie reviews, binary sentiment)
with `finetune --recipe tiny-cpu` and the same seed. Beside them: the same model after 1 step (from scratch),
the majority class and TF-IDF + logistic regression.

    python experiments/pretrain/compare_objectives.py [--steps 600] [--seeds 3] [--workdir /tmp/compare]
    python experiments/pretrain/compare_objectives.py --plot-only   # redraw results/NAME.png from the NAME.json

Writes results/NAME.json (every logged pretraining step and every evaluation of every run) and results/NAME.png.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from downstream import finetune_export, majority_accuracy, seed_summary, tfidf_accuracy, write_task_corpus  # noqa: E402
from plotting import pyplot, redraw, save  # noqa: E402

RUNS = {  # name -> (recipe overrides, the export that is fine-tuned)
    "MLM (+EMD)": (["objective=mlm"], "mlm"),
    "RTD + NES": (["objective=rtd", "sharing=nes"], "discriminator"),
    "RTD + ES": (["objective=rtd", "sharing=es"], "discriminator"),
    "RTD + GDES": (["objective=rtd", "sharing=gdes"], "discriminator"),
}


def tail_mean(history, key, fraction=0.2):
    values = [row[key] for row in history if key in row]
    return float(np.mean(values[-max(1, int(len(values) * fraction)):])) if values else None


def plot(results, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    names = list(results["runs"])
    colors = dict(zip(names, ["tab:purple", "tab:red", "tab:orange", "tab:blue"]))
    for name, run in results["runs"].items():
        history = run["seeds"][0]["history"]
        steps = [r["step"] for r in history]
        axes[0].plot(steps, [r["mlm_accuracy"] for r in history], label=name, color=colors[name])
        if "rtd_accuracy" in history[0]:
            axes[1].plot(steps, [r["rtd_accuracy"] - (1 - r["replaced_fraction"]) for r in history], label=name,
                         color=colors[name])
    axes[1].axhline(0, color="grey", ls=":", label="all 'original' (trivial)")
    axes[0].set(xlabel="pretraining step", ylabel="accuracy", title="MLM accuracy at masked positions (seed 0)")
    axes[1].set(xlabel="pretraining step", ylabel="accuracy − trivial accuracy",
                title="discriminator above calling all tokens original (seed 0)")
    for ax in axes[:2]:
        ax.legend(fontsize=8)
    ax = axes[2]
    bars = [("majority", results["baselines"]["majority_class"], None, "grey"),
            ("TF-IDF+LR", results["baselines"]["tfidf_logreg"]["word_1_2gram"], None, "tab:green"),
            ("scratch", results["from_scratch"]["median_best_accuracy"],
             results["from_scratch"]["best_accuracies"], "tab:gray")]
    bars += [(name.replace(" (+EMD)", "+EMD").replace("RTD + ", "RTD-"), run["downstream"]["median_best_accuracy"],
              run["downstream"]["best_accuracies"], colors[name]) for name, run in results["runs"].items()]
    for x, (name, value, seeds, color) in enumerate(bars):
        ax.bar(x, value, color=color, alpha=0.75)
        ax.text(x, value + 0.005, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
        if seeds:
            ax.plot([x] * len(seeds), seeds, "k.", ms=5)
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.set(ylim=(0.45, 0.85), ylabel="dev accuracy (median; dots: seeds)",
           title="downstream: VADER movie reviews after tiny-cpu fine-tuning")
    fig.suptitle(f"{results['steps']} pretraining steps per run, {len(results['seeds'])} seeds "
                 f"({results['date_utc']}, {results['machine']})", fontsize=10)
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3, help="pretraining seeds (each fine-tuned with its seed)")
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

    corpus = list(load_pretrain_config("tiny_cpu").corpus) + [
        write_task_corpus(os.path.join(args.workdir, "corpus", "task_train.txt"))]
    common = [f"steps={args.steps}", "log_every=20", f"checkpoint_every={args.steps}",
              "corpus=" + json.dumps(corpus)] + args.set
    tokenizer_dir = os.path.join(args.workdir, "shared")
    load_tokenizer(load_pretrain_config("tiny_cpu", common), tokenizer_dir)  # one tokenizer for every run
    common.append(f"tokenizer={os.path.join(tokenizer_dir, 'tokenizer')}")
    seeds = list(range(args.seeds))
    results = {"recipe": "tiny_cpu", "overrides": common, "steps": args.steps, "seeds": seeds,
               "machine": platform.machine(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": "python experiments/pretrain/compare_objectives.py " + " ".join(
                   [f"--steps {args.steps}", f"--seeds {args.seeds}"] + [f"--set {o}" for o in args.set]
                   + [f"--name {args.name}"]),
               "baselines": {"majority_class": majority_accuracy(), "tfidf_logreg": tfidf_accuracy()},
               "runs": {}}

    scratch = []
    for seed in seeds:
        workdir = os.path.join(args.workdir, f"scratch_seed{seed}")
        pretrain(load_pretrain_config("tiny_cpu", common + ["steps=1", f"seed={seed}"]), workdir,
                 resume=os.path.exists(os.path.join(workdir, "checkpoints")), progress=False)
        scratch.append(finetune_export(os.path.join(workdir, "export", "discriminator"),
                                       os.path.join(workdir, "finetune"), seed))
    results["from_scratch"] = seed_summary(scratch)
    print(json.dumps({"from scratch": results["from_scratch"]["best_accuracies"]}), flush=True)

    for name, (overrides, export) in RUNS.items():
        per_seed, downstream = [], []
        for seed in seeds:
            cfg = load_pretrain_config("tiny_cpu", common + overrides + [f"seed={seed}"])
            workdir = os.path.join(args.workdir, name.split()[0].lower() + "_" + name.split()[-1].lower()
                                   + f"_seed{seed}")
            t0 = time.perf_counter()
            summary = pretrain(cfg, workdir, resume=os.path.exists(os.path.join(workdir, "checkpoints")),
                               progress=False)
            seconds = time.perf_counter() - t0
            history = summary["history"]
            per_seed.append({"seed": seed, "pretrain_seconds": round(seconds, 1), "history": history,
                             **{f"final_{k}": tail_mean(history, k) for k in (
                                 "mlm_accuracy", "rtd_accuracy", "rtd_loss", "replaced_fraction",
                                 "tokens_per_second", "mfu")}})
            downstream.append(finetune_export(os.path.join(workdir, "export", export),
                                              os.path.join(workdir, "finetune"), seed))
        results["runs"][name] = {"overrides": overrides, "export": export, "seeds": per_seed,
                                 "downstream": seed_summary(downstream)}
        print(json.dumps({name: {"downstream": results["runs"][name]["downstream"]["best_accuracies"],
                                 "mlm_accuracy": [s["final_mlm_accuracy"] for s in per_seed],
                                 "rtd_accuracy": [s["final_rtd_accuracy"] for s in per_seed]}}), flush=True)

    medians = {name: run["downstream"]["median_best_accuracy"] for name, run in results["runs"].items()}
    results["median_downstream_accuracy"] = medians
    results["median_from_scratch"] = statistics.median(results["from_scratch"]["best_accuracies"])
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(results, f, indent=1)
    os.replace(out + ".tmp", out)
    plot(results, os.path.splitext(out)[0] + ".png")
    print(json.dumps({"baselines": results["baselines"], "from scratch": results["median_from_scratch"],
                      "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
