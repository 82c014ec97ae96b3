"""Regenerates kjv.txt.gz, the King James Bible with one chapter per document, from Debian's bible-kjv packages.

    apt-get install -y bible-kjv-text     # the text (/usr/lib/bible.data) and, as recommended, the `bible` reader
    python experiments/data/make_kjv_corpus.py

`bible -f` prints one verse a line as `Ge1:1 In the beginning ...`; the reference is dropped, the verses of a
chapter are joined with single spaces into one line, and chapters are separated by a blank line.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess

_VERSE = re.compile(r"^(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*)$")


def chapters(verse_lines: list[str]) -> list[str]:
    """Chapters as running text, in order, from `bible -f` output lines."""
    out: list[str] = []
    current, verses = None, []
    for number, line in enumerate(verse_lines, 1):
        match = _VERSE.match(line)
        if match is None:
            raise ValueError(f"line {number} is not a verse reference and text: {line!r}")
        key = (match["book"], match["chapter"])
        if key != current and verses:
            out.append(" ".join(verses))
            verses = []
        current = key
        verses.append(match["text"].strip())
    if verses:
        out.append(" ".join(verses))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src",
                                                         "deberta_jax", "corpora", "kjv.txt.gz"))
    args = parser.parse_args()
    text = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], check=True, capture_output=True, text=True).stdout
    documents = chapters(text.splitlines())
    # mtime=0 and no stored file name keep the archive byte-identical across regenerations.
    with open(args.output, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        f.write(("\n\n".join(documents) + "\n").encode("utf-8"))
    words = sum(len(d.split()) for d in documents)
    print(f"wrote {args.output}: {len(documents)} chapters, {words} words, {os.path.getsize(args.output)} bytes")


if __name__ == "__main__":
    main()
