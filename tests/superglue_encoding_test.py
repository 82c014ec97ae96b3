"""SuperGLUE examples as sequences: marked spans, COPA's choices, candidate rows, and batches of whole examples."""

import pathlib

import numpy as np
import pytest

from deberta_jax.data.superglue import encoding, readers, tasks
from deberta_jax.tokenization.training import train_spm_tokenizer

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "superglue"


def test_marked_spans():
    assert encoding.mark_spans("He sat on the bank.", [(14, 18, 0)]) == "He sat on the [ bank ]."
    assert encoding.mark_spans("Mark said he lied.", [(10, 12, 1), (0, 4, 0)]) == "[ Mark ] said { he } lied."
    with pytest.raises(ValueError, match="overlap"):
        encoding.mark_spans("abcdef", [(0, 3, 0), (2, 4, 1)])


def test_rows_of_each_format():
    wic, _ = encoding.task_rows("superglue/wic", readers.load_split("superglue/wic", FIXTURES, "train"))
    assert wic[0].text_a == "He sat on the [ bank ] of the river."
    assert wic[0].text_b == "She robbed the [ bank ] downtown."
    wsc, _ = encoding.task_rows("superglue/wsc", readers.load_split("superglue/wsc", FIXTURES, "train"))
    assert wsc[1].text_a == "[ The big red dog ] chased the cat because { it } was hungry." and wsc[1].text_b is None
    copa, owner = encoding.task_rows("superglue/copa", readers.load_split("superglue/copa", FIXTURES, "train"))
    assert [r.text_b for r in copa[:2]] == ["because the sun was rising.", "because the grass was cut."]
    assert [r.text_b for r in copa[4:6]] == ["so my friend awoke.", "so my friend snored."]
    assert copa[6].text_b == "because I put it in the freezer." and owner.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    record, owner = encoding.task_rows("superglue/record", readers.load_split("superglue/record", FIXTURES, "train"))
    assert [r.text_b for r in record[:4]] == [f"The {e} is a landmark of Paris." for e in
                                              ("CNN", "Eiffel Tower", "France", "Paris")]
    assert [r.label for r in record] == [0, 1, 0, 0, 0, 0, 1, 1] and owner.tolist() == [0] * 4 + [1] * 4
    assert "@highlight" not in record[0].text_a and record[0].text_a.endswith(". Visitors return to Paris")
    multirc, owner = encoding.task_rows("superglue/multirc",
                                        readers.load_split("superglue/multirc", FIXTURES, "train"))
    assert multirc[0].text_b == "What colour is Tom's bike? Red" and owner.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert [r.idx for r in multirc] == list(range(7))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("superglue_tokenizer")
    text = "\n".join(path.read_text(encoding="utf-8") for path in FIXTURES.glob("*/*.jsonl"))
    (root / "corpus.txt").write_text(text * 3, encoding="utf-8")
    return train_spm_tokenizer([str(root / "corpus.txt")], str(root / "spm"), 150)


def test_copa_batches_hold_whole_examples(tokenizer):
    examples = readers.load_split("superglue/copa", FIXTURES, "train")
    encoded = encoding.encode_task(examples, "superglue/copa", tokenizer, max_length=128, buckets=(32, 64))
    assert encoded.rows.num_truncated == 0
    seen = []
    for batch in encoding.task_batches(encoded, 3, shuffle=True, seed=1, epoch=0):
        assert batch["input_ids"].shape[:2] == (3, 2) and batch["labels"].shape == (3,)
        for row, position, weight in zip(batch["input_ids"], batch["idx"], batch["weights"]):
            if weight == 0:
                continue
            seen.append(int(position))
            for choice in range(2):  # each choice row is the tokenizer's pair encoding of that choice's text
                rows, _ = encoding.task_rows("superglue/copa", [examples[position]])
                expected = tokenizer(rows[choice].text_a, rows[choice].text_b)["input_ids"]
                assert row[choice, :len(expected)].tolist() == expected
            assert batch["labels"][list(batch["idx"]).index(position)] == examples[position].label
    assert sorted(seen) == [0, 1, 2, 3]


def test_candidate_rows_batch_like_glue(tokenizer):
    examples = readers.load_split("superglue/record", FIXTURES, "validation")
    encoded = encoding.encode_task(examples, "superglue/record", tokenizer, max_length=64)
    assert len(encoded) == 2 and len(encoded.rows) == 8 and encoded.rows.labels.tolist() == [0, 1, 0, 0, 0, 0, 1, 1]
    batches = list(encoding.task_batches(encoded, 5, shuffle=False))
    assert np.concatenate([b["idx"][b["weights"] > 0] for b in batches]).tolist() == list(range(8))
