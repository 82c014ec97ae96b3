"""Throughput of the pretraining input pipeline on this host: `prepare-data` tokenizing per worker count, and the
grain reader delivering batches from the prepared files per number of read workers (rows only, and rows masked on
the host as pretraining does), beside the tiny train step's consumption (experiments/bench/results/tiny_recipes.json).

    python experiments/data/input_pipeline.py [--corpus KJV] [--batches 300] [--out experiments/data/results/input_pipeline.json]
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def prepare_speed(corpus: str, tokenizer, seq_len: int, workers: int, shards: int, out: str) -> dict:
    from deberta_jax.data.prepared import TextFiles, prepare

    t0 = time.perf_counter()
    manifest = prepare(TextFiles.open([corpus]), tokenizer, seq_len, out, shards=shards, workers=workers,
                       log=lambda *a: None)
    seconds = time.perf_counter() - t0  # process start-up of the workers included: what a user waits for
    # Each shard's own time (tokenizing, packing, writing; no start-up), from its .json file.
    busy = sum(json.load(open(os.path.join(out, s["file"].replace(".array_record", ".json"))))["seconds"]
               for s in manifest["shards"])
    return {"workers": workers, "shards": shards, "tokens": manifest["tokens"], "seconds": round(seconds, 2),
            "tokens_per_second": round(manifest["tokens"] / seconds),
            "shard_seconds": round(busy, 2), "tokens_per_second_per_busy_worker": round(manifest["tokens"] / busy)}


def read_speed(directory: str, tokenizer, batch_size: int, read_workers: int, batches: int, masked: bool) -> dict:
    """Tokens/s of `batches` batches after 20 warm-up ones (workers started, buffers filled)."""
    from deberta_jax.data.prepared_batches import PreparedBatches
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import PretrainBatches

    iterator = PreparedBatches(directory, batch_size, seed=0, tokenizer=tokenizer, read_workers=read_workers)
    cfg = load_pretrain_config("tiny_cpu", [f"data.batch_size={batch_size}"])
    host = PretrainBatches(cfg, iterator, tokenizer, "rtd", sharding=None)
    fetch = (lambda step: host.host_batch(step)) if masked else (lambda step: next(iterator))
    for step in range(20):
        fetch(step)
    t0 = time.perf_counter()
    for step in range(20, 20 + batches):
        fetch(step)
    seconds = time.perf_counter() - t0
    seq_len = iterator.manifest["seq_len"]
    return {"read_workers": read_workers, "masked": masked, "batch_size": batch_size, "seq_len": seq_len,
            "batches": batches, "seconds": round(seconds, 3),
            "tokens_per_second": round(batches * batch_size * seq_len / seconds)}


def main(argv=None) -> int:
    from deberta_jax.data.text_corpus import read_documents
    from deberta_jax.recipes import bundled_corpus
    from deberta_jax.tokenization.training import train_spm_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=bundled_corpus())
    parser.add_argument("--seq-len", type=int, default=64)  # tiny_cpu's
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=300)
    parser.add_argument("--prepare-workers", default="1,2")
    parser.add_argument("--copies", type=int, default=4, help="the corpus repeated this many times for prepare-data, "
                        "so that tokenizing outweighs starting the workers")
    parser.add_argument("--read-workers", default="0,1,2")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "input_pipeline.json"))
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_spm_tokenizer([args.corpus], os.path.join(tmp, "tokenizer"), 4000)
        big = os.path.join(tmp, "corpus.txt")
        with open(big, "w", encoding="utf-8") as f:
            for _ in range(args.copies):
                f.writelines(document + "\n\n" for document in read_documents([args.corpus]))
        prepared = [prepare_speed(big, tokenizer, args.seq_len, int(w), 8, os.path.join(tmp, f"w{w}"))
                    for w in args.prepare_workers.split(",")]
        directory = os.path.join(tmp, f"w{args.prepare_workers.split(',')[0]}")
        reads = [read_speed(directory, tokenizer, args.batch_size, int(w), args.batches, masked)
                 for masked in (False, True) for w in args.read_workers.split(",")]
    with open(os.path.join(ROOT, "experiments", "bench", "results", "tiny_recipes.json")) as f:
        consumed = [run["tokens_per_second"] for run in json.load(f)["pretrain"]["current"]]
    result = {"machine": platform.machine(), "cpus": os.cpu_count(),
              "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": "python experiments/data/input_pipeline.py " + " ".join(argv or sys.argv[1:]),
              "corpus": os.path.basename(args.corpus), "prepare": prepared, "read": reads,
              "tiny_train_step_tokens_per_second": round(statistics.mean(consumed))}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
