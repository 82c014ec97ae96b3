"""MLM (+EMD) vs RTD with NES / ES / GDES on the tiny CPU recipe, judged downstream.

Every objective pretrains the same tiny model for the same number of steps on the same corpus (by default the demo's:
IMDb reviews plus the demo task's unlabeled train sentences) with one shared tokenizer, once per pretraining seed.
The RTD runs keep the recipe's all-[MASK] inputs; MLM uses BERT's 80/10/10, as microsoft's MLM task does. Each export (the
MLM model, or the RTD discriminator) is then fine-tuned on the demo task (VADER movie reviews, binary sentiment)
with `finetune --recipe tiny-cpu` and the same seed. Beside them: the same model after 1 step (from scratch),
the majority class and TF-IDF + logistic regression.

    python experiments/pretrain/compare_objectives.py [--steps 600] [--seeds 3] [--corpus imdb+task] [--finetune-epochs E]
        [--workdir DIR] [--resume]
    python experiments/pretrain/compare_objectives.py --plot-only   # redraw results/NAME.png from the NAME.json

results/compare_objectives.{json,png} are the run from before decoupled clipping (commit 0c40ba9: pretraining
metrics only, no downstream); that JSON has another layout and is not redrawn by this script.

`--resume` keeps the (seed, objective) runs that results/NAME.json already holds and runs only the missing ones;
it refuses a JSON made with other settings. The runs it adds are draws from the same distribution, not copies of what
one process would have made: pretraining is reproducible only to float rounding across machines (the losses of two
runs of one seed part in the 4th-6th digit after 40-300 steps), and that can move a fine-tune by about a point.

Writes results/NAME.json (every logged pretraining step and every evaluation of every run) and results/NAME.png.
"""

import argparse
import json
import os
import platform
import re
import statistics
import sys
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from downstream import (CORPORA, TASK, finetune_export, majority_accuracy, pretrain_or_read,  # noqa: E402
                        save_results, seed_summary, shared_overrides, tfidf_accuracy)
from plotting import parse_or_redraw, pyplot, save, seed_bars  # noqa: E402

RUNS = {  # name -> (recipe overrides, the export that is fine-tuned)
    "MLM (+EMD)": (["objective=mlm", "masking.mask_token_prob=0.8", "masking.random_token_prob=0.1"], "mlm"),
    "RTD + NES": (["objective=rtd", "rtd.sharing=nes"], "discriminator"),
    "RTD + ES": (["objective=rtd", "rtd.sharing=es"], "discriminator"),
    "RTD + GDES": (["objective=rtd", "rtd.sharing=gdes"], "discriminator"),
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
    bars = [("majority", results["baselines"]["majority_class"], None, "grey"),
            ("TF-IDF+LR", results["baselines"]["tfidf_logreg"]["word_1_2gram"], None, "tab:green"),
            ("scratch", results["from_scratch"]["median_best_accuracy"],
             results["from_scratch"]["best_accuracies"], "tab:gray")]
    bars += [(name.replace(" (+EMD)", "+EMD").replace("RTD + ", "RTD-"), run["downstream"]["median_best_accuracy"],
              run["downstream"]["best_accuracies"], colors[name]) for name, run in results["runs"].items()]
    seed_bars(axes[2], bars, ylim=(0.45, 0.85), title="downstream: VADER movie reviews after tiny-cpu fine-tuning")
    done = min(len(run["downstream"]["best_accuracies"]) for run in results["runs"].values())
    fig.suptitle(f"{results['steps']} pretraining steps per run, {done} of {len(results['seeds'])} seeds done; "
                 f"{results['command'].split('.py ')[-1]} "
                 f"({results['date_utc']}, {results['machine']})", fontsize=10)
    save(fig, path)


def settings(results: dict) -> dict:
    """What must match for `--resume` to merge into a JSON: all but the seed count, dates and machine."""
    return {"steps": results["steps"], "corpus": results["corpus"], "finetune_recipe": results["finetune_recipe"],
            "command": re.sub(r" --seeds \d+", "", results["command"])}


def finished_runs(previous: dict) -> tuple[dict, dict]:
    """From a results JSON: {seed: from-scratch fine-tune} and {objective: {seed: (pretraining entry, fine-tune)}}."""
    scratch = {r["seed"]: r for r in previous.get("from_scratch", {}).get("runs", [])}
    runs = {name: {entry["seed"]: (entry, tuned) for entry, tuned in zip(run["seeds"], run["downstream"]["runs"])}
            for name, run in previous.get("runs", {}).items()}
    return scratch, runs


def run_objective(name: str, overrides: list, export: str, seed: int, common: list, args) -> tuple[dict, dict]:
    """Pretrains one objective with one seed (or reads the finished run) and fine-tunes its export: returns the
    pretraining entry (history and tail means) and the fine-tuning result."""
    from deberta_jax.pretraining.config import load_pretrain_config

    cfg = load_pretrain_config("tiny_cpu", common + overrides + [f"seed={seed}"])
    workdir = os.path.join(args.workdir, name.split()[0].lower() + "_" + name.split()[-1].lower() + f"_seed{seed}")
    history = pretrain_or_read(cfg, workdir)["history"]
    entry = {"seed": seed, "history": history, **{f"final_{k}": tail_mean(history, k) for k in (
        "mlm_accuracy", "rtd_accuracy", "rtd_loss", "replaced_fraction", "tokens_per_second", "mfu")}}
    tuned = finetune_export(os.path.join(workdir, "export", export), os.path.join(workdir, "finetune"), seed,
                            args.finetune_epochs)
    return entry, tuned


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, default=3, help="pretraining seeds (each fine-tuned with its seed)")
    parser.add_argument("--corpus", choices=CORPORA, default=CORPORA[0], help="pretraining text (as the demo's)")
    parser.add_argument("--finetune-epochs", type=float, default=None, help="default: the tiny-cpu recipe's")
    parser.add_argument("--workdir", default="/tmp/deberta-jax-compare")
    parser.add_argument("--set", action="append", default=[], help="recipe override applied to every run")
    parser.add_argument("--resume", action="store_true", help="run only the seeds and objectives NAME.json lacks")
    args, out = parse_or_redraw(parser, plot, os.path.join(HERE, "results"), "compare_downstream")

    from deberta_jax.finetuning.train import load_recipe
    from deberta_jax.pretraining.config import load_pretrain_config

    seeds = list(range(args.seeds))
    results = {"recipe": "tiny_cpu", "corpus": args.corpus, "steps": args.steps, "seeds": seeds,
               "machine": platform.machine(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "command": "python experiments/pretrain/compare_objectives.py " + " ".join(
                   [f"--steps {args.steps}", f"--seeds {args.seeds}", f"--corpus {args.corpus}"]
                   + ([f"--finetune-epochs {args.finetune_epochs}"] if args.finetune_epochs else [])
                   + [f"--set {o}" for o in args.set]
                   + [f"--name {args.name}"]),
               "finetune_recipe": load_recipe(TASK, "tiny-cpu"),  # it changes over time: record what was used
               "runs": {}}
    done_scratch, done_runs = {}, {}
    if args.resume:
        if not os.path.exists(out):
            parser.error(f"--resume: {out} does not exist")
        with open(out, encoding="utf-8") as f:
            previous = json.load(f)
        mismatched = [k for k, v in settings(results).items() if settings(previous)[k] != v]
        if mismatched:
            parser.error(f"--resume: {out} was made with another {mismatched[0]}: {settings(previous)[mismatched[0]]}")
        done_scratch, done_runs = finished_runs(previous)
        results["resumed_utc"], results["date_utc"] = results["date_utc"], previous["date_utc"]
    results["overrides"] = common = shared_overrides(args.corpus, args.workdir, [
        f"steps={args.steps}", "loop.log_every=20", f"loop.checkpoint_every={args.steps}", *args.set])
    results["baselines"] = {"majority_class": majority_accuracy(), "tfidf_logreg": tfidf_accuracy()}

    # Seed by seed, every objective, so that a stopped comparison holds whole seeds; results are rewritten after
    # every run.
    scratch, per_seed, downstream = [], {name: [] for name in RUNS}, {name: [] for name in RUNS}
    for seed in seeds:
        if seed in done_scratch:
            scratch.append(done_scratch[seed])
        else:
            workdir = os.path.join(args.workdir, f"scratch_seed{seed}")
            pretrain_or_read(load_pretrain_config("tiny_cpu", common + ["steps=1", f"seed={seed}"]), workdir)
            scratch.append(finetune_export(os.path.join(workdir, "export", "discriminator"),
                                           os.path.join(workdir, "finetune"), seed, args.finetune_epochs))
        results["from_scratch"] = seed_summary(scratch)
        for name, (overrides, export) in RUNS.items():
            if seed in done_runs.get(name, {}):
                entry, tuned = done_runs[name][seed]
            else:
                entry, tuned = run_objective(name, overrides, export, seed, common, args)
            per_seed[name].append(entry)
            downstream[name].append(tuned)
            results["runs"][name] = {"overrides": overrides, "export": export, "seeds": per_seed[name],
                                     "downstream": seed_summary(downstream[name])}
            save_results(out, results)
            print(json.dumps({name: {"seed": seed, "downstream": downstream[name][-1]["best_accuracy"],
                                     "mlm_accuracy": per_seed[name][-1]["final_mlm_accuracy"],
                                     "rtd_accuracy": per_seed[name][-1]["final_rtd_accuracy"]}}), flush=True)

    medians = {name: run["downstream"]["median_best_accuracy"] for name, run in results["runs"].items()}
    results["median_downstream_accuracy"] = medians
    results["median_from_scratch"] = statistics.median(results["from_scratch"]["best_accuracies"])
    save_results(out, results)
    plot(results, os.path.splitext(out)[0] + ".png")
    print(json.dumps({"baselines": results["baselines"], "from scratch": results["median_from_scratch"],
                      "medians": medians}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
