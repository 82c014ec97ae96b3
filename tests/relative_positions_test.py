"""Relative positions and buckets against the reference functions, offsets beyond 512 included."""

import numpy as np
import pytest
import torch
from transformers.models.deberta import modeling_deberta as ref_v1
from transformers.models.deberta_v2 import modeling_deberta_v2 as ref_v2

from deberta_jax.model.relative_positions import (
    build_relative_position, make_log_bucket_position, relative_embedding_index,
)

OFFSETS = np.concatenate([np.arange(-1100, 1101), [-5000, -513, -512, -511, 511, 512, 513, 5000]])


@pytest.mark.reference
@pytest.mark.parametrize("bucket_size,max_position", [(256, 512), (8, 64), (32, 128), (256, 1024)])
def test_log_buckets_match_reference(bucket_size, max_position):
    theirs = ref_v2.make_log_bucket_position(torch.from_numpy(OFFSETS), bucket_size, max_position).long().numpy()
    np.testing.assert_array_equal(make_log_bucket_position(OFFSETS, bucket_size, max_position), theirs)


def test_log_buckets_known_values():
    # Closed form: |r| <= 128 stays exact; r = ±511 maps to ±255 (bucket 256, max 512); buckets are odd in r.
    out = make_log_bucket_position(np.array([0, 1, -1, 127, 128, -128, 511, -511]), 256, 512)
    np.testing.assert_array_equal(out, [0, 1, -1, 127, 128, -128, 255, -255])
    np.testing.assert_array_equal(make_log_bucket_position(-OFFSETS, 256, 512),
                                  -make_log_bucket_position(OFFSETS, 256, 512))


@pytest.mark.reference
@pytest.mark.parametrize("q,k,buckets,max_pos", [(7, 7, -1, -1), (600, 600, 256, 512), (5, 9, 8, 64),
                                                  (40, 40, 8, 64)])
def test_build_relative_position_matches_reference(q, k, buckets, max_pos):
    theirs = ref_v2.build_relative_position(torch.zeros(q, 1), torch.zeros(k, 1), buckets, max_pos)[0].numpy()
    np.testing.assert_array_equal(build_relative_position(q, k, buckets, max_pos), theirs)


@pytest.mark.reference
def test_v1_relative_position_matches_reference():
    theirs = ref_v1.build_relative_position(torch.zeros(9, 1), torch.zeros(9, 1))[0].numpy()
    np.testing.assert_array_equal(build_relative_position(9, 9), theirs)


@pytest.mark.parametrize("seq,max_rel", [(10, 512), (40, 16), (16, 16)])
def test_v1_full_table_index_equals_reference_sliced_span(seq, max_rel):
    """The reference slices the table to att_span = min(seq, k) rows each side and clamps with that span; indexing
    the whole table with span k must address the same rows."""
    att_span = min(seq, max_rel)
    rel = build_relative_position(seq, seq)
    sliced = np.clip(rel + att_span, 0, 2 * att_span - 1) + (max_rel - att_span)
    np.testing.assert_array_equal(relative_embedding_index(seq, seq, max_rel), sliced)


def test_index_range_and_symmetry():
    index = relative_embedding_index(700, 700, 256, 256, 512)
    assert index.min() == 0 and index.max() == 511
    # Buckets are odd in r, so below the clamp idx[i, j] + idx[j, i] = 2 * span: p2c may use idx for the key side.
    index = relative_embedding_index(500, 500, 256, 256, 512)
    np.testing.assert_array_equal(index + index.T, np.full_like(index, 512))


@pytest.mark.parametrize("n,buckets,max_pos,consecutive", [(128, 256, 512, True), (600, 256, 512, False),
                                                           (9, 8, 64, False), (3, 8, 64, True)])
def test_expand_to_offsets_is_row_indexing(n, buckets, max_pos, consecutive):
    """Per-offset tables equal plain indexing, in both orders; consecutive rows take the slice path (no matmul)."""
    import jax
    import jax.numpy as jnp

    from deberta_jax.model.relative_scores import expand_to_offsets
    from deberta_jax.model.relative_positions import relative_offset_rows

    rows = relative_offset_rows(n, n, buckets, buckets, max_pos)
    assert bool(np.all(np.diff(rows) == 1)) == consecutive
    table = np.random.RandomState(0).randn(2 * buckets, 3, 4).astype(np.float32)
    for order in (rows, rows[::-1]):
        np.testing.assert_array_equal(np.asarray(expand_to_offsets(jnp.asarray(table), order)), table[order])
        jaxpr = str(jax.make_jaxpr(lambda t: expand_to_offsets(t, order))(table))
        assert ("dot_general" in jaxpr) == (not consecutive)
