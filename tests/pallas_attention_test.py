"""Fused Pallas disentangled attention against the dense score path of attention.py (interpret mode on CPU).

Shapes stay tiny because the Pallas interpreter is slow; blocks of 16 still give several tiles per axis, ragged
lengths, and every window / carry path of the kernels.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deberta_jax.model.attention import content_to_content, content_to_position, masked_softmax, position_to_content
from deberta_jax.model.counter_dropout import keep_mask
from deberta_jax.model.pallas_attention import KERNELS, pallas_attention
from deberta_jax.model.relative_positions import relative_embedding_index, relative_offset_rows
from deberta_jax.model.relative_scores import expand_to_offsets

HEADS, HEAD_DIM, SCALE = 2, 16, 7.0
TOL = 1e-5


def dense_attention(query, key, value, pos_key, pos_query, query_mask, key_mask, rel, rate=0.0, seed=None):
    """The dense path: gathered c2p / p2c, masked fp32 softmax, a materialised counter-dropout mask."""
    batch, q_len, heads, _ = query.shape
    k_len = key.shape[1]
    index = relative_embedding_index(q_len, k_len, *rel)
    scores = content_to_content(query, key)
    if pos_key is not None:
        scores = scores + content_to_position(query, pos_key, index)
    if pos_query is not None:
        scores = scores + position_to_content(key, pos_query, index)
    probs = masked_softmax(scores / SCALE, (query_mask[:, :, None] & key_mask[:, None, :])[:, None])
    if rate > 0:
        b, h, i, j = (jnp.arange(n).reshape([-1 if a == n_axis else 1 for a in range(4)])
                      for n_axis, n in enumerate((batch, heads, q_len, k_len)))
        probs = probs * keep_mask(seed, b, h, i, j, heads, k_len, rate) / (1 - rate)
    return jnp.einsum("bhqk,bkhd->bqhd", probs.astype(value.dtype), value)


def fused_attention(query, key, value, pos_key, pos_query, query_mask, key_mask, rel, rate=0.0, seed=None,
                    blocks=(16, 16), kernels="triton"):
    """The fused path (the interpreter running the `kernels` flavour), fed per-offset tables built the way the
    model builds them."""
    rows = relative_offset_rows(query.shape[1], key.shape[1], *rel)
    c2p = None if pos_key is None else expand_to_offsets(pos_key, rows[::-1])
    p2c = None if pos_query is None else expand_to_offsets(pos_query, rows)
    return pallas_attention(query, key, value, c2p, p2c, query_mask, key_mask, scale=SCALE, block_q=blocks[0],
                            block_k=blocks[1], dropout_rate=rate, dropout_seed=seed, kernels=kernels)


def make_inputs(seed, batch, q_len, k_len, span, terms, dtype=jnp.float32):
    """Random q, k, v [B, L, H, D], relative tables [2 * span, H, D] (None for absent terms), and masks where
    the last batch row is padded: keys and queries past 60% of the length are masked (fully masked rows)."""
    rng = np.random.default_rng(seed)
    normal = lambda *shape: jnp.asarray(rng.normal(size=shape), dtype)
    query = normal(batch, q_len, HEADS, HEAD_DIM)
    key, value = normal(batch, k_len, HEADS, HEAD_DIM), normal(batch, k_len, HEADS, HEAD_DIM)
    pos_key = normal(2 * span, HEADS, HEAD_DIM) if "c2p" in terms else None
    pos_query = normal(2 * span, HEADS, HEAD_DIM) if "p2c" in terms else None
    real_q = np.full(batch, q_len)
    real_k = np.full(batch, k_len)
    real_q[-1], real_k[-1] = int(0.6 * q_len), int(0.6 * k_len)
    query_mask = jnp.asarray(np.arange(q_len)[None] < real_q[:, None])
    key_mask = jnp.asarray(np.arange(k_len)[None] < real_k[:, None])
    return (query, key, value, pos_key, pos_query), query_mask, key_mask


def outputs_and_grads(attention, diff_args, query_mask, key_mask, rel, cotangent, **kw):
    """The context and the gradients of <context, cotangent> w.r.t. q, k, v and the present relative tables."""
    present = [i for i, x in enumerate(diff_args) if x is not None]

    def loss(*xs):
        args = list(diff_args)
        for i, x in zip(present, xs):
            args[i] = x
        out = attention(*args, query_mask, key_mask, rel, **kw)
        return jnp.sum(out.astype(jnp.float32) * cotangent), out

    grad_fn = jax.jit(jax.grad(loss, argnums=tuple(range(len(present))), has_aux=True))
    grads, out = grad_fn(*[diff_args[i] for i in present])
    names = ("query", "key", "value", "pos_key", "pos_query")
    by_name = dict.fromkeys(names) | {names[i]: g for i, g in zip(present, grads)}
    return out, by_name


def assert_match(fused, dense, atol):
    (out_f, grads_f), (out_d, grads_d) = fused, dense
    np.testing.assert_allclose(np.asarray(out_f, np.float32), np.asarray(out_d, np.float32), atol=atol, rtol=0)
    for name, g in grads_d.items():
        if g is None:
            assert grads_f[name] is None
            continue
        np.testing.assert_allclose(np.asarray(grads_f[name], np.float32), np.asarray(g, np.float32), atol=atol,
                                   rtol=0, err_msg=f"gradient w.r.t. {name}")


CASES = {
    # name: (batch, q_len, k_len, terms, relative (span, buckets, max_position), blocks)
    "both_log_buckets_ragged": (2, 40, 40, ("c2p", "p2c"), (8, 8, 32), (16, 16)),
    "c2p_only_no_buckets_divisible": (1, 32, 32, ("c2p",), (24, -1, -1), (16, 16)),
    "p2c_only_cross_lengths": (2, 20, 36, ("p2c",), (8, 8, 32), (16, 16)),
    "both_unequal_blocks": (1, 40, 24, ("c2p", "p2c"), (16, -1, -1), (16, 32)),
    # Mosaic's own tile (128) with two tiles per axis, the second ragged.
    "both_tpu_tiles_ragged": (2, 200, 160, ("c2p", "p2c"), (64, 32, 256), (128, 128)),
}


# The Triton flavour's one-hot cubes make 128-row tiles too slow to interpret; Mosaic's rolls take them.
FLAVOURED_CASES = [(case, "triton") for case in CASES if case != "both_tpu_tiles_ragged"] + [
    (case, "mosaic") for case in CASES]


@pytest.mark.slow
@pytest.mark.parametrize("case, kernels", FLAVOURED_CASES)
def test_matches_dense_fp32(case, kernels):
    batch, q_len, k_len, terms, rel, blocks = CASES[case]
    diff_args, query_mask, key_mask = make_inputs(0, batch, q_len, k_len, rel[0], terms)
    cotangent = jnp.asarray(np.random.default_rng(1).normal(size=(batch, q_len, HEADS, HEAD_DIM)), jnp.float32)
    fused = outputs_and_grads(fused_attention, diff_args, query_mask, key_mask, rel, cotangent, blocks=blocks,
                              kernels=kernels)
    dense = outputs_and_grads(dense_attention, diff_args, query_mask, key_mask, rel, cotangent)
    assert_match(fused, dense, TOL)


@pytest.mark.slow
@pytest.mark.parametrize("kernels", KERNELS)
def test_fully_masked_row_is_uniform_over_real_keys(kernels):
    # Padding K = 40 to 48 must not change the uniform 1/40 that the dense path gives a fully masked row.
    diff_args, query_mask, key_mask = make_inputs(2, 2, 24, 40, 8, ("c2p", "p2c"))
    out = fused_attention(*diff_args, query_mask, key_mask, (8, 8, 32), kernels=kernels)
    value = diff_args[2]
    assert not bool(query_mask[1, -1])
    np.testing.assert_allclose(out[1, -1], value[1].mean(axis=0), atol=TOL, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("kernels", KERNELS)
def test_dropout_matches_dense_mask(kernels):
    batch, q_len, k_len, rel, rate = 2, 24, 24, (8, 8, 32), 0.1
    diff_args, query_mask, key_mask = make_inputs(3, batch, q_len, k_len, rel[0], ("c2p", "p2c"))
    cotangent = jnp.asarray(np.random.default_rng(4).normal(size=(batch, q_len, HEADS, HEAD_DIM)), jnp.float32)
    seed = jnp.uint32(1234)
    fused = outputs_and_grads(fused_attention, diff_args, query_mask, key_mask, rel, cotangent, rate=rate,
                              seed=seed, kernels=kernels)
    dense = outputs_and_grads(dense_attention, diff_args, query_mask, key_mask, rel, cotangent, rate=rate,
                              seed=seed)
    assert_match(fused, dense, TOL)
    no_dropout = dense_attention(*diff_args, query_mask, key_mask, rel)
    assert float(jnp.abs(no_dropout - dense[0]).max()) > 0.1, "the dropout mask dropped nothing"


@pytest.mark.slow
@pytest.mark.parametrize("kernels", KERNELS)
def test_bf16_close_to_fp32_dense(kernels):
    batch, q_len, k_len, rel = 2, 40, 40, (8, 8, 32)
    diff_args, query_mask, key_mask = make_inputs(5, batch, q_len, k_len, rel[0], ("c2p", "p2c"), jnp.bfloat16)
    cotangent = jnp.asarray(np.random.default_rng(6).normal(size=(batch, q_len, HEADS, HEAD_DIM)), jnp.float32)
    fused = outputs_and_grads(fused_attention, diff_args, query_mask, key_mask, rel, cotangent, kernels=kernels)
    assert fused[0].dtype == jnp.bfloat16 and fused[1]["pos_key"].dtype == jnp.bfloat16
    as_f32 = [None if x is None else x.astype(jnp.float32) for x in diff_args]
    dense = outputs_and_grads(dense_attention, as_f32, query_mask, key_mask, rel, cotangent)
    # bf16 keeps 8 bits of mantissa; the dense path in bf16 lands about 5e-3 from fp32 here, like the fused one.
    assert_match(fused, dense, 2e-2)


def test_rejects_bad_arguments():
    diff_args, query_mask, key_mask = make_inputs(0, 1, 16, 16, 8, ("c2p",))
    with pytest.raises(ValueError, match="block_q"):
        fused_attention(*diff_args, query_mask, key_mask, (8, -1, -1), blocks=(24, 16))
    with pytest.raises(ValueError, match="dropout_seed"):
        fused_attention(*diff_args, query_mask, key_mask, (8, -1, -1), rate=0.1)
    with pytest.raises(ValueError, match="kernels must be one of"):
        fused_attention(*diff_args, query_mask, key_mask, (8, -1, -1), kernels="mosaic-gpu")


def _export(fn, args, platform):
    # Lowering Pallas for Triton needs the target GPU's compute capability. With no GPU present, jax >= 0.11 takes it
    # from the abstract mesh's device (0.10 assumed sm_90); name the H200 (sm_90) that the GPU check runs on.
    target = jax.sharding.AbstractDevice(device_kind="NVIDIA H200", num_cores=None, platform="gpu")
    mesh = jax.sharding.AbstractMesh((1,), ("x",), abstract_device=target)
    with jax.sharding.use_abstract_mesh(mesh):
        return jax.export.export(jax.jit(fn), platforms=[platform], disabled_checks=[
            jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")])(*args)


def test_forward_and_backward_lower_to_triton_for_cuda():
    batch, length, heads, dim = 2, 72, 2, 32
    bf16 = jnp.bfloat16
    shape = jax.ShapeDtypeStruct
    args = (shape((batch, length, heads, dim), bf16), shape((batch, length, heads, dim), bf16),
            shape((batch, length, heads, dim), bf16), shape((2 * length - 1, heads, dim), bf16),
            shape((2 * length - 1, heads, dim), bf16), shape((batch, length), jnp.bool_),
            shape((batch, length), jnp.bool_), shape((), jnp.uint32))

    def forward(q, k, v, c2p, p2c, qm, km, seed):
        return pallas_attention(q, k, v, c2p, p2c, qm, km, scale=8.0, block_q=32, block_k=16, dropout_rate=0.1,
                                dropout_seed=seed, interpret=False)

    def backward(q, k, v, c2p, p2c, qm, km, seed):
        loss = lambda *x: forward(*x, qm, km, seed).astype(jnp.float32).sum()
        return jax.grad(loss, argnums=(0, 1, 2, 3, 4))(q, k, v, c2p, p2c)

    try:
        texts = [_export(fn, args, "cuda").mlir_module() for fn in (forward, backward)]
    except (ValueError, NotImplementedError, ImportError) as err:
        if "Cannot lower pallas_call" in str(err) or isinstance(err, ImportError):
            pytest.skip(f"this jaxlib cannot lower Pallas for cuda: {err}")
        raise
    # Forward: one kernel; backward: the forward again (custom VJP residuals), dQ and dK/dV.
    assert [t.count("__gpu$xla.gpu.triton") for t in texts] == [1, 3]


def test_a_shard_with_its_offsets_draws_the_global_dropout_bits():
    # Batch row 1 and head 1 of a [2, 16, 2, 16] call, run alone as a device's shard would run it.
    diff_args, query_mask, key_mask = make_inputs(7, 2, 16, 16, 8, ("c2p",))
    query, key, value, pos_key, _ = diff_args
    c2p = expand_to_offsets(pos_key, relative_offset_rows(16, 16, 8, -1, -1)[::-1])
    run = lambda q, k, v, t, qm, km, **kw: pallas_attention(q, k, v, t, None, qm, km, scale=SCALE, block_q=16,
                                                          block_k=16, dropout_rate=0.5, dropout_seed=jnp.uint32(9),
                                                          **kw)
    whole = run(query, key, value, c2p, query_mask, key_mask)
    part = lambda x: x[1:, :, 1:]
    shard = run(part(query), part(key), part(value), c2p[:, 1:], query_mask[1:], key_mask[1:], first_row=1,
                first_head=1, total_heads=2)
    np.testing.assert_allclose(shard, part(whole), atol=TOL, rtol=0)
    unplaced = run(part(query), part(key), part(value), c2p[:, 1:], query_mask[1:], key_mask[1:])
    assert float(jnp.abs(unplaced - part(whole)).max()) > 0.1, "the offsets changed no dropout bit"


HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install 'jax[tpu]')")
def test_forward_and_backward_compile_through_mosaic_for_a_v5e_chip():
    """Ahead of time, on one chip of a v5e 2x2 (libtpu's topology; no TPU needed): bf16, dropout, two tiles of 128
    per axis with the second ragged. Forward: one kernel; backward: forward, dQ, dK/dV. No gather anywhere. XLA's
    FLOP count holds the kernels' matmuls (their cost estimates), in closed form below."""
    from deberta_jax.tpu.topologies import get_slice, slice_devices

    device = slice_devices(get_slice("v5e-4"))[0]
    replicated = jax.sharding.SingleDeviceSharding(device)
    batch, length, heads, dim = 2, 200, 2, 64
    shape = lambda *dims, dtype=jnp.bfloat16: jax.ShapeDtypeStruct(dims, dtype, sharding=replicated)
    args = (shape(batch, length, heads, dim), shape(batch, length, heads, dim), shape(batch, length, heads, dim),
            shape(2 * length - 1, heads, dim), shape(2 * length - 1, heads, dim),
            shape(batch, length, dtype=jnp.bool_), shape(batch, length, dtype=jnp.bool_), shape(dtype=jnp.uint32))

    def forward(q, k, v, c2p, p2c, qm, km, seed):
        return pallas_attention(q, k, v, c2p, p2c, qm, km, scale=8.0, block_q=128, block_k=128, dropout_rate=0.1,
                                dropout_seed=seed)

    def backward(q, k, v, c2p, p2c, qm, km, seed):
        loss = lambda *x: forward(*x, qm, km, seed).astype(jnp.float32).sum()
        return jax.grad(loss, argnums=(0, 1, 2, 3, 4))(q, k, v, c2p, p2c)

    compiled = [jax.jit(fn).lower(*args).compile() for fn in (forward, backward)]
    texts = [c.as_text() for c in compiled]
    assert [t.count('custom_call_target="tpu_custom_call"') for t in texts] == [1, 3]
    assert all(" gather(" not in t for t in texts)
    # Padded to 256 = 2 tiles of 128 per axis. Per (row, head): Q·K-like products cost 2 D flops per (query, key)
    # pair; a c2p (p2c) product 2 D per (query (key), window row) for each of the 2 key (query) tiles, W = 256 rows.
    # Forward: scores and P·V, c2p and p2c scores; backward kernels: 3 + 4 Q·K-like, 3 + 1 c2p and 1 + 3 p2c.
    padded, tiles, window = 256, 2, 256
    flops = lambda qk, rel: 2 * dim * batch * heads * (qk * padded ** 2 + rel * padded * tiles * window)
    counted = [(c.cost_analysis()[0] if isinstance(c.cost_analysis(), list) else c.cost_analysis())["flops"]
               for c in compiled]
    for count, closed in zip(counted, (flops(2, 2), flops(2 + 3 + 4, 2 + 4 + 4))):
        assert closed <= count <= 1.05 * closed, (count, closed)
