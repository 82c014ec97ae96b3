"""What a pretrained export's frozen features know about the demo task, and whether they have collapsed: a logistic
regression on the [CLS] and on the mean-pooled last hidden states of the train split, scored on dev, and the mean
cosine similarity between dev sentences' features (near 1: every sentence points the same way).

    python experiments/pretrain/probe_features.py W/rtd/export/discriminator W/scratch/export/discriminator
    python experiments/pretrain/probe_features.py DIR ... --labels 250 1000   # also on random label subsets

Prints one JSON line per model directory. With --labels, the mean-pooled probe (C = 0.1) is also fitted on three
seeded random subsets of each size of the train split (scored on the whole dev split).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from downstream import task_split  # noqa: E402


def features(model_dir: str, texts: list[str], length: int = 64, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """([n, hidden] [CLS] states, [n, hidden] mean-pooled states) of `texts`, truncated to `length` tokens."""
    import jax

    from deberta_jax.conversion.hf_checkpoint import load_pretrained
    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

    tokenizer = DebertaV3Tokenizer.from_pretrained(model_dir)
    model, params = load_pretrained(model_dir)
    hidden = jax.jit(lambda p, ids, mask: model.apply({"params": p}, ids, attention_mask=mask).last_hidden_state)
    cls, mean = [], []
    for start in range(0, len(texts), batch):
        ids = np.full((len(texts[start:start + batch]), length), tokenizer.pad_id, np.int32)
        mask = np.zeros_like(ids)
        for row, text in enumerate(texts[start:start + batch]):
            tokens = [tokenizer.cls_id, *tokenizer.encode(text)[:length - 2], tokenizer.sep_id]
            ids[row, :len(tokens)], mask[row, :len(tokens)] = tokens, 1
        states = np.asarray(hidden(params, ids, mask))
        cls.append(states[:, 0])
        mean.append((states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True))
    return np.concatenate(cls), np.concatenate(mean)


def probe(model_dir: str, label_counts: tuple = (), subsets: int = 3) -> dict:
    from sklearn.linear_model import LogisticRegression

    train, dev = task_split("train"), task_split("validation")
    y_train, y_dev = np.array([e.label for e in train]), np.array([e.label for e in dev])
    out = {"model": model_dir}
    for kind, x_train, x_dev in zip(("cls", "mean"), features(model_dir, [e.text_a for e in train]),
                                    features(model_dir, [e.text_a for e in dev])):
        mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
        x_train, x_dev_scaled = (x_train - mu) / sd, (x_dev - mu) / sd
        classifier = LogisticRegression(C=1.0, max_iter=3000).fit(x_train, y_train)
        unit = x_dev / np.linalg.norm(x_dev, axis=1, keepdims=True)
        out[kind] = {"probe_dev_accuracy": float((classifier.predict(x_dev_scaled) == y_dev).mean()),
                     "mean_cosine": float((unit @ unit.T).mean())}
        if kind == "mean" and label_counts:
            out[kind]["few_labels"] = {}
            for count in label_counts:
                accuracies = []
                for seed in range(subsets):
                    rows = np.random.default_rng(seed).permutation(len(y_train))[:count]
                    few = LogisticRegression(C=0.1, max_iter=3000).fit(x_train[rows], y_train[rows])
                    accuracies.append(float((few.predict(x_dev_scaled) == y_dev).mean()))
                out[kind]["few_labels"][str(count)] = accuracies
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="HF export directories")
    parser.add_argument("--labels", type=int, nargs="*", default=[], help="train-label subset sizes to probe too")
    args = parser.parse_args()
    for directory in args.models:
        print(json.dumps(probe(directory, tuple(args.labels))), flush=True)
