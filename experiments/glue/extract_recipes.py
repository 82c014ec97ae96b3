"""Builds src/deberta_jax/recipes/glue/published.json (package data) from microsoft/DeBERTa's published GLUE scripts (experiments/glue/*.sh).

    python experiments/glue/extract_recipes.py PATH/TO/microsoft-DeBERTa/experiments/glue

Each script has one case per model (`deberta-v3-base)`, `large)`, `deberta-v3-small-sift)` ...) listing epochs,
warmup steps, learning rate, batch size, classifier dropout and, for SiFT, the perturbation settings; the
sequence length is in the shared command line. The values are mapped onto FinetuneConfig fields.
"""

import json
import os
import re
import sys

TASKS = {"cola": "cola", "mnli": "mnli", "mrpc": "mrpc", "qnli": "qnli", "qqp": "qqp", "rte": "rte",
         "sst2": "sst2", "stsb": "stsb"}
FIELDS = {"num_train_epochs": ("epochs", float), "warmup": ("optimizer.warmup_steps", int),
          "learning_rate": ("optimizer.learning_rate", float), "train_batch_size": ("batch_size", int),
          "cls_drop_out": ("cls_dropout", float), "max_seq_len": ("max_length", int),
          "vat_lambda": ("sift.weight", float), "vat_learning_rate": ("sift.step_size", float),
          "vat_init_perturbation": ("sift.init_std", float)}  # script option -> FinetuneConfig key (dotted)
CASE = re.compile(r"^\s*([A-Za-z0-9.\-]+)\)\s*$")
OPTION = re.compile(r"--([a-z_0-9]+)\s+([^\s\\\"]+)")


def parse_script(text: str) -> dict:
    recipes, current, shared = {}, None, {}
    for line in text.splitlines():
        case = CASE.match(line)
        if case and case.group(1) != "*":
            current = case.group(1).lower()
            recipes[current] = {}
            continue
        if line.strip() == ";;":
            current = None
            continue
        for key, value in OPTION.findall(line):
            if key in FIELDS:
                name, cast = FIELDS[key]
                (recipes[current] if current else shared)[name] = cast(value)
    for name, values in recipes.items():
        values.update({k: v for k, v in shared.items() if k not in values})
        if "sift.weight" in values:
            values["sift.enabled"] = True
        recipes[name] = nest(values)
    return recipes


def nest(values: dict) -> dict:
    """{"optimizer.learning_rate": x} -> {"optimizer": {"learning_rate": x}}: FinetuneConfig's sections."""
    tree = {}
    for key, value in values.items():
        *sections, leaf = key.split(".")
        node = tree
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return tree


def main(glue_dir: str) -> None:
    out = {}
    for script, task in TASKS.items():
        with open(os.path.join(glue_dir, f"{script}.sh"), encoding="utf-8") as f:
            out[task] = parse_script(f.read())
    out["_source"] = "microsoft/DeBERTa experiments/glue/*.sh (published fine-tuning settings)"
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src", "deberta_jax", "recipes", "glue",
                        "published.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print(f"wrote {path}: " + ", ".join(f"{t}: {len(r)}" for t, r in out.items() if t != "_source"))


if __name__ == "__main__":
    main(sys.argv[1])
