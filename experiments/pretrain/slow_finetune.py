"""Why a pretrained tiny export fine-tunes worse than random init at a low learning rate (issue "Pretraining that
helps", item 1): parameter swaps between the pretrained export and its 1-step twin, each fine-tuned the same way.

Variants, each an HF export directory built from the two (the same tokenizer and config):
- pretrained, from_scratch: the exports themselves;
- pretrained_random_words: the pretrained export with the twin's (random) word table;
- from_scratch_pretrained_words: the twin with the pretrained word table;
- pretrained_words_at_init_scale: the pretrained export fine-tuned with `--set rescale_word_table=true`, which
  scales its word table down to the init RMS (initializer_range). The embedding LayerNorm normalises each row, so
  the model computes what the pretrained one computes (tests/word_table_scale_test.py); only the optimizer sees a
  difference: Adam's step has an absolute size, so a table with larger entries turns more slowly.
- pretrained_tables_at_init_scale: as the last, and the relative position table (`encoder.rel_embeddings`) scaled
  to the init RMS too, in the export. v3 LayerNorms it before use (norm_rel_ebd), so its scale is as free as the
  word table's; the tiny recipe's pretraining grows it about 1.8 x.

Each variant is fine-tuned on the demo task with `--recipe tiny-cpu` and `--set optimizer.learning_rate=LR` for each
seed; the word table's RMS and the cosine of antonym pairs in the normalised table are reported beside it.

    python experiments/pretrain/slow_finetune.py --pretrained W/pretrain/export/discriminator \
        --from-scratch W/scratch/export/discriminator [--lr 1e-4] [--seeds 0 1 2] [--workdir DIR] [--name NAME]

`make demo`'s workdir (/tmp/deberta-jax-demo) holds both exports. Writes results/NAME.json (default slow_finetune).
"""

import argparse
import filecmp
import json
import os
import platform
import shutil
import statistics
import sys
from datetime import datetime, timezone

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from downstream import finetune_export, save_results  # noqa: E402

WORDS = "embeddings.word_embeddings.weight"
RELATIVE = "encoder.rel_embeddings.weight"
ANTONYMS = (("good", "bad"), ("great", "awful"), ("funny", "boring"), ("best", "worst"))


def variants(pretrained: str, scratch: str) -> dict:
    """name -> (base export, donor export, tensor-name prefixes taken from the donor, tensors scaled to the init RMS
    in the export, fine-tuning overrides). The first four set rescale_word_table=false, whatever the recipe says, so
    that they show the table as exported."""
    as_exported = ("rescale_word_table=false",)
    return {
        "pretrained": (pretrained, None, (), (), as_exported),
        "from_scratch": (scratch, None, (), (), as_exported),
        "pretrained_random_words": (pretrained, scratch, (WORDS,), (), as_exported),
        "from_scratch_pretrained_words": (scratch, pretrained, (WORDS,), (), as_exported),
        "pretrained_words_at_init_scale": (pretrained, None, (), (), ("rescale_word_table=true",)),
        "pretrained_tables_at_init_scale": (pretrained, None, (), (RELATIVE,), ("rescale_word_table=true",)),
    }


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def build(out: str, base: str, donor: str | None, prefixes: tuple, scaled: tuple = ()) -> str:
    """Writes the variant export to `out`: a copy of `base` with the donor's tensors named by `prefixes`, and the
    tensors named in `scaled` multiplied to an RMS of the config's initializer_range. An identical copy already
    there is kept, so that a run fine-tuning from it in another process keeps its files."""
    from safetensors.numpy import load_file, save_file

    staging = f"{out}.staging-{os.getpid()}"
    shutil.copytree(base, staging)
    if donor is not None or scaled:
        tensors = load_file(os.path.join(base, "model.safetensors"))
    if donor is not None:
        given = load_file(os.path.join(donor, "model.safetensors"))
        taken = [k for k in tensors if k.startswith(prefixes)]
        if not taken:
            raise ValueError(f"{base}: no tensor starts with {prefixes}")
        tensors.update({k: given[k] for k in taken})
    if scaled:
        with open(os.path.join(base, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        if "layer_norm" not in config.get("norm_rel_ebd", "none"):
            raise ValueError(f"{base}: norm_rel_ebd={config.get('norm_rel_ebd')!r} does not LayerNorm the relative "
                             "table, so scaling it would change the model")
        for name in scaled:
            tensors[name] = (tensors[name] * (config["initializer_range"] / _rms(tensors[name]))).astype(
                tensors[name].dtype)
    if donor is not None or scaled:
        save_file(tensors, os.path.join(staging, "model.safetensors"), metadata={"format": "pt"})
    same = os.path.isdir(out) and not filecmp.dircmp(staging, out).diff_files and all(
        filecmp.cmp(os.path.join(staging, f), os.path.join(out, f), shallow=False) for f in os.listdir(staging))
    if same:
        shutil.rmtree(staging)
    else:
        shutil.rmtree(out, ignore_errors=True)
        os.rename(staging, out)
    return out


def word_table_stats(model_dir: str) -> dict:
    """The word and relative tables' RMS, and the cosine of antonyms' rows after the embedding LayerNorm's centring and scaling
    (random rows: near 0; distributional training pulls words of the same slot together, antonyms included)."""
    from safetensors.numpy import load_file

    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    table = tensors[WORDS].astype(np.float64)
    rows = (table - table.mean(1, keepdims=True)) / table.std(1, keepdims=True)
    tokenizer = DebertaV3Tokenizer.from_pretrained(model_dir)
    cosines = {}
    for a, b in ANTONYMS:
        ids = [tokenizer.encode(word) for word in (a, b)]
        if any(len(i) != 1 for i in ids):  # a word the vocabulary splits has no single row
            continue
        u, v = rows[ids[0][0]], rows[ids[1][0]]
        cosines[f"{a}/{b}"] = round(float(u @ v / np.linalg.norm(u) / np.linalg.norm(v)), 3)
    return {"word_table_rms": round(_rms(table), 4), "relative_table_rms": round(_rms(tensors[RELATIVE]), 4),
            "antonym_cosine": cosines}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", required=True, help="the pretrained export (HF directory)")
    parser.add_argument("--from-scratch", required=True, help="the same model's 1-step export, same tokenizer")
    parser.add_argument("--lr", type=float, default=1e-4, help="fine-tuning peak learning rate")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="*", default=None, help="these variants only (default: all)")
    parser.add_argument("--workdir", default="/tmp/deberta-jax-slow-finetune")
    parser.add_argument("--name", default="slow_finetune")
    args = parser.parse_args()
    chosen = variants(args.pretrained, args.from_scratch)
    unknown = sorted(set(args.only or ()) - set(chosen))
    if unknown:
        parser.error(f"--only {unknown[0]}: not one of {', '.join(chosen)}")
    path = os.path.join(HERE, "results", f"{args.name}.json")
    results = {"variants": {}}
    if os.path.exists(path):  # runs of other variants or seeds stay; a rerun variant is replaced
        with open(path, encoding="utf-8") as f:
            results = json.load(f)
        if results["learning_rate"] != args.lr:
            parser.error(f"{path} holds runs at learning rate {results['learning_rate']}: pass another --name")
    results.update({"machine": platform.machine(), "learning_rate": args.lr})
    command = "python experiments/pretrain/slow_finetune.py " + " ".join(sys.argv[1:])
    for name, (base, donor, prefixes, scaled, finetune_sets) in chosen.items():
        if args.only and name not in args.only:
            continue
        model_dir = build(os.path.join(args.workdir, "variants", name), base, donor, prefixes, scaled)
        entry = {"command": command, "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 **word_table_stats(model_dir)}
        entry["finetune_overrides"] = list(finetune_sets)
        runs = [finetune_export(model_dir, os.path.join(args.workdir, "finetune", f"{name}_lr{args.lr:g}_s{seed}"),
                                seed, overrides=(f"optimizer.learning_rate={args.lr}", *finetune_sets))
                for seed in args.seeds]
        best = [r["best_accuracy"] for r in runs]
        entry.update({"seeds": args.seeds, "best_accuracies": best, "median_best_accuracy": statistics.median(best),
                      "curves": [[e["accuracy"] for e in r["evaluations"]] for r in runs]})
        results["variants"][name] = entry
        print(f"{name}: word table RMS {entry['word_table_rms']}, antonym cosines {entry['antonym_cosine']}, "
              f"dev accuracy {best} (median {entry['median_best_accuracy']:.3f})", flush=True)
        save_results(path, results)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
