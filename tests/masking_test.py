"""N-gram masking against closed forms: exact selection counts, the 80/10/10 corruption rates, and the exact
distribution of selected sets on small rows (by hand, and by exhaustive enumeration of the specified process)."""

import math
import time
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from deberta_jax.data.masking import MaskingConfig, mask_batch

PAD, CLS, SEP, UNK = 0, 1, 2, 3
SPECIAL = {PAD, CLS, SEP, UNK}
VOCAB = 1000  # ids 0..999 are pieces; [MASK] is 1000
MASK = VOCAB
VOCAB_SIZE = VOCAB + 1


def random_batch(rng, batch, seq_len):
    """[CLS] text [SEP] text ... [SEP] [PAD]... rows of random lengths, with [UNK]s and inner [SEP]s in the text."""
    ids = rng.integers(4, VOCAB, size=(batch, seq_len))
    ids[rng.random((batch, seq_len)) < 0.02] = UNK
    ids[rng.random((batch, seq_len)) < 0.02] = SEP
    lengths = rng.integers(seq_len // 4, seq_len + 1, size=batch)
    attention = (np.arange(seq_len) < lengths[:, None]).astype(np.int32)
    ids[:, 0] = CLS
    ids[np.arange(batch), lengths - 1] = SEP
    ids[attention == 0] = PAD
    return ids, attention


def mask(ids, attention, seed, config=MaskingConfig(), mode="mlm"):
    return mask_batch(ids, attention, np.random.default_rng(seed), config, special_ids=SPECIAL, mask_id=MASK,
                      vocab_size=VOCAB_SIZE, mode=mode)


@pytest.fixture(scope="module")
def large():
    ids, attention = random_batch(np.random.default_rng(0), 2000, 128)
    return ids, attention, mask(ids, attention, seed=1)


def maskable_of(ids, attention):
    return (attention == 1) & ~np.isin(ids, list(SPECIAL) + [MASK])


def test_selection_count_is_the_rounded_rate(large):
    ids, attention, out = large
    maskable = maskable_of(ids, attention)
    n = maskable.sum(axis=1)
    expected = [min(max(1, round(0.15 * k)), math.ceil(0.15 * 128) + 3) for k in n.tolist()]
    np.testing.assert_array_equal(out["selected"].sum(axis=1), expected)
    assert abs(out["selected"].sum() / maskable.sum() - 0.15) <= 0.005
    assert not (out["selected"] & ~maskable).any()  # never special, never padding


def test_corruption_rates_are_80_10_10(large):
    ids, _, out = large
    selected, corrupted = out["selected"], out["input_ids"]
    n = selected.sum()
    to_mask = (corrupted == MASK) & selected
    to_random = (corrupted != MASK) & (corrupted != ids) & selected
    kept = (corrupted == ids) & selected
    assert abs(to_mask.sum() / n - 0.8) <= 0.01
    assert abs(to_random.sum() / n - 0.1) <= 0.01
    assert abs(kept.sum() / n - 0.1) <= 0.01
    np.testing.assert_array_equal(out["unchanged"], kept)
    np.testing.assert_array_equal(corrupted[~selected], ids[~selected])
    # random replacements: uniform over the non-special ids 4..999, whose mean is 501.5
    replacements = corrupted[to_random]
    assert not np.isin(replacements, list(SPECIAL) + [MASK]).any()
    assert replacements.min() >= 4 and replacements.max() < VOCAB
    assert abs(replacements.mean() - 501.5) < 5 * 288.4 / math.sqrt(len(replacements))  # sd of U{4..999} = 288.4


def test_prediction_slots(large):
    ids, _, out = large
    positions, labels, weights = out["masked_positions"], out["masked_labels"], out["masked_weights"]
    assert positions.shape == labels.shape == weights.shape == (2000, math.ceil(0.15 * 128) + 3)
    assert positions.dtype == labels.dtype == np.int32 and weights.dtype == np.float32
    assert out["input_ids"].dtype == np.int32 and out["selected"].dtype == out["unchanged"].dtype == bool
    for row in range(0, 2000, 7):
        real = weights[row] == 1
        n = int(real.sum())
        assert real[:n].all() and not real[n:].any()  # real slots first
        np.testing.assert_array_equal(positions[row, :n], np.flatnonzero(out["selected"][row]))  # ascending
        np.testing.assert_array_equal(labels[row, :n], ids[row, positions[row, :n]])
        assert (positions[row, n:] == 0).all() and (labels[row, n:] == 0).all() and (weights[row, n:] == 0).all()


def test_rtd_masks_every_selected_token():
    ids, attention = random_batch(np.random.default_rng(2), 64, 96)
    out = mask(ids, attention, seed=3, mode="rtd")
    np.testing.assert_array_equal(out["input_ids"], np.where(out["selected"], MASK, ids))
    assert not out["unchanged"].any() and out["selected"].any()
    np.testing.assert_array_equal(out["masked_labels"][out["masked_weights"] == 1], ids[out["selected"]])


def test_same_seed_same_masks():
    ids, attention = random_batch(np.random.default_rng(4), 16, 64)
    first, second, other = mask(ids, attention, 5), mask(ids, attention, 5), mask(ids, attention, 6)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert (first["selected"] != other["selected"]).any()


def test_edge_rows_and_fixed_slots():
    ids = np.array([[CLS, 10, 11, 12, 13, 14, 15, SEP], [CLS, SEP, PAD, PAD, PAD, PAD, PAD, PAD],
                    [CLS, 10, SEP, PAD, PAD, PAD, PAD, PAD]])
    attention = (ids != PAD).astype(np.int32)
    out = mask(ids, attention, seed=0, config=MaskingConfig(max_ngram=6))
    assert out["masked_positions"].shape == (3, 2 + 6)  # ceil(0.15 * 8) + 6 slots, more than the 8 positions
    np.testing.assert_array_equal(out["selected"].sum(axis=1), [1, 0, 1])  # round(0.9) = 1; nothing; at least 1
    assert out["selected"][2, 1] and out["masked_positions"][2, 0] == 1
    capped = mask(ids, attention, seed=0, config=MaskingConfig(mask_prob=1.0, max_predictions=4))
    assert capped["masked_positions"].shape == (3, 4)
    np.testing.assert_array_equal(capped["selected"].sum(axis=1), [4, 0, 1])


def test_fast_enough_for_the_input_pipeline():
    ids, attention = random_batch(np.random.default_rng(7), 64, 512)
    start = time.perf_counter()
    mask(ids, attention, seed=8)
    assert time.perf_counter() - start < 0.5


# ---------------------------------------------------------------------------------------------- span distribution
def exact_selection_distribution(maskable, target, max_ngram):
    """P(selected set) of the specified process, enumerated in exact arithmetic: a start uniform among unselected
    maskable positions, a length n with p(n) ~ 1/n, the span cut at a non-maskable or selected position, the row's
    end or the target; repeated until the target is met."""
    weights = [Fraction(1, n) for n in range(1, max_ngram + 1)]
    p_length = [w / sum(weights) for w in weights]
    result = Counter()

    def grow(chosen, probability):
        if len(chosen) == target:
            result[chosen] += probability
            return
        free = [i for i, m in enumerate(maskable) if m and i not in chosen]
        for start in free:
            for length, p in enumerate(p_length, 1):
                span = set(chosen)
                position = start
                while (position < start + length and position < len(maskable) and maskable[position]
                       and position not in span and len(span) < target):
                    span.add(position)
                    position += 1
                grow(frozenset(span), probability * p / len(free))

    grow(frozenset(), Fraction(1))
    return result


# [CLS] a b c d [SEP], two of four picked with max_ngram = 2 (p(1) = 2/3, p(2) = 1/3). A first span of two picks an
# adjacent pair (prob 1/4 * 1/3 each, not from d at the row's end); otherwise the first pick x is a single (prob 2/3,
# or 1 for d), and the second is uniform over the other three: P({x, y}) = 1/12 * (q_x + q_y).
BY_HAND_ROW_END = {(1, 2): Fraction(7, 36), (2, 3): Fraction(7, 36), (3, 4): Fraction(8, 36),
                   (1, 3): Fraction(4, 36), (2, 4): Fraction(5, 36), (1, 4): Fraction(5, 36)}
# [CLS] a b [SEP] c d [SEP]: the inner [SEP] cuts spans started at b like the row's end cuts those at d.
BY_HAND_INNER_SEP = {(1, 2): Fraction(8, 36), (4, 5): Fraction(8, 36), (2, 4): Fraction(5, 36),
                     (1, 4): Fraction(4, 36), (1, 5): Fraction(5, 36), (2, 5): Fraction(6, 36)}


@pytest.mark.parametrize("row, by_hand", [([CLS, 10, 11, 12, 13, SEP], BY_HAND_ROW_END),
                                          ([CLS, 10, 11, SEP, 12, 13, SEP], BY_HAND_INNER_SEP)])
def test_enumeration_matches_the_hand_derivation(row, by_hand):
    exact = exact_selection_distribution([t not in SPECIAL for t in row], target=2, max_ngram=2)
    assert {tuple(sorted(s)): p for s, p in exact.items()} == by_hand


@pytest.mark.parametrize("row, mask_prob, max_ngram", [
    ([CLS, 10, 11, 12, 13, SEP], 0.5, 2),              # target 2 of 4
    ([CLS, 10, 11, SEP, 12, 13, SEP], 0.5, 2),         # target 2 of 4, split by [SEP]
    ([CLS] + list(range(10, 16)) + [SEP], 0.5, 3),     # target 3 of 6: tells p(2) = 3/11 from p(3) = 2/11
    ([CLS, 10, UNK, 11, 12, 13, 14, SEP], 0.6, 3),     # target 3 of 5 around an [UNK]
    ([CLS] + list(range(10, 15)) + [SEP], 0.4, 1),     # unigrams: uniform over the 10 pairs
])
def test_selected_sets_follow_the_exact_distribution(row, mask_prob, max_ngram):
    maskable = [t not in SPECIAL for t in row]
    target = max(1, round(mask_prob * sum(maskable)))
    exact = exact_selection_distribution(maskable, target, max_ngram)
    n_rows = 20000
    ids = np.tile(np.array(row), (n_rows, 1))
    out = mask(ids, np.ones_like(ids), seed=11, config=MaskingConfig(mask_prob=mask_prob, max_ngram=max_ngram))
    observed = Counter(frozenset(np.flatnonzero(r).tolist()) for r in out["selected"])
    assert set(observed) <= set(exact)
    for chosen, p in exact.items():
        # 4.5 standard deviations of a frequency over 20000 rows, at most 0.016
        assert abs(observed[chosen] / n_rows - float(p)) <= 4.5 * math.sqrt(p * (1 - p) / n_rows), sorted(chosen)


def test_mean_span_length_on_sparse_rows():
    # At 1% of 2000 tokens, spans seldom touch each other or the row's end, so runs of selected tokens are spans and
    # their mean length is E[n] = 3 / (1 + 1/2 + 1/3) = 18/11, less a little because the target of 20 cuts the last
    # of a row's ~12 spans short now and then (by at most 2 tokens). p(n) uniform would give ~2, p(n) ~ 1/n^2 ~1.35.
    ids = np.full((400, 2002), 10)
    ids[:, 0], ids[:, -1] = CLS, SEP
    out = mask(ids, np.ones_like(ids), seed=12, config=MaskingConfig(mask_prob=0.01, max_ngram=3))
    selected = out["selected"]
    runs = (selected[:, 1:] & ~selected[:, :-1]).sum()
    lengths = selected.sum() / runs
    assert 18 / 11 - 0.06 < lengths < 18 / 11 + 0.03


# ---------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("field, value", [("mask_prob", 0.0), ("mask_prob", 1.5), ("max_ngram", 0),
                                          ("max_ngram", 2.5), ("mask_token_prob", -0.1),
                                          ("random_token_prob", 1.1), ("random_token_prob", 0.3),
                                          ("max_predictions", 0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"MaskingConfig.{field}="):
        MaskingConfig(**{field: value})


def test_bad_arguments():
    ids, attention = random_batch(np.random.default_rng(0), 2, 16)
    with pytest.raises(ValueError, match="mode='electra'"):
        mask(ids, attention, 0, mode="electra")
    with pytest.raises(ValueError, match="attention_mask shape"):
        mask(ids, attention[:, :8], 0)
    with pytest.raises(ValueError, match=r"\[batch, seq\]"):
        mask(ids[0], attention[0], 0)
    with pytest.raises(ValueError, match="mask_id=1001"):
        mask_batch(ids, attention, np.random.default_rng(0), MaskingConfig(), special_ids=SPECIAL, mask_id=1001,
                   vocab_size=VOCAB_SIZE)
