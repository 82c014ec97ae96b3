"""Corpus reading, tokenizer training, the token stream and sequence packing (batching: prepared_data_test.py).

Exact checks use small synthetic files; the bundled KJV corpus (deberta_jax/corpora/kjv.txt.gz) checks facts of the real
text (1,189 chapters) and invariants on a slice of it.
"""

import gzip
import json
import os

import numpy as np
import pytest
import sentencepiece as spm

from deberta_jax.data.text_corpus import PackedSequences, read_documents, tokenize_documents
from deberta_jax.recipes import bundled_corpus
from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer
from deberta_jax.tokenization.training import train_spm_tokenizer

KJV = bundled_corpus()
N_SLICE = 120  # chapters: Genesis 1 .. Leviticus 11


def write(path, text, compress=False):
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def kjv_slice(tmp_path_factory):
    with gzip.open(KJV, "rt", encoding="utf-8") as f:
        chapters = f.read().split("\n\n")[:N_SLICE]
    root = tmp_path_factory.mktemp("kjv")
    text = "\n\n".join(chapters) + "\n"
    return {"chapters": chapters, "txt": write(root / "slice.txt", text),
            "gz": write(root / "slice.txt.gz", text, compress=True)}


@pytest.fixture(scope="session")
def tokenizer_dir(kjv_slice, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokenizer")
    train_spm_tokenizer([kjv_slice["txt"]], str(out), 600)
    return str(out)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    return DebertaV3Tokenizer.from_pretrained(tokenizer_dir)


# ---------------------------------------------------------------------------------------------- corpus reading
def test_the_bundled_corpus_is_the_whole_kjv_one_chapter_per_document():
    documents = list(read_documents([KJV]))
    assert len(documents) == 1189  # chapters of the 66 books
    assert documents[0].startswith("In the beginning God created the heaven and the earth. And the earth was")
    assert documents[-1].endswith("The grace of our Lord Jesus Christ be with you all. Amen.")
    # The KJV spells its numbers out, so any digit would be a leftover verse or chapter reference.
    assert not any(c.isdigit() for d in documents for c in d)


def test_documents_are_runs_of_non_blank_lines(tmp_path):
    text = "\n\n first line \nsecond  line\n\n\n   \t\nalone\n\nlast\nno newline at end"
    expected = ["first line second  line", "alone", "last no newline at end"]
    assert list(read_documents([write(tmp_path / "a.txt", text)])) == expected
    assert list(read_documents([write(tmp_path / "a.txt.gz", text, compress=True)])) == expected
    # a document ends with its file
    two = [write(tmp_path / "b.txt", "one\ntwo"), write(tmp_path / "c.txt", "three\n\nfour\n")]
    assert list(read_documents(two)) == ["one two", "three", "four"]


def test_missing_files_are_reported_before_any_document(tmp_path):
    good = write(tmp_path / "good.txt", "text")
    documents = read_documents([good, str(tmp_path / "missing.txt.gz")])
    with pytest.raises(FileNotFoundError, match="missing.txt.gz"):
        next(documents)
    with pytest.raises(ValueError, match="list of file names"):
        next(read_documents(good))


# ---------------------------------------------------------------------------------------------- tokenizer training
def test_trained_model_has_deberta_v3_layout(tokenizer_dir, tokenizer):
    sp = spm.SentencePieceProcessor(model_file=os.path.join(tokenizer_dir, "spm.model"))
    assert sp.get_piece_size() == 600
    assert [sp.id_to_piece(i) for i in range(4)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    assert "[MASK]" not in {sp.id_to_piece(i) for i in range(600)}
    assert (tokenizer.pad_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.unk_id) == (0, 1, 2, 3)
    assert tokenizer.mask_id == 600 and tokenizer.vocab_size == 601
    with open(os.path.join(tokenizer_dir, "tokenizer_config.json"), encoding="utf-8") as f:
        assert json.load(f)["tokenizer_class"] == "DebertaV2Tokenizer"
    sentence = "And God said, Let there be light: and there was light."
    assert tokenizer.decode(tokenizer.encode(sentence)) == sentence
    assert tokenizer.unk_id not in tokenizer.encode(sentence)


def test_training_reads_gzip_and_is_deterministic(kjv_slice, tokenizer_dir, tmp_path):
    train_spm_tokenizer([kjv_slice["gz"]], str(tmp_path), 600)
    with open(os.path.join(tokenizer_dir, "spm.model"), "rb") as a, open(tmp_path / "spm.model", "rb") as b:
        assert a.read() == b.read()


def test_seed_picks_the_sample_of_lines(kjv_slice, tmp_path):
    def model(seed):
        train_spm_tokenizer([kjv_slice["txt"]], str(tmp_path / str(seed)), 300, input_sentence_size=60, seed=seed)
        with open(tmp_path / str(seed) / "spm.model", "rb") as f:
            return f.read()

    assert model(0) == model(0) != model(1)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(input_paths=["nowhere.txt"]), FileNotFoundError, "nowhere.txt"),
    (dict(input_paths="corpus.txt"), ValueError, "input_paths"),
    (dict(input_paths=[]), ValueError, "input_paths"),
    (dict(vocab_size=4), ValueError, "vocab_size=4"),
    (dict(model_type="wordpiece"), ValueError, "model_type='wordpiece'"),
    (dict(input_sentence_size=-1), ValueError, "input_sentence_size=-1"),
])
def test_training_rejects_bad_arguments(kjv_slice, tmp_path, kwargs, error, match):
    args = dict(input_paths=[kjv_slice["txt"]], output_dir=str(tmp_path), vocab_size=600)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        train_spm_tokenizer(args.pop("input_paths"), args.pop("output_dir"), args.pop("vocab_size"), **args)


# ---------------------------------------------------------------------------------------------- token stream
def test_stream_is_each_document_then_sep(tokenizer, tmp_path):
    path = write(tmp_path / "c.txt", "In the beginning\nGod created\n\n\nthe heaven\n")
    expected = (tokenizer.encode("In the beginning God created") + [tokenizer.sep_id]
                + tokenizer.encode("the heaven") + [tokenizer.sep_id])
    tokens = tokenize_documents(read_documents([path]), tokenizer, progress=False)
    assert tokens.dtype == np.int32 and tokens.ndim == 1
    assert tokens.tolist() == expected


def test_stream_of_the_kjv_slice_has_one_sep_per_chapter(kjv_slice, tokenizer):
    tokens = tokenize_documents(read_documents([kjv_slice["gz"]]), tokenizer, progress=False)
    sep = np.flatnonzero(tokens == tokenizer.sep_id)
    assert len(sep) == N_SLICE and sep[-1] == len(tokens) - 1
    assert tokenizer.decode(tokens[:sep[0]]) == kjv_slice["chapters"][0]
    assert not np.isin(tokens, [tokenizer.pad_id, tokenizer.cls_id, tokenizer.mask_id]).any()


def test_empty_corpus_is_an_error(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="no tokens"):
        tokenize_documents(read_documents([write(tmp_path / "blank.txt", "\n \n\t\n")]), tokenizer, progress=False)


def test_progress_bar_counts_documents(tokenizer, capsys):
    tokenize_documents(["a b", "c d", "e"], tokenizer, progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "documents/s" in err


# ---------------------------------------------------------------------------------------------- packing
CLS, SEP, PAD = 1, 2, 0


def test_packing_boundaries_by_hand():
    packed = PackedSequences(np.arange(10, 21), seq_len=6, cls_id=CLS, sep_id=SEP, pad_id=PAD)  # 11 tokens
    ids, mask = packed.batch([0, 1, 2])
    np.testing.assert_array_equal(ids, [[CLS, 10, 11, 12, 13, SEP],
                                        [CLS, 14, 15, 16, 17, SEP],
                                        [CLS, 18, 19, 20, SEP, PAD]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    assert ids.dtype == mask.dtype == np.int32 and len(packed) == 3
    row, row_mask = packed[-1]
    np.testing.assert_array_equal(row, ids[2])
    np.testing.assert_array_equal(row_mask, mask[2])
    np.testing.assert_array_equal(packed.batch([2, 0])[0], ids[[2, 0]])
    with pytest.raises(IndexError):
        packed[3]

    exact = PackedSequences(np.arange(10, 18), seq_len=6, cls_id=CLS, sep_id=SEP, pad_id=PAD)  # 2 full rows
    assert len(exact) == 2 and exact.batch([0, 1])[1].all()
    shortest = PackedSequences(np.array([7, 8]), seq_len=3, cls_id=CLS, sep_id=SEP, pad_id=PAD)
    np.testing.assert_array_equal(shortest.batch([0, 1])[0], [[CLS, 7, SEP], [CLS, 8, SEP]])


def test_packed_rows_reassemble_the_stream(kjv_slice, tokenizer):
    tokens = tokenize_documents(read_documents([kjv_slice["gz"]]), tokenizer, progress=False)
    packed = PackedSequences(tokens, 64, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    ids, mask = packed.batch(np.arange(len(packed)))
    assert ids.shape == mask.shape == (-(-len(tokens) // 62), 64)
    assert (ids[:, 0] == tokenizer.cls_id).all() and mask[:-1].all()
    lengths = mask.sum(axis=1)
    assert (ids[np.arange(len(ids)), lengths - 1] == tokenizer.sep_id).all()
    bodies = [row[1:n - 1] for row, n in zip(ids, lengths)]
    np.testing.assert_array_equal(np.concatenate(bodies), tokens)
    assert (ids[mask == 0] == tokenizer.pad_id).all()


@pytest.mark.parametrize("tokens, seq_len, match", [(np.arange(5), 2, "seq_len=2"),
                                                    (np.zeros(0, np.int32), 8, "non-empty"),
                                                    (np.zeros((2, 3), np.int32), 8, "1-D")])
def test_packing_rejects_bad_arguments(tokens, seq_len, match):
    with pytest.raises(ValueError, match=match):
        PackedSequences(tokens, seq_len, CLS, SEP, PAD)
