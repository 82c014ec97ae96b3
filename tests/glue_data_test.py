"""GLUE data: the task registry, the official TSV layout (hand-written fixtures in tests/fixtures/glue, one directory
per task as GLUE's download script lays them out), the tfds path (mocked), encoding, bucketed batches and submission
files.

Expected examples are written out by hand from the fixture files, not produced by the reader.
"""

import csv
import os
import shutil

import numpy as np
import pytest

from deberta_jax.data.glue.encoding import EncodedSplit, bucket_lengths, bucketed_batches, encode_examples, num_batches
from deberta_jax.data.glue.readers import Example, load_split, load_tfds_split, load_tsv_split
from deberta_jax.data.glue.tasks import TASK_NAMES, get_task
from deberta_jax.finetuning.submission import submission_file_name, write_submission
from deberta_jax.tokenization.training import train_spm_tokenizer

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "glue")
VADER_MOVIES = os.path.join(os.path.dirname(__file__), "..", "experiments", "data", "vader_movies")


# ---------------------------------------------------------------------------------------------- registry
def test_registry_has_every_glue_task_with_its_features_and_labels():
    assert TASK_NAMES == ("cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "ax")
    expected = {  # text keys, num_labels, label names, glue directory
        "cola": (("sentence",), 2, ("unacceptable", "acceptable"), "CoLA"),
        "sst2": (("sentence",), 2, ("negative", "positive"), "SST-2"),
        "mrpc": (("sentence1", "sentence2"), 2, ("not_equivalent", "equivalent"), "MRPC"),
        "qqp": (("question1", "question2"), 2, ("not_duplicate", "duplicate"), "QQP"),
        "stsb": (("sentence1", "sentence2"), 1, (), "STS-B"),
        "mnli": (("premise", "hypothesis"), 3, ("entailment", "neutral", "contradiction"), "MNLI"),
        "qnli": (("question", "sentence"), 2, ("entailment", "not_entailment"), "QNLI"),
        "rte": (("sentence1", "sentence2"), 2, ("entailment", "not_entailment"), "RTE"),
        "wnli": (("sentence1", "sentence2"), 2, ("not_entailment", "entailment"), "WNLI"),
        "ax": (("premise", "hypothesis"), 3, ("entailment", "neutral", "contradiction"), "diagnostic"),
    }
    for name, (keys, num_labels, label_names, directory) in expected.items():
        task = get_task(name)
        assert (task.text_keys, task.num_labels, task.label_names, task.glue_dir) == expected[name]
        assert task.tfds_name == f"glue/{name}" and task.is_pair == (len(keys) == 2)
        assert task.is_regression == (name == "stsb")
        assert get_task(name.upper()) is task and get_task(task) is task
    mnli = get_task("mnli")
    assert mnli.validation_splits == ("validation_matched", "validation_mismatched")
    assert mnli.test_splits == ("test_matched", "test_mismatched")
    assert get_task("rte").validation_splits == ("validation",) and get_task("ax").splits == ("test",)
    metrics = {"cola": ("mcc",), "mrpc": ("f1", "accuracy"), "qqp": ("f1", "accuracy"),
               "stsb": ("pearson", "spearman"), "sst2": ("accuracy",), "mnli": ("accuracy",)}
    for name, names in metrics.items():
        assert get_task(name).metric_names == names


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown GLUE task 'squad'.*cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"):
        get_task("squad")


# ---------------------------------------------------------------------------------------------- TSV reader
E = Example
EXPECTED_TSV = {
    ("cola", "train"): [E("The cat sat on the mat.", None, 1, 0), E("The cat sat the mat on.", None, 0, 1),
                        E('She said "hello" and left.', None, 1, 2), E("Him saw we yesterday.", None, 0, 3)],
    ("cola", "validation"): [E("Which book did you wonder whether read?", None, 0, 0),
                             E("Which book did you read?", None, 1, 1)],
    ("cola", "test"): [E("They has gone home.", None, None, 0), E("We have gone home.", None, None, 1)],
    ("sst2", "train"): [E('a warm , funny and " unexpected " delight ', None, 1, 0),
                        E("the plot is as thin as the paper it 's printed on ", None, 0, 1),
                        E("worth seeing twice ", None, 1, 2)],
    ("sst2", "validation"): [E("it 's a dull , lifeless affair . ", None, 0, 0), E("a small gem . ", None, 1, 1)],
    ("sst2", "test"): [E("nothing here works . ", None, None, 0), E("sharp and tender . ", None, None, 1),
                       E("an ' ok ' movie ", None, None, 2)],
    ("mrpc", "train"): [
        E("The company said profits rose 10 percent.", "Profits rose by 10 percent, the company said.", 1, 0),
        E("He arrived on Monday.", "She left the city on Friday night.", 0, 1),
        E('Officials called the plan "a good start".', "The plan was called a good start by officials.", 1, 2)],
    ("mrpc", "validation"): [
        E("Shares fell 3 percent in early trading.", "The index closed higher for the week.", 0, 0),
        E("The vote was delayed until June.", "Lawmakers postponed the vote to June.", 1, 1)],
    ("mrpc", "test"): [E("The bridge opened in 1932.", "The bridge was opened in 1932.", None, 0),
                       E("Rain is expected tomorrow.", "The team won its third game.", None, 1)],
    ("qqp", "train"): [
        E("How do I learn to cook rice?", "What is the best way to cook rice?", 1, 0),
        E("Why is the sky blue?", "How far away is the moon?", 0, 1),
        E('What\'s a good "first" programming language?', "Which programming language should I learn first?", 1, 2)],
    ("qqp", "validation"): [E("Can dogs eat grapes?", "Are grapes safe for dogs?", 1, 0),
                            E("Where is Peru?", "What do pandas eat?", 0, 1)],
    ("qqp", "test"): [E("Is tea healthy?", "Is green tea good for you?", None, 0),
                      E("How tall is a giraffe?", "How do bees make honey?", None, 1)],
    ("stsb", "train"): [E("A plane is taking off.", "An airplane is taking off.", 5.0, 0),
                        E("A man is playing a flute.", "A man is eating a banana.", 0.5, 1),
                        E("Stocks rise in early trade", "Shares climb at the open", 3.8, 2)],
    ("stsb", "validation"): [E("A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0, 0),
                             E("A woman is slicing an onion.", "A dog runs in the park.", 0.0, 1)],
    ("stsb", "test"): [E("A girl is styling her hair.", "A girl is brushing her hair.", None, 0),
                       E("Storm hits the coast", "Team wins the final", None, 1)],
    ("mnli", "train"): [E("The old man sat by the fire.", "A man was sitting near a fire.", 0, 0),
                        E("The office closes at five.", "The office may stay open late on Fridays.", 1, 1),
                        E("Nobody came to the party.", "The party was crowded.", 2, 2)],
    ("mnli", "validation_matched"): [
        E("The museum is free on Sundays.", "You can visit the museum without paying on Sunday.", 0, 0),
        E("She closed the door quietly.", "She slammed the door.", 2, 1)],
    ("mnli", "validation_mismatched"): [
        E("We thank you for your gift.", "The gift was generous.", 1, 0),
        E('The word "set" has many meanings.', "The word set means only one thing.", 2, 1),
        E("Cotton grows in warm climates.", "Cotton is a plant.", 0, 2)],
    ("mnli", "test_matched"): [E("The beach is an hour away.", "The beach is nearby.", None, 0)],
    ("mnli", "test_mismatched"): [E("Please reply by May.", "A reply is requested.", None, 0),
                                  E("The flight left on time.", "The flight was late.", None, 1)],
    ("qnli", "train"): [E("When did the bridge open?", "The bridge opened to traffic in 1932.", 0, 0),
                        E("Who designed the tower?", "The tower is 300 metres tall.", 1, 1)],
    ("qnli", "validation"): [E("What colour is the flag?", "The flag is red and white.", 0, 0)],
    ("qnli", "test"): [E("How long is the river?", "The river flows north.", None, 0)],
    ("rte", "train"): [E("Paris is the capital of France and its largest city.", "Paris is in France.", 0, 0),
                       E("The festival was cancelled because of rain.", "The festival took place as planned.", 1, 1),
                       E("A new library opened downtown last week.", "A library opened recently.", 0, 2)],
    ("rte", "validation"): [E("The company hired 200 workers.", "The company laid off workers.", 1, 0)],
    ("rte", "test"): [E("The lake froze in January.", "The lake was frozen.", None, 0)],
    ("wnli", "train"): [  # WNLI's 1 is entailment, class 1 of ("not_entailment", "entailment")
        E("The trophy didn't fit in the case because it was too big.", "The trophy was too big.", 1, 0),
        E("The trophy didn't fit in the case because it was too big.", "The case was too big.", 0, 1)],
    ("wnli", "validation"): [E("Joan thanked Susan for the help she had given.", "Susan had given help.", 1, 0)],
    ("wnli", "test"): [E("The dog chased the cat because it was hungry.", "The cat was hungry.", None, 0)],
    ("ax", "test"): [E("The cat sat on the mat.", "The cat did not sit on the mat.", None, 0),
                     E("Some dogs bark.", "All dogs bark.", None, 1), E("John bought a red car.", "John bought a car.",
                                                                        None, 2)],
}


def test_fixtures_cover_every_split_of_every_task():
    assert {key for key in EXPECTED_TSV} == {(name, split) for name in TASK_NAMES for split in get_task(name).splits}


@pytest.mark.parametrize("name, split", sorted(EXPECTED_TSV))
def test_tsv_reader_on_the_official_layout(name, split):
    examples = load_tsv_split(name, FIXTURES, split)
    assert examples == EXPECTED_TSV[name, split]
    assert load_split(get_task(name), FIXTURES, split) == examples
    for example in examples:
        if name == "stsb" and example.label is not None:
            assert isinstance(example.label, float)
        elif example.label is not None:
            assert isinstance(example.label, int)


def copy_task(tmp_path, directory):
    shutil.copytree(os.path.join(FIXTURES, directory), tmp_path / directory)
    return tmp_path / directory


def test_crlf_line_ends_and_trailing_blank_lines_are_accepted(tmp_path):
    task_dir = copy_task(tmp_path, "RTE")
    text = (task_dir / "train.tsv").read_text(encoding="utf-8")
    (task_dir / "train.tsv").write_bytes((text.replace("\n", "\r\n") + "\r\n\n").encode())
    assert load_tsv_split("rte", tmp_path, "train") == EXPECTED_TSV["rte", "train"]


def test_a_missing_file_is_named(tmp_path):
    copy_task(tmp_path, "MNLI")
    os.remove(tmp_path / "MNLI" / "dev_mismatched.tsv")
    with pytest.raises(FileNotFoundError, match=r"validation_mismatched.*mnli.*MNLI/dev_mismatched\.tsv"):
        load_tsv_split("mnli", tmp_path, "validation_mismatched")
    with pytest.raises(FileNotFoundError, match=r"CoLA/train\.tsv"):
        load_split("cola", tmp_path, "train")


def test_unknown_split_lists_the_tasks_splits():
    with pytest.raises(ValueError, match="task mnli has no split 'validation'.*validation_matched"):
        load_tsv_split("mnli", FIXTURES, "validation")
    with pytest.raises(ValueError, match="task ax has no split 'train'"):
        load_tsv_split("ax", FIXTURES, "train")


def rewrite(path, old, new):
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.mark.parametrize("directory, task, split, file, old, new, match", [
    # a header without the column the task reads
    ("QQP", "qqp", "train", "train.tsv", "\tis_duplicate", "\tduplicate",
     r"train\.tsv: the header lacks the column\(s\) \['is_duplicate'\].*found \['id', 'qid1'"),
    ("MNLI", "mnli", "validation_matched", "dev_matched.tsv", "\tsentence2\t", "\thypothesis\t",
     r"dev_matched\.tsv: the header lacks the column\(s\) \['sentence2'\]"),
    # too few and too many fields, with the line number
    ("SST-2", "sst2", "validation", "dev.tsv", "a small gem . \t1", "a small gem . 1",
     r"dev\.tsv, line 3: expected 2 tab-separated fields as in the header, got 1"),
    ("CoLA", "cola", "train", "train.tsv", "ab12\t0\t*\tHim", "ab12\t0\tHim",
     r"train\.tsv, line 4: expected 4 tab-separated fields \(no header\), got 3"),
    ("STS-B", "stsb", "test", "test.tsv", "Storm hits the coast", "Storm hits\tthe coast",
     r"test\.tsv, line 3: expected 9 tab-separated fields as in the header, got 10"),
    ("RTE", "rte", "train", "train.tsv", "Paris is in France.\tentailment\n",
     "Paris is in France.\tentailment\n\n", r"train\.tsv, line 3: expected 4 .* got 1"),
    # labels outside the task's set
    ("MNLI", "mnli", "train", "train.tsv", "neutral\tneutral", "neutral\t-",
     r"train\.tsv, line 3: label '-' is not one of task mnli's labels \['entailment', 'neutral', 'contradiction'\]"),
    ("CoLA", "cola", "validation", "dev.tsv", "cd34\t1", "cd34\t2", r"dev\.tsv, line 2: label '2' .* \['0', '1'\]"),
    ("QNLI", "qnli", "train", "train.tsv", "\tnot_entailment", "\t1", r"line 3: label '1' is not one of task qnli"),
    ("STS-B", "stsb", "train", "train.tsv", "\t3.8", "\t5.5", r"line 4: label '5.5' is not a score in \[0, 5\]"),
    ("STS-B", "stsb", "validation", "dev.tsv", "\t0.000", "\tnan", r"line 3: label 'nan' is not a score"),
    ("STS-B", "stsb", "validation", "dev.tsv", "\t0.000", "\t", r"line 3: label '' is not a score"),
])
def test_malformed_files_are_reported_with_file_and_line(tmp_path, directory, task, split, file, old, new, match):
    task_dir = copy_task(tmp_path, directory)
    rewrite(task_dir / file, old, new)
    with pytest.raises(ValueError, match=match):
        load_tsv_split(task, tmp_path, split)


@pytest.mark.parametrize("directory, task, split, file, content, match", [
    ("WNLI", "wnli", "validation", "dev.tsv", "index\tsentence1\tsentence2\tlabel\n", "dev.tsv has no rows"),
    ("WNLI", "wnli", "test", "test.tsv", "", "test.tsv is empty"),
    ("CoLA", "cola", "validation", "dev.tsv", "\n", "dev.tsv has no rows"),
])
def test_an_empty_split_is_an_error(tmp_path, directory, task, split, file, content, match):
    task_dir = copy_task(tmp_path, directory)
    (task_dir / file).write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_tsv_split(task, tmp_path, split)


def test_the_bundled_movie_review_dataset_reads_as_sst2():
    train, dev = (load_split("sst2", VADER_MOVIES, split) for split in ("train", "validation"))
    assert len(train) + len(dev) >= 10_000
    assert len(dev) / (len(train) + len(dev)) == pytest.approx(0.2, abs=1e-3)
    for examples in (train, dev):
        assert 0.45 < np.mean([e.label for e in examples]) < 0.55
        assert all(e.text_a and e.text_a == " ".join(e.text_a.split()) for e in examples)
    assert not {e.text_a for e in train} & {e.text_a for e in dev}
    # The first snippet of the release (the first line of Pang & Lee's positive sentences) is rated positive.
    assert train[0].text_a.startswith("The Rock is destined to be the 21st Century's new ''Conan''")
    assert train[0].label == 1
    with pytest.raises(FileNotFoundError, match=r"SST-2/test\.tsv"):
        load_split("sst2", VADER_MOVIES, "test")


# ---------------------------------------------------------------------------------------------- tfds reader
def test_tfds_reader_through_mocked_builders():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow_datasets.text.glue  # noqa: F401  the mock needs the builder registered too

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        for name, split in [("cola", "train"), ("mnli", "validation_mismatched"), ("stsb", "validation"),
                            ("ax", "test")]:
            task = get_task(name)
            source = tfds.data_source(task.tfds_name, split=split)
            records = [source[i] for i in range(len(source))]
            examples = load_split(name, "tfds", split)
            assert len(examples) == len(records) == 4
            for example, record in zip(examples, records):
                assert example.text_a == record[task.text_keys[0]]
                assert example.text_b == (record[task.text_keys[1]] if task.is_pair else None)
                assert example.idx == int(record["idx"])
                if name == "stsb":
                    assert example.label == pytest.approx(float(record["label"]))
                else:
                    assert example.label == int(record["label"]) and 0 <= example.label < task.num_labels


def test_tfds_reader_decodes_bytes_and_maps_missing_labels_to_none():
    tfds = pytest.importorskip("tensorflow_datasets")
    rows = [{"premise": "Un caf\u00e9.".encode(), "hypothesis": b"A drink.", "label": np.int64(0), "idx": np.int32(7)},
            {"premise": b"P", "hypothesis": b"H", "label": np.int64(2), "idx": np.int32(3)}]
    tests = [{"premise": b"P", "hypothesis": b"H", "label": np.int64(-1), "idx": np.int32(0)}]
    scores = [{"sentence1": b"a", "sentence2": b"b", "label": np.float32(3.25), "idx": np.int32(0)},
              {"sentence1": b"c", "sentence2": b"d", "label": np.float32(-1.0), "idx": np.int32(1)}]
    calls = []

    def source(builder, split, **kwargs):
        calls.append((builder.name, builder.builder_config.name, split))
        return {("glue", "mnli"): {"train": rows, "test_matched": tests}, ("glue", "stsb"): {"test": scores},
                ("glue", "sst2"): {"train": []}, ("glue", "rte"): {"train": rows}}[
            builder.name, builder.builder_config.name][split]

    with tfds.testing.mock_data(as_data_source_fn=source):
        assert load_tfds_split("mnli", "train") == [E("Un caf\u00e9.", "A drink.", 0, 7), E("P", "H", 2, 3)]
        assert load_tfds_split("mnli", "test_matched") == [E("P", "H", None, 0)]
        assert load_tfds_split("stsb", "test") == [E("a", "b", 3.25, 0), E("c", "d", None, 1)]
        with pytest.raises(ValueError, match="glue/sst2 split train has no records"):
            load_tfds_split("sst2", "train")
        with pytest.raises(ValueError, match=r"glue/rte split train, record 0: no feature\(s\) \['sentence1'"):
            load_tfds_split("rte", "train")
        with pytest.raises(ValueError, match="task mnli has no split 'validation'"):
            load_tfds_split("mnli", "validation")
    assert calls[0] == ("glue", "mnli", "train")


# ---------------------------------------------------------------------------------------------- encoding
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue_tokenizer")
    lines = [e.text_a for examples in EXPECTED_TSV.values() for e in examples]
    lines += [e.text_b for examples in EXPECTED_TSV.values() for e in examples if e.text_b]
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines * 3) + "\n", encoding="utf-8")
    return train_spm_tokenizer([str(corpus)], str(root / "spm"), 200)


def sentences(n, seed=0, max_words=60):
    """n sentences of 1 to max_words words drawn from the fixtures' words."""
    words = " ".join(e.text_a for examples in EXPECTED_TSV.values() for e in examples).split()
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(words, size=rng.integers(1, max_words + 1))) for _ in range(n)]


def test_encoding_matches_the_tokenizer_and_keeps_labels(tokenizer):
    examples = EXPECTED_TSV["mnli", "validation_mismatched"] + EXPECTED_TSV["mnli", "test_matched"]
    encoded = encode_examples(examples, "mnli", tokenizer, max_length=128)
    assert len(encoded) == 4 and encoded.num_truncated == 0 and encoded.buckets == (32, 64, 128)
    np.testing.assert_array_equal(encoded.labels, [1, 2, 0, -1])
    assert encoded.labels.dtype == np.int32
    np.testing.assert_array_equal(encoded.idx, [0, 1, 2, 0])
    for i, example in enumerate(examples):
        reference = tokenizer(example.text_a, example.text_b)
        start, end = encoded.offsets[i], encoded.offsets[i + 1]
        assert encoded.input_ids[start:end].tolist() == reference["input_ids"]
        types = encoded.token_type_ids[start:end]
        assert types.tolist() == reference["token_type_ids"]
        # [CLS] a [SEP] has type 0, b [SEP] type 1
        n_first = len(tokenizer.encode(example.text_a)) + 2
        assert (types[:n_first] == 0).all() and (types[n_first:] == 1).all() and len(types) > n_first
        assert encoded.input_ids[start] == tokenizer.cls_id and encoded.input_ids[end - 1] == tokenizer.sep_id

    single = encode_examples(EXPECTED_TSV["sst2", "train"], "sst2", tokenizer, max_length=64)
    assert (single.token_type_ids == 0).all()
    scores = encode_examples(EXPECTED_TSV["stsb", "train"] + EXPECTED_TSV["stsb", "test"], "stsb", tokenizer, 64)
    assert scores.labels.dtype == np.float32
    np.testing.assert_allclose(scores.labels, [5.0, 0.5, 3.8, -1, -1], rtol=1e-7)


def test_truncation_is_longest_first_and_counted(tokenizer):
    texts = sentences(40)
    examples = [E(a, b, i % 2, i) for i, (a, b) in enumerate(zip(texts[:20], texts[20:]))]
    max_length = 24
    encoded = encode_examples(examples, "rte", tokenizer, max_length=max_length, buckets=(8, 16, 32, 64))
    full = [len(tokenizer(e.text_a, e.text_b)["input_ids"]) for e in examples]
    assert encoded.num_truncated == sum(n > max_length for n in full) > 0
    assert encoded.buckets == (8, 16, 24)
    np.testing.assert_array_equal(encoded.lengths, np.minimum(full, max_length))
    for i, example in enumerate(examples):
        expected = tokenizer(example.text_a, example.text_b, max_length=max_length, truncation="longest_first")
        assert encoded.input_ids[encoded.offsets[i]:encoded.offsets[i + 1]].tolist() == expected["input_ids"]


@pytest.mark.parametrize("examples, task, match", [
    ([E("a", None, 2, 5)], "sst2", r"idx=5: label 2 is not a class id in \[0, 2\) of task sst2"),
    ([E("a", "b", float("inf"), 1)], "stsb", "idx=1: label inf is not a finite score"),
    ([E("a", None, 1, 3)], "mrpc", "idx=3: task mrpc takes sentence pairs"),
    ([E("a", "b", 1, 4)], "cola", "idx=4: task cola takes single sentences"),
    ([], "cola", "no examples to encode for task cola"),
])
def test_encoding_rejects_examples_that_do_not_fit_the_task(tokenizer, examples, task, match):
    with pytest.raises(ValueError, match=match):
        encode_examples(examples, task, tokenizer, max_length=32)


def test_bucket_lengths_are_capped_at_max_length():
    assert bucket_lengths((32, 64, 128, 256, 512), 128) == (32, 64, 128)
    assert bucket_lengths((32, 64, 128, 256, 512), 100) == (32, 64, 100)
    assert bucket_lengths((64, 16, 16), 1000) == (16, 64, 1000)
    assert bucket_lengths((), 40) == (40,)
    with pytest.raises(ValueError, match="max_length=2"):
        bucket_lengths((8,), 2)
    with pytest.raises(ValueError, match="positive integers"):
        bucket_lengths((0, 8), 16)


@pytest.fixture(scope="module")
def encoded_pairs(tokenizer):
    texts = sentences(2 * 203, seed=1, max_words=12)
    examples = [E(a, b, i % 2, 1000 + i) for i, (a, b) in enumerate(zip(texts[:203], texts[203:]))]
    return encode_examples(examples, "mrpc", tokenizer, max_length=100, buckets=(16, 32, 64, 128))


def check_epoch(encoded: EncodedSplit, batches, batch_size):
    """Every example exactly once with weight 1, its tokens intact; padding rows weight 0; shapes from the buckets."""
    seen = []
    position = {int(v): i for i, v in enumerate(encoded.idx)}
    for batch in batches:
        assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "idx", "weights"}
        length = batch["input_ids"].shape[1]
        assert length in encoded.buckets
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            assert batch[key].shape == (batch_size, length) and batch[key].dtype == np.int32
        assert batch["labels"].shape == batch["idx"].shape == batch["weights"].shape == (batch_size,)
        assert batch["weights"].dtype == np.float32 and batch["idx"].dtype == np.int64
        real = batch["weights"] == 1
        assert ((batch["weights"] == 0) | real).all()
        assert (batch["idx"][~real] == -1).all()
        lengths = batch["attention_mask"].sum(axis=1)
        # the smallest bucket that holds the batch's longest row
        smaller = [b for b in encoded.buckets if b < length]
        assert lengths[real].max() > max(smaller, default=0)
        for row in np.flatnonzero(real):
            i = position[int(batch["idx"][row])]
            start, end = encoded.offsets[i], encoded.offsets[i + 1]
            n = end - start
            assert lengths[row] == n and batch["attention_mask"][row, :n].all()
            np.testing.assert_array_equal(batch["input_ids"][row, :n], encoded.input_ids[start:end])
            np.testing.assert_array_equal(batch["token_type_ids"][row, :n], encoded.token_type_ids[start:end])
            assert (batch["input_ids"][row, n:] == encoded.pad_id).all()
            assert batch["labels"][row] == encoded.labels[i]
        for row in np.flatnonzero(~real):  # a minimal valid sequence, never a fully masked row
            assert batch["input_ids"][row, :2].tolist() == [encoded.cls_id, encoded.sep_id]
            assert batch["attention_mask"][row].tolist() == [1, 1] + [0] * (length - 2)
        seen.extend(batch["idx"][real].tolist())
    assert sorted(seen) == sorted(encoded.idx.tolist())
    return seen


@pytest.mark.parametrize("shuffle, sort_window", [(False, 1), (True, 1), (True, 4), (False, 8)])
def test_batches_hold_every_example_once_in_fixed_shapes(encoded_pairs, shuffle, sort_window):
    batches = list(bucketed_batches(encoded_pairs, 16, shuffle=shuffle, seed=3, epoch=0, sort_window=sort_window))
    assert len(batches) == num_batches(encoded_pairs, 16) == 13  # 203 = 12 * 16 + 11
    seen = check_epoch(encoded_pairs, batches, 16)
    if not shuffle and sort_window == 1:
        assert seen == encoded_pairs.idx.tolist()
    assert batches[-1]["weights"].sum() == 11 and all(b["weights"].all() for b in batches[:-1])
    assert len({b["input_ids"].shape[1] for b in batches}) > 1  # several buckets are used


def test_sorting_within_windows_pads_less(encoded_pairs):
    def padded(sort_window):
        return sum(b["input_ids"].size for b in bucketed_batches(encoded_pairs, 8, True, 0, 0,
                                                                 sort_window=sort_window))

    assert padded(16) < padded(1)


def test_batches_are_deterministic_per_seed_and_epoch(encoded_pairs):
    def order(seed, epoch, **kwargs):
        return np.concatenate([b["idx"] for b in bucketed_batches(encoded_pairs, 16, True, seed, epoch, **kwargs)])

    np.testing.assert_array_equal(order(0, 0), order(0, 0))
    assert not np.array_equal(order(0, 0), order(0, 1))
    assert not np.array_equal(order(0, 0), order(1, 0))
    np.testing.assert_array_equal(order(5, 2, sort_window=4), order(5, 2, sort_window=4))
    # without sorting, the order is the seeded permutation of the examples
    perm = np.random.default_rng([0, 1]).permutation(len(encoded_pairs))
    np.testing.assert_array_equal(order(0, 1)[:len(perm)], encoded_pairs.idx[perm])


def test_drop_remainder_skips_the_incomplete_batch(encoded_pairs):
    batches = list(bucketed_batches(encoded_pairs, 16, True, 0, 0, sort_window=4, drop_remainder=True))
    assert len(batches) == num_batches(encoded_pairs, 16, drop_remainder=True) == 12
    assert all(b["weights"].all() for b in batches)
    assert len(np.unique(np.concatenate([b["idx"] for b in batches]))) == 192


def test_a_split_smaller_than_a_batch_gives_one_padded_batch(tokenizer):
    encoded = encode_examples(EXPECTED_TSV["cola", "test"], "cola", tokenizer, max_length=512)
    (batch,) = bucketed_batches(encoded, 8, shuffle=True, seed=0, epoch=0)
    assert batch["input_ids"].shape == (8, 32)
    np.testing.assert_array_equal(batch["weights"], [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.sort(batch["idx"][:2]), [0, 1])
    np.testing.assert_array_equal(batch["labels"], [-1, -1, 0, 0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="batch_size=0"):
        next(bucketed_batches(encoded, 0, shuffle=False))


# ---------------------------------------------------------------------------------------------- submission files
def read_submission(path):
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["index", "prediction"]
    return rows[1:]


@pytest.mark.parametrize("name, split, predictions, expected_file, expected", [
    ("cola", "test", [1, 0, 1], "CoLA.tsv", ["1", "0", "1"]),
    ("sst2", "test", [0, 0, 1], "SST-2.tsv", ["0", "0", "1"]),
    ("mrpc", "test", [1, 1, 0], "MRPC.tsv", ["1", "1", "0"]),
    ("qqp", "test", [0, 1, 1], "QQP.tsv", ["0", "1", "1"]),
    ("wnli", "test", [1, 0, 0], "WNLI.tsv", ["1", "0", "0"]),
    ("qnli", "test", [0, 1, 1], "QNLI.tsv", ["entailment", "not_entailment", "not_entailment"]),
    ("rte", "test", [1, 0, 1], "RTE.tsv", ["not_entailment", "entailment", "not_entailment"]),
    ("mnli", "test_matched", [0, 1, 2], "MNLI-m.tsv", ["entailment", "neutral", "contradiction"]),
    ("mnli", "test_mismatched", [2, 2, 0], "MNLI-mm.tsv", ["contradiction", "contradiction", "entailment"]),
    ("ax", "test", [1, 0, 2], "AX.tsv", ["neutral", "entailment", "contradiction"]),
    ("stsb", "test", [2.71828, -0.4, 5.2], "STS-B.tsv", ["2.718", "0.000", "5.000"]),
])
def test_submission_files_read_back_as_glue_expects(tmp_path, name, split, predictions, expected_file, expected):
    assert submission_file_name(name, split) == expected_file
    idx = np.array([2, 0, 1])  # written sorted by index
    path = write_submission(name, idx, np.array(predictions), tmp_path, split=split)
    assert path == str(tmp_path / expected_file)
    assert read_submission(path) == [[str(i), expected[j]] for i, j in zip([0, 1, 2], [1, 2, 0])]
    with open(path, "rb") as f:
        assert b"\r" not in f.read()


def test_submission_takes_logits_and_the_idx_of_encoded_test_splits(tmp_path, tokenizer):
    examples = EXPECTED_TSV["mnli", "test_mismatched"]
    encoded = encode_examples(examples, "mnli", tokenizer, 64)
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    path = write_submission("mnli", encoded.idx, logits, tmp_path, split="test_mismatched")
    assert read_submission(path) == [["0", "neutral"], ["1", "entailment"]]
    path = write_submission("stsb", [0, 1], np.array([[1.23449], [4.0]]), tmp_path)
    assert read_submission(path) == [["0", "1.234"], ["1", "4.000"]]


@pytest.mark.parametrize("name, split, idx, predictions, match", [
    ("rte", "test", [0, 1], [1], "2 indices but 1 predictions"),
    ("rte", "test", [0, 1], [0, 2], r"predicted class 2 is outside \[0, 2\)"),
    ("cola", "test", [0, 1], [0, -1], r"predicted class -1 is outside"),
    ("cola", "test", [0, 1], [0.0, 0.5], "class predictions must be integers"),
    ("mnli", "test_matched", [0, 1], [[0.1, 0.2], [0.3, 0.4]], r"must be \[n\] or \[n, 3\]"),
    ("stsb", "test", [0, 1], [1.0, float("nan")], "must be finite scores"),
    ("sst2", "test", [0, 0], [1, 1], "index 0 appears 2 times"),
    ("sst2", "test", [0, -1], [1, 1], "negative index -1"),
    ("sst2", "test", [], [], "no predictions"),
    ("mnli", "test", [0], [0], "task mnli has no split 'test'"),
    ("sst2", "validation", [0], [0], "GLUE takes predictions for the test split"),
])
def test_submission_rejects_bad_predictions(tmp_path, name, split, idx, predictions, match):
    with pytest.raises(ValueError, match=match):
        write_submission(name, np.array(idx, np.int64), np.array(predictions), tmp_path, split=split)
    assert not os.listdir(tmp_path)
