"""Prepared corpora (data/prepared.py) and their grain batches (data/prepared_batches.py).

Rows are judged against the in-memory pipeline (`tokenize_documents` -> `PackedSequences`) on a slice of the
bundled KJV corpus; batches against invariants (each epoch a permutation of the rows, processes' blocks tiling the
global batch, a restored iterator continuing the sequence).
"""

import gzip
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from array_record.python.array_record_data_source import ArrayRecordDataSource

from deberta_jax.cli import main as cli
from deberta_jax.data.prepared import MANIFEST, TextFiles, TfdsText, decode_row, prepare, read_manifest, shard_paths
from deberta_jax.data.prepared_batches import PreparedBatches
from deberta_jax.data.text_corpus import PackedSequences, read_documents, tokenize_documents
from deberta_jax.recipes import bundled_corpus
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.tokenization.training import train_spm_tokenizer

SEQ = 32
N_CHAPTERS = 40


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Two files: chapters [0, 25) and [25, 40) of the KJV (Genesis 1-40)."""
    with gzip.open(bundled_corpus(), "rt", encoding="utf-8") as f:
        chapters = f.read().split("\n\n")[:N_CHAPTERS]
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.txt").write_text("\n\n".join(chapters[:25]) + "\n", encoding="utf-8")
    with gzip.open(root / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(chapters[25:]))
    return [str(root / "a.txt"), str(root / "b.txt.gz")]


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_spm_tokenizer(corpus, str(out), 400)
    return DebertaV3Tokenizer.from_pretrained(str(out))


@pytest.fixture(scope="module")
def one_shard(corpus, tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "one"
    prepare(TextFiles.open(corpus), tokenizer, SEQ, out, shards=1, log=quiet)
    return str(out)


def all_rows(directory):
    """(input_ids [rows, seq], attention_mask [rows, seq]) of a prepared directory, shards in order."""
    manifest = read_manifest(directory)
    source = ArrayRecordDataSource(shard_paths(directory, manifest))
    tokens = manifest["tokenizer"]
    rows = [decode_row(source[i], manifest["seq_len"], tokens["pad_id"], tokens["sep_id"]) for i in range(len(source))]
    return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])


def packed_rows(documents, tokenizer):
    packed = PackedSequences(tokenize_documents(documents, tokenizer, progress=False), SEQ, tokenizer.cls_id,
                             tokenizer.sep_id, tokenizer.pad_id)
    return packed.batch(np.arange(len(packed)))


# ---------------------------------------------------------------------------------------------- rows
def test_one_shard_equals_the_in_memory_pipeline(corpus, tokenizer, one_shard):
    ids, mask = all_rows(one_shard)
    expected_ids, expected_mask = packed_rows(read_documents(corpus), tokenizer)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)
    manifest = read_manifest(one_shard, tokenizer, SEQ)
    assert manifest["rows"] == len(ids) and manifest["shards"][0]["documents"] == N_CHAPTERS
    assert manifest["tokens"] == int(expected_mask.sum()) - 2 * len(ids)  # the stream, without [CLS] / [SEP] added


def test_shards_pack_their_own_documents(corpus, tokenizer, tmp_path):
    """S shards: rows of shard i are PackedSequences over documents [i*D/S, (i+1)*D/S), one short row per shard."""
    manifest = prepare(TextFiles.open(corpus), tokenizer, SEQ, tmp_path, shards=3, log=quiet)
    documents = list(read_documents(corpus))
    expected = [packed_rows(documents[i * N_CHAPTERS // 3:(i + 1) * N_CHAPTERS // 3], tokenizer) for i in range(3)]
    ids, mask = all_rows(tmp_path)
    np.testing.assert_array_equal(ids, np.concatenate([e[0] for e in expected]))
    np.testing.assert_array_equal(mask, np.concatenate([e[1] for e in expected]))
    assert [s["rows"] for s in manifest["shards"]] == [len(e[0]) for e in expected]
    assert [s["documents"] for s in manifest["shards"]] == [13, 13, 14]


def test_hosts_prepare_their_shards_and_the_last_writes_the_manifest(corpus, tokenizer, one_shard, tmp_path):
    source = TextFiles.open(corpus)
    assert prepare(source, tokenizer, SEQ, tmp_path, shards=4, host_index=1, host_count=2, log=quiet) is None
    assert sorted(os.listdir(tmp_path)) == ["rows-00001-of-00004.array_record", "rows-00001-of-00004.json",
                                            "rows-00003-of-00004.array_record", "rows-00003-of-00004.json"]
    with pytest.raises(FileNotFoundError, match="no manifest.json in .*not every host's shards"):
        read_manifest(tmp_path)
    manifest = prepare(source, tokenizer, SEQ, tmp_path, shards=4, host_index=0, host_count=2, log=quiet)
    assert manifest == read_manifest(tmp_path) and len(manifest["shards"]) == 4
    single = prepare(source, tokenizer, SEQ, tmp_path / "single", shards=4, log=quiet)
    assert single["shards"] == manifest["shards"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_interrupted_preparation_redoes_only_unfinished_shards_and_workers_agree(corpus, tokenizer, tmp_path):
    """Two worker processes (spawned) write the same rows as one; a rerun keeps complete shards (same files, not
    rewritten), redoes one whose .json is missing and ignores a leftover temporary file."""
    source = TextFiles.open(corpus)
    serial = prepare(source, tokenizer, SEQ, tmp_path / "serial", shards=4, log=quiet)
    parallel = prepare(source, tokenizer, SEQ, tmp_path / "parallel", shards=4, workers=2, log=quiet)
    assert parallel == {**serial, "plan": parallel["plan"]} and parallel["plan"] == serial["plan"]
    np.testing.assert_array_equal(all_rows(tmp_path / "serial")[0], all_rows(tmp_path / "parallel")[0])

    out = tmp_path / "parallel"
    os.remove(out / MANIFEST)
    os.remove(out / "rows-00002-of-00004.json")  # killed after writing its rows, before its counts
    (out / ".rows-00001-of-00004.array_record.tmp123").write_bytes(b"half a shard")
    kept = {name: os.stat(out / name).st_mtime_ns for name in ("rows-00000-of-00004.array_record",
                                                               "rows-00003-of-00004.array_record")}
    lines = []
    again = prepare(source, tokenizer, SEQ, out, shards=4, log=lines.append)
    assert "3 already complete, 1 to prepare" in lines[0]
    assert again == parallel
    assert {name: os.stat(out / name).st_mtime_ns for name in kept} == kept
    np.testing.assert_array_equal(all_rows(out)[0], all_rows(tmp_path / "serial")[0])


def test_tfds_text_is_prepared_like_text_files(tokenizer, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    texts = ["In the beginning God created the heaven and the earth.", "   ", "And God said, Let there be light.",
             "And there was light."]
    records = [{"text": t.encode()} for t in texts]
    with tfds.testing.mock_data(as_data_source_fn=lambda builder, split, **kwargs: records):
        source = TfdsText("lm1b", "train")
        assert len(source) == 4 and list(source.documents(1, 4)) == texts[2:]
        manifest = prepare(source, tokenizer, SEQ, tmp_path, shards=2, log=quiet)
    assert manifest["source"] == {"tfds": "lm1b", "split": "train", "text_key": "text", "examples": 4}
    expected = [packed_rows(texts[:2], tokenizer), packed_rows(texts[2:], tokenizer)]
    np.testing.assert_array_equal(all_rows(tmp_path)[0], np.concatenate([e[0] for e in expected]))
    with tfds.testing.mock_data(as_data_source_fn=lambda builder, split, **kwargs: [{"content": b"x"}]):
        with pytest.raises(ValueError, match="text_key='text' is not a feature of lm1b; it has \\['content'\\]"):
            prepare(TfdsText("lm1b", "train"), tokenizer, SEQ, tmp_path / "bad", log=quiet)


# ---------------------------------------------------------------------------------------------- errors
def test_bad_input_is_one_line_naming_the_file(corpus, tokenizer, one_shard, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9\n".encode("latin-1"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    spm_dir = os.path.dirname(tokenizer.spm_path)
    cases = [([str(tmp_path / "missing.txt")], f"no text file at {tmp_path / 'missing.txt'}"),
             ([str(bad)], f"{bad}, line 1, byte 3: not UTF-8"),
             ([str(blank)], f"the corpus has no documents: {blank}")]
    for inputs, message in cases:
        status = cli(["prepare-data", *inputs, "--tokenizer", spm_dir, "--seq-len", "32", "--out",
                      str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert status == 1 and err.count("\n") == 1 and message in err, err

    with pytest.raises(ValueError, match="prepared with seq_len=32, but data.seq_len=64"):
        read_manifest(one_shard, tokenizer, 64)
    other = DebertaV3Tokenizer(tokenizer.spm_path, do_lower_case=True)
    with pytest.raises(ValueError, match="prepared with another tokenizer than .*spm.model \\(do_lower_case differ"):
        PreparedBatches(one_shard, 4, seed=0, tokenizer=other)
    with pytest.raises(ValueError, match="holds shards of another preparation"):
        prepare(TextFiles.open(corpus), tokenizer, 16, one_shard, shards=1, log=quiet)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        PreparedBatches(one_shard, 10_000, seed=0)


def test_cli_prepares_and_reruns(corpus, tokenizer, tmp_path, capsys):
    args = ["prepare-data", *corpus, "--tokenizer", tokenizer.spm_path, "--seq-len", str(SEQ), "--out",
            str(tmp_path), "--shards", "2"]
    assert cli(args) == 0
    first = capsys.readouterr().out
    assert f"wrote {tmp_path}/manifest.json" in first and "in 2 shards" in first
    assert cli(args) == 0
    assert "2 already complete, 0 to prepare" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- batches
def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_each_epoch_reads_every_row_once_in_a_seeded_order(one_shard):
    ids, mask = all_rows(one_shard)
    n = len(ids)
    batches = take(PreparedBatches(one_shard, 8, seed=5), -(-3 * n // 8))
    seen = np.concatenate([b["example_index"] for b in batches])
    for epoch in range(2):
        assert sorted(seen[epoch * n:(epoch + 1) * n]) == list(range(n))
    assert not np.array_equal(seen[:n], seen[n:2 * n])  # reshuffled each epoch
    for batch in batches:
        assert batch["input_ids"].shape == (8, SEQ) and batch["input_ids"].dtype == np.int32
        np.testing.assert_array_equal(batch["input_ids"], ids[batch["example_index"]])
        np.testing.assert_array_equal(batch["attention_mask"], mask[batch["example_index"]])
    again = np.concatenate([b["example_index"] for b in take(PreparedBatches(one_shard, 8, seed=5), 4)])
    other = np.concatenate([b["example_index"] for b in take(PreparedBatches(one_shard, 8, seed=6), 4)])
    np.testing.assert_array_equal(again, seen[:32])
    assert not np.array_equal(other, seen[:32])
    plain = take(PreparedBatches(one_shard, 8, seed=5, shuffle=False), 2)
    np.testing.assert_array_equal(np.concatenate([b["example_index"] for b in plain]), np.arange(16))


def test_processes_read_their_block_of_each_global_batch(one_shard):
    single = PreparedBatches(one_shard, 8, seed=1)
    parts = [PreparedBatches(one_shard, 8, seed=1, process_index=p, process_count=4) for p in range(4)]
    for _ in range(40):  # across an epoch boundary (rows: fewer than 300)
        whole, pieces = next(single), [next(p) for p in parts]
        assert all(piece["input_ids"].shape == (2, SEQ) for piece in pieces)
        for key in whole:
            np.testing.assert_array_equal(np.concatenate([piece[key] for piece in pieces]), whole[key])


@pytest.mark.parametrize("steps_before", [0, 3, 37])
def test_resume_mid_epoch_is_exact(one_shard, steps_before):
    original = PreparedBatches(one_shard, 8, seed=3)
    take(original, steps_before)
    state = json.loads(json.dumps(original.get_state()))  # as the checkpoint record stores it
    restored = PreparedBatches(one_shard, 8, seed=3)
    restored.set_state(state)
    halves = [PreparedBatches(one_shard, 8, seed=3, process_index=p, process_count=2) for p in range(2)]
    for half in halves:
        half.set_state(state)  # another process layout: restored from the position
    for expected in take(original, 6):
        np.testing.assert_array_equal(next(restored)["example_index"], expected["example_index"])
        np.testing.assert_array_equal(np.concatenate([next(h)["example_index"] for h in halves]),
                                      expected["example_index"])
    with pytest.raises(ValueError, match="data state seed=3 does not match this run's seed=4"):
        PreparedBatches(one_shard, 8, seed=4).set_state(state)


# ---------------------------------------------------------------------------------------------- memory
_RSS_PROBE = textwrap.dedent("""
    import resource, sys
    from deberta_jax.data.prepared_batches import PreparedBatches
    batches = PreparedBatches(sys.argv[1], 16, seed=0)
    for _ in range(int(sys.argv[2])):
        next(batches)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
""")


@pytest.mark.slow
@pytest.mark.subprocess
def test_reading_a_ten_times_larger_corpus_takes_no_more_memory(tokenizer, tmp_path):
    """Peak RSS of reading 300 batches of the KJV (5 MB of rows) vs of 10 copies of it (its shards listed 10 times
    in the manifest): grain's shuffle permutes indices without a table and rows stay on disk, so the larger one
    stays within a few MiB where an in-memory corpus would grow by ~45 MiB."""
    small = tmp_path / "small"
    manifest = prepare(TextFiles.open([bundled_corpus()]), tokenizer, 128, small, shards=4, log=quiet)
    large = tmp_path / "large"
    large.mkdir()
    shards = []
    for copy in range(10):
        for shard in manifest["shards"]:
            name = f"copy{copy}-{shard['file']}"
            os.link(small / shard["file"], large / name)
            shards.append({**shard, "file": name})
    with open(large / MANIFEST, "w", encoding="utf-8") as f:
        json.dump({**manifest, "shards": shards, "rows": 10 * manifest["rows"], "tokens": 10 * manifest["tokens"]}, f)
    assert manifest["rows"] * 128 * 4 > 4 * 2 ** 20
    peaks = {}
    for directory in (small, large):
        run = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(directory), "300"], text=True,
                             capture_output=True, check=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
        peaks[directory.name] = int(run.stdout.split()[-1])
    assert peaks["large"] - peaks["small"] < 8 * 1024, peaks  # KiB


def test_the_config_takes_exactly_one_source_and_prepared_data_with_its_tokenizer():
    from deberta_jax.config_tree import ConfigError
    from deberta_jax.pretraining.config import load_pretrain_config

    with pytest.raises(ConfigError, match="data.prepared needs the tokenizer it was prepared with"):
        load_pretrain_config("tiny_cpu", ["data.corpus=[]", "data.prepared=somewhere"])
    with pytest.raises(ConfigError, match="give exactly one of data.corpus, data.tfds_dataset and data.prepared"):
        load_pretrain_config("tiny_cpu", ["data.prepared=somewhere", "data.tokenizer=tok"])
    cfg = load_pretrain_config("tiny_cpu", ["data.corpus=[]", "data.prepared=somewhere", "data.tokenizer=tok"])
    assert cfg.data.prepared == "somewhere" and cfg.data.read_workers == 0
