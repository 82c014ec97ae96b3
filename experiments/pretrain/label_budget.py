"""Pretraining judged where it should matter most: fine-tuning with few labels. The tiny_cpu export and the same
model after 1 step (same tokenizer) are fine-tuned on `--labels` examples of the demo task's train split (the dev
split whole), beside the majority class and TF-IDF + LR trained on the same examples.

    python experiments/pretrain/label_budget.py --pretrained W/rtd/export/discriminator \\
        --scratch W/scratch/export/discriminator --labels 250 1000 8453 --seeds 0 1 2 --workdir W/budget

Each subset keeps the same number of optimizer steps as the full split's recipe would take (`--steps`), capped at
`--max-epochs`, and the best dev evaluation of each run counts (as `finetune` keeps it), for every arm alike.
Writes WORKDIR/label_budget.json; `--update-results` also copies it to experiments/pretrain/results/.
"""

import argparse
import json
import math
import os
import shutil
import sys
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from downstream import finetune_export, majority_accuracy, seed_summary, tfidf_accuracy, write_label_subset  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", required=True, help="HF export of the pretrained model")
    parser.add_argument("--scratch", required=True, help="HF export of the same model after 1 step")
    parser.add_argument("--labels", type=int, nargs="+", default=[250, 1000, 8453])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800, help="fine-tuning steps of every run (epochs follow)")
    parser.add_argument("--max-epochs", type=float, default=40.0)
    parser.add_argument("--evals", type=int, default=8, help="dev evaluations per run")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--update-results", action="store_true")
    args = parser.parse_args(argv)

    result = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "args": vars(args), "budgets": []}
    for labels in args.labels:
        data = write_label_subset(os.path.join(args.workdir, f"data_{labels}"), labels)
        epochs = min(args.max_epochs, args.steps * 32 / labels)  # tiny-cpu's batch size is 32
        eval_every = max(1, math.ceil(epochs * math.ceil(labels / 32) / args.evals))
        entry = {"labels": labels, "epochs": round(epochs, 3), "majority": majority_accuracy(data),
                 "tfidf_lr": tfidf_accuracy(data)}
        for arm, model in (("pretrained", args.pretrained), ("from_scratch", args.scratch)):
            runs = [finetune_export(model, os.path.join(args.workdir, f"ft_{labels}_{arm}_{seed}"), seed, epochs,
                                    data, (f"eval_every={eval_every}",)) for seed in args.seeds]
            entry[arm] = seed_summary(runs)
        entry["gain"] = entry["pretrained"]["median_best_accuracy"] - entry["from_scratch"]["median_best_accuracy"]
        result["budgets"].append(entry)
        print(json.dumps({k: entry[k] for k in ("labels", "majority", "tfidf_lr", "gain")}
                         | {arm: entry[arm]["best_accuracies"] for arm in ("pretrained", "from_scratch")}), flush=True)
    path = os.path.join(args.workdir, "label_budget.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    if args.update_results:
        shutil.copyfile(path, os.path.join(HERE, "results", "label_budget.json"))
    return result


if __name__ == "__main__":
    main()
