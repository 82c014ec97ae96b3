"""How the downstream gain of MLM (+EMD) pretraining grows with its budget, on the tiny CPU recipe.

For each pretraining budget (`--steps`, each run with its own warmup and linear decay) the MLM (+EMD) arm of
`compare_objectives.py` pretrains the tiny_cpu model on the demo's corpus with one shared tokenizer. Every export
is fine-tuned on the demo task with `--recipe tiny-cpu` (plus `--finetune-set` overrides, applied to every arm
alike) for each fine-tuning seed, and probed frozen (`probe_features.py`: logistic regression on mean-pooled last
hidden states). The from-scratch arm is the same model after 1 step, one per fine-tuning seed, as in
`compare_objectives.py`, so a shared workdir reuses that script's runs.

    python experiments/pretrain/budget_scaling.py --steps 1000 8000 [--pretrain-seeds 0] [--finetune-seeds 0 1 2]
        [--finetune-set optimizer.layer_decay=0.8] [--workdir DIR] [--name budget_scaling]

Writes results/NAME.json and results/NAME.png.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from compare_objectives import RUNS  # noqa: E402
from downstream import (CORPORA, finetune_export, majority_accuracy, pretrain_or_read, save_results,  # noqa: E402
                        seed_summary, shared_overrides, tfidf_accuracy)
from plotting import parse_or_redraw, pyplot, save  # noqa: E402
from probe_features import probe  # noqa: E402

MLM_OVERRIDES, MLM_EXPORT = RUNS["MLM (+EMD)"]


def plot(results, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    tokens = {run["steps"]: run["tokens"] for run in results["pretrained"]}
    for run in results["pretrained"]:
        accuracies = run["downstream"]["best_accuracies"]
        axes[0].scatter([run["tokens"]] * len(accuracies), accuracies, color="tab:purple", s=12, alpha=0.6)
    budgets = sorted(tokens)
    medians = [statistics.median([a for run in results["pretrained"] if run["steps"] == s
                                  for a in run["downstream"]["best_accuracies"]]) for s in budgets]
    axes[0].plot([tokens[s] for s in budgets], medians, "o-", color="tab:purple", label="MLM (+EMD) export, median")
    for name, value, color in (("from scratch (1-step export), median", results["from_scratch"]["median_best_accuracy"],
                                "tab:gray"),
                               ("TF-IDF + LR", results["baselines"]["tfidf_logreg"]["word_1_2gram"], "tab:green")):
        axes[0].axhline(value, color=color, ls="--" if "scratch" in name else ":", label=name)
    axes[0].set(xscale="log", xlabel="pretraining tokens", ylabel="dev accuracy", ylim=(0.70, 0.82),
                title=f"fine-tuned on the demo task (dots: fine-tuning seeds; majority class "
                      f"{results['baselines']['majority_class']:.3f})")
    axes[0].legend(fontsize=8)
    for run in results["pretrained"]:
        history = run["history"]
        axes[1].plot([r["step"] for r in history], [r["mlm_accuracy"] for r in history],
                     label=f"{run['steps']} steps, seed {run['pretrain_seed']}")
    axes[1].set(xlabel="pretraining step", ylabel="accuracy", title="MLM accuracy at masked positions (80/10/10)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{results['command'].split('.py ')[-1]} ({results['date_utc']}, {results['machine']})", fontsize=9)
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[1000, 8000], help="pretraining budgets")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--finetune-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--finetune-set", action="append", default=[], help="tiny-cpu override for every fine-tune")
    parser.add_argument("--pretrain-set", action="append", default=[],
                        help="tiny_cpu override for every pretraining run (not the from-scratch twins)")
    parser.add_argument("--corpus", choices=CORPORA, default=CORPORA[0])
    parser.add_argument("--workdir", default="/tmp/deberta-jax-budget")
    args, out = parse_or_redraw(parser, plot, os.path.join(HERE, "results"), "budget_scaling")

    from deberta_jax.pretraining.config import load_pretrain_config

    common = shared_overrides(args.corpus, args.workdir, [])
    # Fine-tunes with other overrides get their own folders, so recipes can be compared on the same exports.
    tag = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(args.finetune_set)) or "recipe"
    overrides = tuple(args.finetune_set)
    # Pretraining runs with other overrides get their own folders too.
    pretrain_tag = re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(args.pretrain_set))
    results = {"recipe": "tiny_cpu", "corpus": args.corpus, "finetune_overrides": args.finetune_set,
               "pretrain_overrides": args.pretrain_set,
               "machine": platform.machine(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": "python experiments/pretrain/budget_scaling.py " + " ".join(
                   ["--steps", *map(str, args.steps), "--pretrain-seeds", *map(str, args.pretrain_seeds),
                    "--finetune-seeds", *map(str, args.finetune_seeds),
                    *[f"--finetune-set {o}" for o in args.finetune_set],
                    *[f"--pretrain-set {o}" for o in args.pretrain_set], "--name", args.name]),
               "baselines": {"majority_class": majority_accuracy(), "tfidf_logreg": tfidf_accuracy()},
               "pretrained": []}

    def finetuned(model_dir, workdir, seed):
        return finetune_export(model_dir, os.path.join(workdir, f"finetune_{tag}_seed{seed}"), seed, None,
                               overrides=overrides)

    scratch = []
    for seed in args.finetune_seeds:
        workdir = os.path.join(args.workdir, f"scratch_seed{seed}")
        pretrain_or_read(load_pretrain_config("tiny_cpu", common + ["steps=1", f"seed={seed}"]), workdir)
        scratch.append(finetuned(os.path.join(workdir, "export", "discriminator"), workdir, seed))
    results["from_scratch"] = seed_summary(scratch)
    results["from_scratch"]["probe"] = probe(os.path.join(args.workdir, f"scratch_seed{args.finetune_seeds[0]}",
                                                          "export", "discriminator"))
    for steps in args.steps:
        for pretrain_seed in args.pretrain_seeds:
            cfg = load_pretrain_config("tiny_cpu", common + MLM_OVERRIDES + args.pretrain_set + [
                f"steps={steps}", f"seed={pretrain_seed}", "loop.log_every=20", f"loop.checkpoint_every={steps}"])
            workdir = os.path.join(args.workdir, "_".join(filter(None, [f"mlm_{steps}", pretrain_tag,
                                                                         f"seed{pretrain_seed}"])))
            summary = pretrain_or_read(cfg, workdir)
            export = os.path.join(workdir, "export", MLM_EXPORT)
            runs = [finetuned(export, workdir, seed) for seed in args.finetune_seeds]
            results["pretrained"].append({
                "steps": steps, "pretrain_seed": pretrain_seed,
                "tokens": steps * cfg.data.batch_size * cfg.data.seq_len,
                "final_mlm_accuracy": summary["final"]["mlm_accuracy"], "history": summary["history"],
                "downstream": seed_summary(runs), "probe": probe(export)})
            save_results(out, results)
            print(json.dumps({"steps": steps, "pretrain_seed": pretrain_seed,
                              "downstream": results["pretrained"][-1]["downstream"]["best_accuracies"],
                              "from_scratch": results["from_scratch"]["best_accuracies"]}), flush=True)
    save_results(out, results)
    plot(results, os.path.splitext(out)[0] + ".png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
