"""What the fine-tuning tests train: a generated SST-2-style task in the official GLUE layout, whose label one word
gives away, and a tiny DeBERTa-v3 (2 layers of width 32) with a sentencepiece tokenizer trained on its sentences;
seconds per epoch on a CPU."""

import csv
import random

import jax

from deberta_jax.config import preset
from deberta_jax.conversion.hf_checkpoint import save_pretrained
from deberta_jax.model.modeling import DebertaModel, init_params
from deberta_jax.tokenization.training import train_spm_tokenizer

FILLER = ("the a movie film story plot actors scenes music was is very quite rather somewhat and but with "
          "this that it its").split()


def sentence(rng: random.Random, label: int) -> str:
    """A few filler words around one positive (label 1) or negative (label 0) word."""
    words = [rng.choice(FILLER) for _ in range(rng.randint(4, 12))]
    words.insert(rng.randrange(len(words) + 1), rng.choice(["good", "great", "fine"] if label else
                                                          ["bad", "awful", "dull"]))
    return " ".join(words)


def write_split(path, rows, header) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_glue_and_model(root, train: int = 640, dev: int = 128, test: int = 37):
    """Writes root/glue/SST-2/{train,dev,test}.tsv (test labels: index % 2) and root/model; returns both dirs."""
    rng = random.Random(0)
    (root / "glue" / "SST-2").mkdir(parents=True)
    data = {}
    for split, n in (("train", train), ("dev", dev)):
        labels = [rng.randint(0, 1) for _ in range(n)]
        data[split] = [(sentence(rng, y), y) for y in labels]
        write_split(root / "glue" / "SST-2" / f"{split}.tsv", data[split], ["sentence", "label"])
    write_split(root / "glue" / "SST-2" / "test.tsv", [(i, sentence(rng, i % 2)) for i in range(test)],
                ["index", "sentence"])
    (root / "corpus.txt").write_text("\n".join(s for s, _ in data["train"]), encoding="utf-8")
    save_tiny_model(root / "model", root / "corpus.txt")
    return root / "glue", root / "model"


def save_tiny_model(model_dir, corpus_path, vocab_size: int = 50, **config_overrides) -> None:
    """Trains a `vocab_size`-piece tokenizer on the text file `corpus_path` and saves it with a randomly initialised
    tiny backbone (a v3-xsmall config, shrunk, with `config_overrides`), in HF format, under `model_dir`."""
    tokenizer = train_spm_tokenizer([str(corpus_path)], str(model_dir), vocab_size)
    config = preset("deberta-v3-xsmall", vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, position_buckets=8, max_relative_positions=32,
                    **config_overrides)
    model = DebertaModel(config)
    save_pretrained(model_dir, model, init_params(model, jax.random.PRNGKey(0)))

