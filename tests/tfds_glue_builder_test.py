"""`--data tfds` through tensorflow-datasets' real GLUE builder, offline and without TensorFlow.

Fake GLUE downloads (SST-2.zip and RTE.zip in the official layout; MRPC's three original files) are served from
127.0.0.1, with the builder's URLs pointed there. The first read prepares each task (download, extract, array_record
files) in a temporary data dir; what tfds.data_source and our reader then give must be the rows of the fake files.
"""

import contextlib
import functools
import http.server
import importlib.util
import json
import random
import subprocess
import sys
import threading
import zipfile

import pytest
from generated_glue import save_tiny_model, sentence

from deberta_jax.cli import main as cli
from deberta_jax.data.glue.readers import Example, load_split, load_tsv_split

tfds = pytest.importorskip("tensorflow_datasets")
glue_builder = pytest.importorskip("tensorflow_datasets.text.glue")

# Text that a TSV reader could get wrong: quotes (GLUE is read with quoting off), non-ASCII, trailing spaces.
ODD_WORDS = ['"quoted"', "it's", "caf\u00e9", "na\u00efve \u2014 r\u00e9sum\u00e9", "trailing ", "\u00bfqu\u00e9?"]
RTE_LABELS = ("entailment", "not_entailment")


def _text(rng, label=None):
    text = sentence(rng, label if label is not None else rng.randint(0, 1))
    return f"{text} {rng.choice(ODD_WORDS)}" if rng.random() < 0.5 else text


def _tsv(header, rows):
    return "".join("\t".join(map(str, row)) + "\n" for row in [header, *rows])


def _fake_glue(rng):
    """{task: {file name in the GLUE layout: TSV text}}; MRPC as GLUE's download script writes it."""
    sst2 = {"train.tsv": _tsv(["sentence", "label"], [(_text(rng, y), y) for y in (rng.randint(0, 1) for _ in
                                                                                      range(48))]),
            "dev.tsv": _tsv(["sentence", "label"], [(_text(rng, y), y) for y in (rng.randint(0, 1) for _ in
                                                                                    range(16))]),
            "test.tsv": _tsv(["index", "sentence"], [(i, _text(rng)) for i in range(12)])}
    rte = {f"{split}.tsv": _tsv(["index", "sentence1", "sentence2", "label"],
                                [(i, _text(rng), _text(rng), rng.choice(RTE_LABELS)) for i in range(n)])
           for split, n in (("train", 20), ("dev", 8))}
    rte["test.tsv"] = _tsv(["index", "sentence1", "sentence2"], [(i, _text(rng), _text(rng)) for i in range(6)])
    return {"sst2": sst2, "rte": rte}


def _fake_mrpc(rng):
    """Microsoft's files as tfds downloads them: the training file (with a byte-order mark), the test file, and the
    ids of the training pairs that GLUE holds out as dev. Returns ({file name: text}, the GLUE layout's files)."""
    header = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    train = [(rng.randint(0, 1), 1000 + 2 * i, 1001 + 2 * i, _text(rng), _text(rng)) for i in range(24)]
    test = [(rng.randint(0, 1), 5000 + 2 * i, 5001 + 2 * i, _text(rng), _text(rng)) for i in range(7)]
    dev = sorted(rng.sample(range(len(train)), 8))
    served = {"msr_paraphrase_train.txt": "\ufeff" + _tsv(header, train),
              "msr_paraphrase_test.txt": _tsv(header, test),
              "mrpc_dev_ids.tsv": "".join(f"{train[i][1]}\t{train[i][2]}\n" for i in dev)}
    layout = {"train.tsv": _tsv(header, [r for i, r in enumerate(train) if i not in dev]),
              "dev.tsv": _tsv(header, [train[i] for i in dev]),
              "test.tsv": _tsv(["index", *header[1:]], [(i, *r[1:]) for i, r in enumerate(test)])}
    # The row of each train / dev pair in Microsoft's training file: tfds' idx for MRPC (readers.load_tfds_split).
    original_rows = {"train": [i for i in range(len(train)) if i not in dev], "validation": dev}
    return served, layout, original_rows


class _Server(http.server.ThreadingHTTPServer):
    def __init__(self, directory):
        self.requested = []
        super().__init__(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        self.server.requested.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def _serving(directory):
    server = _Server(directory)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


TFDS_SPLITS = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
GLUE_DIRS = {"sst2": "SST-2", "rte": "RTE", "mrpc": "MRPC"}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Prepares sst2, rte and mrpc through the real builder from the local server, each by the first
    load_split(task, "tfds", ...) of it. Returns the data dir, the GLUE layout of the same rows, MRPC's original
    rows, each task's examples as read then, and the server's request paths."""
    root = tmp_path_factory.mktemp("tfds_glue")
    rng = random.Random(0)
    files = _fake_glue(rng)
    mrpc_served, files["mrpc"], mrpc_rows = _fake_mrpc(rng)
    served, glue_dir, data_dir = root / "served", root / "glue", root / "tensorflow_datasets"
    served.mkdir()
    for task, texts in files.items():
        (glue_dir / GLUE_DIRS[task]).mkdir(parents=True)
        for name, text in texts.items():
            (glue_dir / GLUE_DIRS[task] / name).write_text(text, encoding="utf-8")
        if task != "mrpc":
            with zipfile.ZipFile(served / f"{GLUE_DIRS[task]}.zip", "w") as archive:
                for name, text in texts.items():
                    archive.writestr(f"{GLUE_DIRS[task]}/{name}", text.encode("utf-8"))
    for name, text in mrpc_served.items():
        (served / name).write_text(text, encoding="utf-8")

    configs = {c.name: c for c in glue_builder.Glue.BUILDER_CONFIGS}
    read = {}
    with _serving(served) as (server, url), pytest.MonkeyPatch.context() as patch:
        # Checksums: tfds checks a download only against the size and sha256 registered for its URL (the builder's
        # url_checksums/glue.txt). These 127.0.0.1 URLs have none, and DownloadConfig's default
        # force_checksums_validation=False lets an unregistered URL through, so nothing needs skipping; registering
        # them (DownloadConfig(register_checksums=True)) would write into the installed package's glue.txt.
        for task in ("sst2", "rte"):
            patch.setattr(configs[task], "data_url", f"{url}/{GLUE_DIRS[task]}.zip")
        patch.setattr(glue_builder, "_MRPC_TRAIN", f"{url}/msr_paraphrase_train.txt")
        patch.setattr(glue_builder, "_MRPC_TEST", f"{url}/msr_paraphrase_test.txt")
        patch.setattr(glue_builder, "_MRPC_DEV_IDS", f"{url}/mrpc_dev_ids.tsv")
        patch.setenv("TFDS_DATA_DIR", str(root / "not_this"))  # a default dir used by mistake stays empty
        patch.setenv("NO_PROXY", "127.0.0.1")
        for task in GLUE_DIRS:
            read[task] = {split: load_split(task, "tfds", split, data_dir=str(data_dir)) for split in TFDS_SPLITS}
        requested = list(server.requested)
    assert not (root / "not_this").exists()
    return {"data_dir": data_dir, "glue_dir": glue_dir, "mrpc_rows": mrpc_rows, "read": read, "requested": requested}


def test_the_real_builder_prepares_without_tensorflow_and_downloads_each_file_once(prepared):
    assert importlib.util.find_spec("tensorflow") is None, "this test is about the path without TensorFlow"
    assert sorted(prepared["requested"]) == sorted(["/SST-2.zip", "/RTE.zip", "/msr_paraphrase_train.txt",
                                                    "/msr_paraphrase_test.txt", "/mrpc_dev_ids.tsv"])
    for task in GLUE_DIRS:
        version_dir = next((prepared["data_dir"] / "glue" / task).iterdir())
        info = json.loads((version_dir / "dataset_info.json").read_text())
        assert info["fileFormat"] == "array_record", info.get("fileFormat")


@pytest.mark.parametrize("task", ["sst2", "rte"])
def test_tfds_rows_are_the_fake_files_rows(prepared, task):
    """Row i of each split file is the example with idx i, through our reader and through tfds.data_source."""
    for split, file_name in TFDS_SPLITS.items():
        from_tsv = load_tsv_split(task, prepared["glue_dir"], split)
        assert len(from_tsv) == len((prepared["glue_dir"] / GLUE_DIRS[task] / file_name).read_text().splitlines()) - 1
        assert sorted(prepared["read"][task][split], key=lambda e: e.idx) == from_tsv
        source = tfds.data_source(f"glue/{task}", split=split, data_dir=str(prepared["data_dir"]), download=False)
        records = sorted((source[i] for i in range(len(source))), key=lambda r: int(r["idx"]))
        keys = ("sentence",) if task == "sst2" else ("sentence1", "sentence2")
        assert [tuple(r[k].decode("utf-8") for k in keys) for r in records] == [
            (e.text_a,) if task == "sst2" else (e.text_a, e.text_b) for e in from_tsv]
        assert [int(r["label"]) for r in records] == [-1 if e.label is None else e.label for e in from_tsv]


def test_mrpc_from_microsofts_files_splits_by_the_dev_ids(prepared):
    """tfds builds MRPC from Microsoft's files, not GLUE's: train and validation are the training file's rows
    outside and inside the dev id list, with idx the row in that file; the test split is the test file."""
    read = prepared["read"]["mrpc"]
    for split in TFDS_SPLITS:
        from_tsv = load_tsv_split("mrpc", prepared["glue_dir"], split)
        examples = sorted(read[split], key=lambda e: e.idx)
        assert [(e.text_a, e.text_b, e.label) for e in examples] == [(e.text_a, e.text_b, e.label) for e in from_tsv]
        expected_idx = prepared["mrpc_rows"].get(split, range(len(from_tsv)))
        assert [e.idx for e in examples] == list(expected_idx)


def test_a_failed_download_names_the_dataset_and_directory(tmp_path, monkeypatch):
    configs = {c.name: c for c in glue_builder.Glue.BUILDER_CONFIGS}
    with _serving(tmp_path) as (server, url):  # serves an empty directory: 404
        monkeypatch.setattr(configs["sst2"], "data_url", f"{url}/SST-2.zip")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with pytest.raises(RuntimeError, match=r"could not prepare tfds dataset glue/sst2 in .*glue/sst2.*404"):
            load_split("sst2", "tfds", "train", data_dir=str(tmp_path / "data"))


@pytest.mark.slow
def test_finetune_and_predict_read_the_prepared_dir_through_the_cli(prepared, tmp_path):
    """No server now: the CLI must read what is prepared under --tfds-data-dir, not download."""
    train = prepared["read"]["sst2"]["train"]
    (tmp_path / "corpus.txt").write_text("\n".join(e.text_a for e in train), encoding="utf-8")
    save_tiny_model(tmp_path / "model", tmp_path / "corpus.txt")
    data_dir = str(prepared["data_dir"])
    workdir = tmp_path / "run"
    assert cli(["finetune", "--task", "sst2", "--model", str(tmp_path / "model"), "--data", "tfds",
                "--tfds-data-dir", data_dir, "--workdir", str(workdir), "--set", "epochs=1",
                "--set", "batch_size=16", "--set", "max_length=32"]) == 0
    summary = json.loads((workdir / "metrics.json").read_text())
    assert summary["train_examples"] == len(train) and summary["config"]["tfds_data_dir"] == data_dir
    assert cli(["predict", "--task", "sst2", "--model", str(workdir / "export"), "--data", "tfds",
                "--tfds-data-dir", data_dir, "--out", str(tmp_path / "submission")]) == 0
    rows = (tmp_path / "submission" / "SST-2.tsv").read_text().splitlines()
    assert len(rows) == 1 + len(prepared["read"]["sst2"]["test"])


def test_tfds_data_dir_needs_data_tfds(capsys):
    assert cli(["finetune", "--task", "sst2", "--model", "m", "--data", "glue_dir", "--tfds-data-dir", "d",
                "--workdir", "w"]) == 2
    assert "tfds_data_dir" in capsys.readouterr().err


@pytest.mark.subprocess
def test_a_fresh_interpreter_finds_glue_and_wikipedia_by_name(tmp_path):
    """tfds' registry (not our explicit import) resolves the legacy text datasets: the pinned requirements hold every
    module its lazy import goes through (h5py for nearest_neighbors)."""
    code = ("import sys, tensorflow_datasets as tfds\n"
            "for name in ('glue/sst2', 'wikipedia/20230601.en'):\n"
            "    tfds.builder(name, data_dir=sys.argv[1])\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
