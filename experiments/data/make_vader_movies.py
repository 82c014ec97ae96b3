"""Builds experiments/data/vader_movies/SST-2/{train,dev}.tsv: movie-review sentences with binary sentiment labels, laid
out as GLUE's SST-2 (header "sentence<TAB>label", 1 = positive), so that
`deberta_jax.data.glue.readers.load_split("sst2", "experiments/data/vader_movies", "train")` reads them.

Source: the sentence-level movie-review snippets of Hutto & Gilbert's VADER study (ICWSM 2014), each with the mean
sentiment rating of at least 20 human raters on [-4, 4]. They ship in the source distribution of the PyPI package
vaderSentiment 3.3.2 (MIT), as additional_resources/hutto_ICWSM_2014.tar.gz ->
hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt (tab-separated: id, mean rating, text).

    python -m pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d /tmp/vader
    python experiments/data/make_vader_movies.py /tmp/vader/vaderSentiment-3.3.2.tar.gz

Label: 1 where the mean rating is > 0, 0 where it is < 0; snippets rated exactly 0 are left out. Text: runs of
whitespace become one space (the release has runs of spaces where dashes were) and the ends are stripped; nothing
else changes. Exact duplicate texts are kept once (the first). Split: 20% to dev, chosen by sorting the snippet ids on
sha256("<seed>:<id>") (independent of any library's random generator); both files keep the release's order.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import tarfile

SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
SEED = 0
DEV_FRACTION = 0.2
LICENSE = "vaderSentiment-3.3.2/LICENSE.txt"
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vader_movies")


def read_snippets(sdist_path: str) -> tuple[list[tuple[str, float, str]], str]:
    """(id, mean rating, text) rows of the movie-review ground truth inside the vaderSentiment sdist, and the
    package's license text."""
    with open(sdist_path, "rb") as f:
        data = f.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise ValueError(f"{sdist_path}: sha256 {digest} is not vaderSentiment-3.3.2.tar.gz's {SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        inner_bytes = outer.extractfile(INNER_ARCHIVE).read()
        license_text = outer.extractfile(LICENSE).read().decode("utf-8")
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        text = inner.extractfile(MEMBER).read().decode("utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"{MEMBER}, line {number}: expected 3 tab-separated fields, got {len(fields)}")
        rows.append((fields[0], float(fields[1]), fields[2]))
    return rows, license_text


def build(rows: list[tuple[str, float, str]]) -> tuple[list[tuple[str, int]], list[tuple[str, int]], dict]:
    """(train, dev) lists of (sentence, label), and counts for the README."""
    seen, kept = set(), []
    zero = duplicates = 0
    for snippet_id, rating, text in rows:
        sentence = re.sub(r"\s+", " ", text).strip()
        if rating == 0:
            zero += 1
            continue
        if sentence in seen:
            duplicates += 1
            continue
        seen.add(sentence)
        kept.append((snippet_id, sentence, int(rating > 0)))
    by_hash = sorted(kept, key=lambda r: hashlib.sha256(f"{SEED}:{r[0]}".encode()).hexdigest())
    dev_ids = {r[0] for r in by_hash[:round(DEV_FRACTION * len(kept))]}
    train = [(s, label) for i, s, label in kept if i not in dev_ids]
    dev = [(s, label) for i, s, label in kept if i in dev_ids]
    counts = {"snippets": len(rows), "rated_zero": zero, "duplicates": duplicates, "train": len(train),
              "dev": len(dev), "train_positive": sum(label for _, label in train),
              "dev_positive": sum(label for _, label in dev)}
    return train, dev, counts


def write_tsv(path: str, rows: list[tuple[str, int]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("sentence\tlabel\n")
        for sentence, label in rows:
            f.write(f"{sentence}\t{label}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sdist", help="vaderSentiment-3.3.2.tar.gz (pip download --no-binary :all:)")
    parser.add_argument("--out", default=OUT_DIR, help="the dataset's GLUE directory (SST-2/ is made inside)")
    args = parser.parse_args()
    rows, license_text = read_snippets(args.sdist)
    train, dev, counts = build(rows)
    os.makedirs(os.path.join(args.out, "SST-2"), exist_ok=True)
    write_tsv(os.path.join(args.out, "SST-2", "train.tsv"), train)
    write_tsv(os.path.join(args.out, "SST-2", "dev.tsv"), dev)
    with open(os.path.join(args.out, "LICENSE.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(license_text.replace("\r\n", "\n").rstrip("\n") + "\n")
    print(counts)


if __name__ == "__main__":
    main()
