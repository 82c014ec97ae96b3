"""Speed of the tiny CPU recipes, measured through the real loops: `pretrain` with the tiny_cpu recipe (RTD + GDES)
and `finetune --recipe tiny-cpu` on the demo task, each beside the previous tiny_cpu settings (128-token rows,
dropout 0.1) in the same process, alternating, so that the ratio does not depend on what else the machine ran.

Reports per run seconds per step (compilation excluded: the loops compile before their first step), tokens/s and
the wall time a whole recipe would take at that speed (steps x s/step), against the demo's 10-minute budget.

    python experiments/bench/tiny_recipes.py [--steps 60] [--rounds 2] [--out experiments/bench/results/tiny_recipes.json]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from downstream import finetune_export  # noqa: E402

# The recipe before the learning fixes (commit 0c40ba9): 128-token rows and dropout 0.1.
PREVIOUS = ["data.seq_len=128", 'model.overrides={"hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, '
            '"intermediate_size": 512, "position_buckets": 32, "max_relative_positions": 128, '
            '"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}']


def pretrain_speed(workdir: str, overrides: list, steps: int, tokenizer: str | None) -> dict:
    """Seconds per step of `steps` tiny_cpu steps, after the first logged interval (warm caches)."""
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import pretrain

    log_every = max(1, steps // 4)
    extra = [f"data.tokenizer={tokenizer}"] if tokenizer else []
    cfg = load_pretrain_config("tiny_cpu", overrides + extra + [f"loop.log_every={log_every}",
                                                                 f"loop.checkpoint_every={10 * steps}"])
    summary = pretrain(cfg, workdir, progress=False, stop_after=steps)
    rows = summary["history"][1:]
    seconds = statistics.median(r["seconds_per_step"] for r in rows)
    return {"seq_len": cfg.data.seq_len, "batch_size": cfg.data.batch_size, "recipe_steps": cfg.steps,
            "seconds_per_step": seconds, "tokens_per_second": cfg.data.batch_size * cfg.data.seq_len / seconds,
            "mfu": statistics.median(r["mfu"] for r in rows), "recipe_minutes": cfg.steps * seconds / 60}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed pretraining steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of (current, previous)")
    parser.add_argument("--finetune-epochs", type=float, default=0.5)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "tiny_recipes.json"))
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="tiny-bench-")
    runs = {"current": [], "previous": []}
    tokenizer = None
    for round_index in range(args.rounds):
        for name, overrides in zip(runs, ([], PREVIOUS)):
            workdir = os.path.join(root, f"pretrain_{name}_{round_index}")
            runs[name].append(pretrain_speed(workdir, overrides, args.steps, tokenizer))
            tokenizer = tokenizer or os.path.join(workdir, "tokenizer")  # train the tokenizer once
            print(json.dumps({name: runs[name][-1]}), flush=True)
    current, previous = (statistics.median(r["seconds_per_step"] for r in v) for v in runs.values())
    per_token = lambda v: statistics.median(r["seconds_per_step"] / (r["seq_len"] * r["batch_size"]) for r in v)
    current_token, previous_token = (per_token(v) for v in runs.values())

    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import pretrain

    pretrain(load_pretrain_config("tiny_cpu", [f"data.tokenizer={tokenizer}", "steps=1"]),
             os.path.join(root, "export_for_finetune"), progress=False)
    ft = finetune_export(os.path.join(root, "export_for_finetune", "export", "discriminator"),
                         os.path.join(root, "finetune"), seed=0, epochs=args.finetune_epochs)

    result = {"machine": platform.machine(), "cpus": os.cpu_count(),
              "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/bench/tiny_recipes.py " + " ".join(sys.argv[1:]),
              "recipes": {"current": "tiny_cpu as committed", "previous": "tiny_cpu with " + " ".join(PREVIOUS)},
              "pretrain": runs,
              "pretrain_seconds_per_step": {"current": current, "previous": previous},
              "pretrain_time_per_token_ratio_previous_over_current": previous_token / current_token,
              "current_recipe_minutes": statistics.median(r["recipe_minutes"] for r in runs["current"]),
              "finetune_tiny_cpu": {"steps_per_second": ft["steps_per_second"], "steps": ft["steps"],
                                    "epochs": args.finetune_epochs},
              "note": "wall-clock on a shared 2-core machine; the ratio is what compares, within this run"}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    os.replace(args.out + ".tmp", args.out)
    print(json.dumps({k: v for k, v in result.items() if k != "pretrain"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
