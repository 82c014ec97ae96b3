"""The end-to-end demo behind `make demo`: pretrain a tiny DeBERTa-v3 (RTD + GDES) on the bundled KJV corpus,
fine-tune it on a small real labelled dataset (VADER movie-review snippets, binary sentiment, SST-2 layout), and
report the validation accuracy, throughput and where everything was written.

    python experiments/demo/run_demo.py [--pretrain-steps 300] [--epochs 2] [--workdir /tmp/deberta-jax-demo]
"""

import argparse
import json
import os
import platform
import time

from deberta_jax.data.glue import get_task, load_split
from deberta_jax.finetuning.train import FinetuneConfig, finetune
from deberta_jax.pretraining.config import load_pretrain_config
from deberta_jax.pretraining.train import pretrain

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "data", "vader_movies"))


def majority_accuracy() -> float:
    labels = [e.label for e in load_split(get_task("sst2"), DATA, "validation")]
    return max(labels.count(0), labels.count(1)) / len(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--workdir", default="/tmp/deberta-jax-demo")
    args = parser.parse_args()
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
        "machine": platform.machine(), "pretrain_steps": args.pretrain_steps,
        "pretrain_final": {k: pre["final"].get(k) for k in ("loss", "mlm_accuracy", "rtd_accuracy",
                                                            "tokens_per_second", "mfu")},
        "pretrain_seconds": round(pre_seconds, 1),
        "finetune_validation_accuracy": ft["best"]["metrics"]["validation"]["accuracy"],
        "finetune_best_step": ft["best"]["step"], "finetune_steps": ft["steps"],
        "finetune_steps_per_second": round(ft["steps_per_second"], 3), "finetune_seconds": round(ft_seconds, 1),
        "majority_class_accuracy": majority_accuracy(), "export": ft["export"],
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "demo.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
