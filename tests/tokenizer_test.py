"""The sentencepiece tokenizer against transformers' DebertaV2Tokenizer, on a model trained inside the test."""

import random

import numpy as np
import pytest
import sentencepiece as spm
import transformers

from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

pytestmark = pytest.mark.reference

WORDS = ("the quick brown fox jumps over a lazy dog while disentangled attention reads relative positions "
         "café naïve résumé über straße déjà vu 2024 3.14 don't can't (parenthesis) [brackets] email@x.org").split()

TEXTS = [
    "the quick brown fox",
    "",
    "   ",
    "  leading and  double  spaces\tand\ttabs\nnewlines\r\n",
    "trailing spaces   ",
    "café naïve cafe\u0301 (decomposed)",
    "Ｆｕｌｌ width ½ ﬁ ligature",
    "unknown ünïcödé ЖЖЖ 漢字 QQQ",
    "a [MASK] in the middle and [SEP] too",
    "[CLS]at the start",
    "UPPER case Words",
    "numbers 12345 and 3.14159",
]


@pytest.fixture(scope="module")
def spm_dir(tmp_path_factory):
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "tren", "sho", "pu", "ex", "ion", "ver", "ba", "zu", "qui", "ette"]
    vocabulary = list(WORDS) + ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(400)]
    lines = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 20))) for _ in range(3000)]
    root = tmp_path_factory.mktemp("spm")
    (root / "corpus.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(root / "spm"), vocab_size=200, model_type="unigram",
        pad_id=0, pad_piece="[PAD]", bos_id=1, bos_piece="[CLS]", eos_id=2, eos_piece="[SEP]", unk_id=3,
        unk_piece="[UNK]", character_coverage=1.0, minloglevel=2)
    return root


@pytest.fixture(scope="module")
def both(spm_dir):
    ours = DebertaV3Tokenizer.from_pretrained(spm_dir / "spm.model")
    ours.save_pretrained(spm_dir / "saved")
    theirs = transformers.AutoTokenizer.from_pretrained(spm_dir / "saved")
    assert type(theirs).__name__ == "DebertaV2Tokenizer"
    return ours, theirs


def test_special_token_ids(both):
    ours, theirs = both
    assert (ours.pad_id, ours.cls_id, ours.sep_id, ours.unk_id) == (0, 1, 2, 3)
    assert ours.mask_id == theirs.mask_token_id == 200
    assert (theirs.pad_token_id, theirs.cls_token_id, theirs.sep_token_id, theirs.unk_token_id) == (0, 1, 2, 3)
    assert ours.vocab_size == len(theirs)


@pytest.mark.parametrize("text", TEXTS)
def test_single_sentences_match(both, text):
    ours, theirs = both
    assert ours(text) == dict(theirs(text))


@pytest.mark.parametrize("i", range(len(TEXTS) - 1))
def test_pairs_match(both, i):
    ours, theirs = both
    assert ours(TEXTS[i], TEXTS[i + 1]) == dict(theirs(TEXTS[i], TEXTS[i + 1]))


@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
def test_truncation_matches(both, strategy):
    ours, theirs = both
    rng = random.Random(1)
    for _ in range(60):
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 15)))
        b = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 15)))
        max_length = rng.randint(6, 40)
        if not b and strategy == "only_second":  # no pair: the reference only logs; we refuse clearly
            with pytest.raises(ValueError, match="needs a text pair"):
                ours(a, b, truncation=strategy, max_length=max_length)
            continue
        try:
            expected = dict(theirs(a, b, truncation=strategy, max_length=max_length))
        except Exception:  # the reference refuses (e.g. the other sequence alone is too long): so do we
            with pytest.raises(ValueError):
                ours(a, b, truncation=strategy, max_length=max_length)
            continue
        if len(expected["input_ids"]) > max_length:  # the reference only warns when it cannot truncate
            continue
        assert ours(a, b, truncation=strategy, max_length=max_length) == expected, (a, b, max_length)
    for _ in range(20):
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30)))
        if strategy != "only_second":
            assert ours(a, truncation=strategy, max_length=10) == dict(theirs(a, truncation=strategy, max_length=10))


def test_batch_padding_matches(both):
    ours, theirs = both
    batch = TEXTS[:5]
    for padding, kwargs in (("longest", {}), ("max_length", {"max_length": 48})):
        assert ours(batch, padding=padding, **kwargs) == dict(theirs(batch, padding=padding, **kwargs))
    arrays = ours(batch, TEXTS[5:10], padding="max_length", max_length=64, truncation=True, return_numpy=True)
    expected = theirs(batch, TEXTS[5:10], padding="max_length", max_length=64, truncation=True, return_tensors="np")
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(arrays[key], expected[key])


def test_lower_case_matches(spm_dir):
    ours = DebertaV3Tokenizer(spm_dir / "spm.model", do_lower_case=True)
    ours.save_pretrained(spm_dir / "lower")
    theirs = transformers.AutoTokenizer.from_pretrained(spm_dir / "lower")
    for text in TEXTS:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text


def test_decode_round_trip(both):
    ours, _ = both
    text = "the quick brown fox jumps over a lazy dog"
    assert ours.decode(ours(text)["input_ids"]) == text


def test_bad_arguments_fail_clearly(both):
    ours, _ = both
    with pytest.raises(ValueError, match="needs max_length"):
        ours("a", truncation=True)
    with pytest.raises(ValueError, match="truncation must be"):
        ours("a", truncation="middle", max_length=5)
    with pytest.raises(ValueError, match="padding"):
        ours(["a", "the fox"], return_numpy=True)
