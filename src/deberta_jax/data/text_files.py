"""Reading UTF-8 text files, gzipped or not, with errors that say where a file is broken.

    for line in text_lines("corpus.txt.gz"):   # ValueError: corpus.txt.gz, line 3, byte 1207: not UTF-8 ...
        ...
"""

from __future__ import annotations

import gzip
import os
import zlib
from typing import Iterator

_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)  # not gzip; cut short; corrupt


def text_lines(path: str | os.PathLike) -> Iterator[str]:
    """The lines of a UTF-8 text file, gunzipped when its name ends in `.gz`, as `open` reads them (universal
    newlines; each line ends in "\\n" but maybe the last).

    Raises FileNotFoundError for a missing file, and ValueError naming the file, line and byte offset of the first
    byte that is not UTF-8, or the file when a `.gz` one is corrupt or cut short.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no text file at {path}")
    try:
        with gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8") as f:
            yield from f
    except UnicodeDecodeError:
        raise not_utf8_error(path) from None
    except _GZIP_ERRORS as e:
        raise _gzip_error(path, e) from None


def not_utf8_error(path: str | os.PathLike) -> ValueError:
    """The error for a file that failed to decode: "PATH, line L, byte B: not UTF-8 text (REASON 0xXX)".

    A UnicodeDecodeError from a text-mode file counts from the start of the decoder's current chunk, not of the
    file, so the file is read again in binary, line by line: "\\n" never occurs inside a UTF-8 sequence, so a line
    fails to decode at the same byte as the whole file. Lines are counted at "\\n"; for `.gz` files the byte offset
    is in the uncompressed text.
    """
    path = os.fspath(path)
    offset = 0
    try:
        with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return ValueError(f"{path}, line {number}, byte {offset + e.start}: not UTF-8 text ({e.reason} "
                                      f"0x{raw[e.start]:02x}); save the file as UTF-8")
                offset += len(raw)
    except _GZIP_ERRORS as e:  # the bad bytes are in a last line that a .gz cut short cannot deliver
        return _gzip_error(path, e)
    return ValueError(f"{path}: not UTF-8 text")  # only when the file changed since the failed read


def _gzip_error(path: str, error: Exception) -> ValueError:
    return ValueError(f"{path}: not a complete gzip file ({error})")
