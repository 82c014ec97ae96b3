"""Fused (flash-style) disentangled attention as Pallas kernels: forward, dQ and dK/dV, never holding [B, H, Q, K].

Shapes: B batch, Q query length, K key length, H heads, D head_dim; bq / bk the query / key tile sizes;
Qp / Kp the lengths padded up to whole tiles; nq = Qp / bq and nk = Kp / bk tiles; W = bq + bk the window rows;
C the chunk of window rows (`_Plan.chunk`). Inside the kernels sequences are [B, H, L, D], tables [H, rows, D],
masks [B, Qp, 1] / [B, 1, Kp] and row statistics [B, H, Qp, 1]: every block's last two dims are then either a
tile or the whole array dim, as Mosaic (TPU) requires, and Triton takes the same blocks.

Position terms per tile. For query tile [i0, i0 + bq) and key tile [j0, j0 + bk) the offsets i - j take
bq + bk - 1 consecutive values, so each position term of the tile reads one window of consecutive table rows:

  c2p: window rows c0 + w, c0 = Qp - bq - i0 + j0 (descending table); X = Q_tile · window^T is [bq, W] and
       c2p[a, b] = X[a, b + bq - 1 - a].
  p2c: window rows c0 + w, c0 = Kp - bk + i0 - j0 (ascending table); Z^T = K_tile · window^T is [bk, W] and
       p2c[a, b] = Z^T[b, a + bk - 1 - b].

Both are one "skew": row r of a [R, W] product read from column R - 1 - r on. The two lowerings put it in place
differently:

  Mosaic (TPU): one matmul per term and a strided lane roll (`pltpu.roll` with a per-row shift), which is the
    skew itself; the backward rolls the other way (zero-padded dScores to [R, W]) and takes two matmuls.
  Triton (GPU): Triton can neither slice nor gather a register tensor, so the window is cut into chunks of
    C = 16 rows (matmuls [bq, D] x [D, C] and [C, D] x [D, bk]) and each chunk is put in place by a one-hot
    select: an iota comparison over a [bq, bk, C] cube, summed over the chunk axis (exact: one non-zero term per
    score). The backward applies the same selects transposed. The select costs bq * bk * (bq + bk) compare-adds
    per tile per term and needs registers for the cube, so small tiles suit it: compiled by Triton for sm_90,
    16 x 16 tiles use no register spills, 32 x 32 spill a little, 64 x 64 spill kilobytes.

Table gradients. The dQ kernel (one program per (head, query tile) and its batch rows, looping over key tiles
inside) owns a strip of the c2p table gradient: consecutive key tiles' windows start bk rows apart, so the window
gradient is cut into chunks of C rows (gcd(bq, bk) on Mosaic), each chunk is finished once per batch row (added
to the previous rows' sum) and the overlap (bq rows) is carried to the next tile. Likewise the dK/dV kernel owns
p2c strips per (head, key tile). Summing over the batch keeps the strips at [H, tiles, strip_rows, D] rather than
B times that. On Mosaic the batch is the grid's last, sequential axis (grid (H, tiles, B)): the strip stays in
on-chip memory across it while one batch row's blocks at a time come in. On Triton the program loops over the
batch itself, reading global memory. The strips are folded into the [Q + K - 1, H, D] gradient outside the kernels
by summing shifted (padded) copies: no atomics, no scatter.

Residuals: the row maximum m and log of the row sum l are saved separately rather than as m + log l, because a
fully masked row has m = finfo.min, where adding log l would round away and give probabilities 1 instead of 1/K.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from deberta_jax.config import PALLAS_MIN_TILE, is_pallas_tile_size
from deberta_jax.model.attention_tiles import MASKED_SCORE, TilePlan, dropped, pad_axis, pad_table, window_starts
from deberta_jax.model.counter_dropout import keep_mask

_F32 = jnp.float32
# Rows per table chunk on Triton: the smallest matmul side its tensor-core dot accepts; it bounds the one-hot cube.
_CHUNK = PALLAS_MIN_TILE
KERNELS = ("triton", "mosaic")


@dataclasses.dataclass(frozen=True)
class _Plan(TilePlan):
    """The shared plan plus how the kernels are lowered."""

    # True: the interpreter everywhere; False: never; None: when lowering for a CPU (see `_run`).
    interpret: bool | None = None
    # The kernel flavour: "mosaic" (TPU: rolls, whole windows) or "triton" (GPU: one-hot selects over chunks).
    kernels: str = "triton"
    # Heads of the whole batch, to number (row, head) pairs of the dropout hash (more than `heads` in a shard).
    total_heads: int = 0
    # Set for the Triton lowering, whose threads need an explicit barrier to see each other's global writes.
    on_triton: bool = False

    @property
    def mosaic(self) -> bool:
        return self.kernels == "mosaic"

    @property
    def chunk(self) -> int:
        """Window rows per chunk: `_CHUNK` on Triton; on Mosaic the largest that whole tiles' steps are made of."""
        return math.gcd(self.block_q, self.block_k) if self.mosaic else _CHUNK

    @property
    def window_chunks(self) -> int:
        """Chunks per tile window: bq + bk rows cover the bq + bk - 1 offsets."""
        return (self.block_q + self.block_k) // self.chunk

    @property
    def table_rows(self) -> int:
        """Padded table length: one row beyond `padded_offsets`, so that every window of whole chunks lies inside."""
        return self.q_pad + self.k_pad


def _dot(a, b, contract=(1, 0)):
    """a @ b contracting a's axis contract[0] with b's axis contract[1], fp32 accumulation."""
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())), preferred_element_type=_F32)


def _positions(p: _Plan, start, size: int, axis: int):
    """start + [0, size) as int32 [size, 1] (axis 0) or [1, size] (axis 1). Mosaic builds 2-D iotas, Triton 1-D."""
    shape = (size, 1) if axis == 0 else (1, size)
    if p.mosaic:
        return start + lax.broadcasted_iota(jnp.int32, shape, axis)
    return start + jnp.arange(size, dtype=jnp.int32).reshape(shape)


# ------------------------------------------------------------------------------------- Triton: one-hot selects
def _c2p_select(p: _Plan, chunk: int) -> jnp.ndarray:
    """bool [bq, bk, C]: score (a, b) reads column u of c2p window chunk `chunk`."""
    a = jnp.arange(p.block_q)[:, None, None]
    b = jnp.arange(p.block_k)[None, :, None]
    u = jnp.arange(_CHUNK)[None, None, :]
    return u + chunk * _CHUNK == b + (p.block_q - 1) - a


def _p2c_select(p: _Plan, chunk: int) -> jnp.ndarray:
    """bool [bq, C, bk]: score (a, b) reads row u of p2c window chunk `chunk`."""
    a = jnp.arange(p.block_q)[:, None, None]
    u = jnp.arange(_CHUNK)[None, :, None]
    b = jnp.arange(p.block_k)[None, None, :]
    return u + chunk * _CHUNK == a + (p.block_k - 1) - b


def _selected_c2p(p: _Plan, q, window):
    """c2p scores [bq, bk] from the window chunks [C, D]."""
    terms = [jnp.sum(jnp.where(_c2p_select(p, t), _dot(q, chunk, (1, 1))[:, None, :], 0.0), axis=2)
             for t, chunk in enumerate(window)]
    return sum(terms[1:], terms[0])


def _selected_p2c(p: _Plan, k, window):
    """p2c scores [bq, bk] from the window chunks [C, D]."""
    terms = [jnp.sum(jnp.where(_p2c_select(p, t), _dot(chunk, k, (1, 1))[None, :, :], 0.0), axis=1)
             for t, chunk in enumerate(window)]
    return sum(terms[1:], terms[0])


def _selected_c2p_grads(p: _Plan, ds, q, window):
    """dScores [bq, bk] -> (dQ part [bq, D], window gradient chunks [C, D])."""
    dq, grads = 0.0, []
    for t, chunk in enumerate(window):
        # The transposed select gathers each window column's scores: dX [bq, C].
        dx = jnp.sum(jnp.where(_c2p_select(p, t), ds[:, :, None], 0.0), axis=1).astype(q.dtype)
        dq = dq + _dot(dx, chunk)
        grads.append(_dot(dx, q, (0, 0)))
    return dq, grads


def _selected_p2c_grads(p: _Plan, ds, k, window):
    """dScores [bq, bk] -> (dK part [bk, D], window gradient chunks [C, D])."""
    dk, grads = 0.0, []
    for t, chunk in enumerate(window):
        # The transposed select gathers each window row's scores: dZ [C, bk].
        dz = jnp.sum(jnp.where(_p2c_select(p, t), ds[:, None, :], 0.0), axis=0).astype(k.dtype)
        dk = dk + _dot(dz, chunk, (0, 0))
        grads.append(_dot(dz, k))
    return dk, grads


# ------------------------------------------------------------------------------------------- Mosaic: rolls
def _skew(x, cols: int):
    """x [R, R + cols] -> [R, cols] with out[r, c] = x[r, c + R - 1 - r].

    jnp.roll semantics (out[j] = x[j - shift]) with row r shifted by cols + 1 + r, i.e. by r + 1 - R modulo the
    width: a strided lane rotate on the TPU, no gather.
    """
    return pltpu.roll(x, cols + 1, 1, stride=1, stride_axis=0)[:, :cols]


def _flip_rows(x):
    """x [R, N] (R a multiple of 8) upside down. Mosaic has no reverse, and gathers only within one vreg (8
    sublanes): each 8-row slab is flipped by such a gather and the slabs are joined in reverse order."""
    rows, cols = x.shape
    flip = 7 - lax.broadcasted_iota(jnp.int32, (8, cols), 0)
    slabs = [jnp.take_along_axis(x[g:g + 8], flip, axis=0, mode="promise_in_bounds") for g in range(0, rows, 8)]
    return jnp.concatenate(slabs[::-1], axis=0)


def _unskew(d):
    """The transpose of `_skew`: d [R, cols] -> [R, R + cols] holding d[r, c] at column c + R - 1 - r, else 0.

    That shifts row r right by R - 1 - r: a negative stride, which Mosaic's strided rotate lacks; upside down it
    is a right shift by the row index (stride 1). Wrapped columns come from the zero padding (shifts < R).
    """
    rows, _ = d.shape
    padded = jnp.concatenate([_flip_rows(d), jnp.zeros((rows, rows), d.dtype)], axis=1)
    return _flip_rows(pltpu.roll(padded, 0, 1, stride=1, stride_axis=0))


def _rolled_term(rows, window, cols: int):
    """rows [R, D], window [R + cols, D] -> the skewed products [R, cols] (fp32)."""
    return _skew(_dot(rows, window, (1, 1)), cols)


def _rolled_grads(p: _Plan, d_term, rows, window):
    """d_term [R, cols] of `_rolled_term` -> (d rows [R, D], window gradient chunks [C, D])."""
    dx = _unskew(d_term).astype(rows.dtype)  # [R, W]
    grads = _dot(dx, rows, (0, 0))           # [W, D]
    return _dot(dx, window), [grads[t * p.chunk:(t + 1) * p.chunk] for t in range(p.window_chunks)]


# ------------------------------------------------------------------------------------- both flavours
def _c2p_scores(p: _Plan, q, window):
    return _rolled_term(q, window, p.block_k) if p.mosaic else _selected_c2p(p, q, window)


def _p2c_scores(p: _Plan, k, window):
    return _rolled_term(k, window, p.block_q).T if p.mosaic else _selected_p2c(p, k, window)


def _c2p_grads(p: _Plan, ds, q, window):
    return _rolled_grads(p, ds, q, window) if p.mosaic else _selected_c2p_grads(p, ds, q, window)


def _p2c_grads(p: _Plan, ds, k, window):
    return _rolled_grads(p, ds.T, k, window) if p.mosaic else _selected_p2c_grads(p, ds, k, window)


def _load_window(p: _Plan, table_ref, start):
    """The tile's table window, rows [start, start + bq + bk): one [W, D] array on Mosaic, [C, D] chunks on Triton."""
    if p.mosaic:
        return table_ref[pl.ds(pl.multiple_of(start, p.chunk), p.block_q + p.block_k), :]
    return [table_ref[pl.ds(start + t * _CHUNK, _CHUNK), :] for t in range(p.window_chunks)]


def _tile(p: _Plan, c2p_ref, p2c_ref, q, k, query_mask, key_mask, i0, j0):
    """Everything a kernel needs about tile (i0, j0) before the softmax.

    Args:
      q: [bq, D]; k: [bk, D]; query_mask: bool [bq, 1]; key_mask: bool [1, bk]; i0, j0: the tile's first row / key.
    Returns:
      scores fp32 [bq, bk] with masked pairs at finfo.min; pair bool [bq, bk] (both unmasked); real bool
      [1, bk] (key inside the unpadded length); the c2p and p2c windows (None if unused).
    """
    c2p_start, p2c_start = window_starts(p, i0, j0)
    c2p = None if c2p_ref is None else _load_window(p, c2p_ref, c2p_start)
    p2c = None if p2c_ref is None else _load_window(p, p2c_ref, p2c_start)
    s = _dot(q, k, (1, 1))
    if c2p is not None:
        s = s + _c2p_scores(p, q, c2p)
    if p2c is not None:
        s = s + _p2c_scores(p, k, p2c)
    pair = query_mask & key_mask
    real = _positions(p, j0, p.block_k, 1) < p.key_len
    scores = jnp.where(pair, s / p.scale, MASKED_SCORE)
    return scores, pair, real, c2p, p2c


def _dropout_bits(p: _Plan, seed_ref, head):
    """keep(batch, i0, j0) -> dropout keep bits [bq, bk] of tile (i0, j0), or None without dropout.

    The bits are `keep_mask` itself at global coordinates, so bit-identical to the dense mask: seed_ref holds
    uint32 [1, 3] (seed, the first batch row, the first head) of this call's shard. `head` is a program id read at
    the kernel's top level: the Pallas interpreter does not substitute program ids inside loops.
    """
    def keep(batch, i0, j0):
        if seed_ref is None:
            return None
        seed, first_row, first_head = (seed_ref[:, t:t + 1] for t in range(3))
        rows, cols = _positions(p, i0, p.block_q, 0), _positions(p, j0, p.block_k, 1)
        as_u32 = lambda x: jnp.asarray(x, jnp.int32).astype(jnp.uint32)
        return keep_mask(seed, first_row + as_u32(batch), first_head + as_u32(head), rows, cols, p.total_heads,
                         p.key_len, p.rate)

    return keep


def _write_chunks(p: _Plan, strip_ref, first_chunk, chunks, accumulate):
    """strip[chunk first_chunk + t] = chunks[t], plus what is there when `accumulate` (a traced bool).

    Only this program touches its strip, so the read-modify-write needs no atomics; `_sync_batch_rows` orders it
    across threads. Before the first batch row the memory is uninitialised, hence `where` rather than a multiply.
    """
    for t, chunk in enumerate(chunks):
        start = (first_chunk + t) * p.chunk
        rows = pl.ds(pl.multiple_of(start, p.chunk) if p.mosaic else start, p.chunk)
        strip_ref[rows, :] = chunk + jnp.where(accumulate, strip_ref[rows, :], 0.0)


def _sync_batch_rows(p: _Plan):
    """Called before each batch row's pass: makes the previous row's strip writes visible to every thread.

    Triton may give a chunk's load and store different thread layouts, so a thread can re-read a value another
    thread wrote; a CTA barrier (once per batch row) orders those. The interpreter and Mosaic run a program's body
    in order and need none.
    """
    if p.on_triton:
        pltriton.debug_barrier()


def _emit_chunks(p: _Plan, strip_ref, first_chunk, contributions, carry, step, accumulate):
    """Adds the carried overlap to this tile's window gradient, writes the `step` chunks no later tile touches.

    contributions: window_chunks arrays [C, D]; carry: the previous tile's chunks beyond its own step.
    Returns the new carry (the rest of this window, which the next tile's window overlaps).
    """
    totals = [c + carry[t] if t < len(carry) else c for t, c in enumerate(contributions)]
    _write_chunks(p, strip_ref, first_chunk, totals[:step], accumulate)
    return tuple(totals[step:])


def _zero_carry(p: _Plan, step: int, used: bool):
    """The initial overlap carry: the window's chunks beyond one loop step (none when the table is unused)."""
    return tuple(jnp.zeros((p.chunk, p.head_dim), _F32) for _ in range(p.window_chunks - step if used else 0))


def _split_refs(p: _Plan, refs):
    """Names the optional kernel operands: (c2p_ref | None, p2c_ref | None, seed_ref | None, rest)."""
    refs = list(refs)
    c2p_ref = refs.pop(0) if p.has_c2p else None
    p2c_ref = refs.pop(0) if p.has_p2c else None
    seed_ref = refs.pop(0) if p.rate > 0 else None
    return c2p_ref, p2c_ref, seed_ref, refs


def _tile_slice(p: _Plan, start, size: int):
    """pl.ds over one tile; on Mosaic with the alignment hint its aligned loads need."""
    return pl.ds(pl.multiple_of(start, size) if p.mosaic else start, size)


def _block_rows(p: _Plan):
    """(batch rows in a backward program's blocks, the first one's row in the call), as `_backward_blocks` lays
    them out: one per program on Mosaic, whose grid runs over the batch; all of them on Triton. Call it at the
    kernel's top level (program ids)."""
    return (1, pl.program_id(2)) if p.mosaic else (p.batch, 0)


def _forward_kernel(p: _Plan, q_ref, k_ref, v_ref, qm_ref, km_ref, *refs):
    """One query tile: online softmax over the key tiles. Writes o [bq, D], row max m [bq, 1], log row sum [bq, 1]."""
    c2p_ref, p2c_ref, seed_ref, (o_ref, m_ref, logl_ref) = _split_refs(p, refs)
    batch = pl.program_id(0)
    keep_bits = _dropout_bits(p, seed_ref, pl.program_id(1))
    i0 = pl.program_id(2) * p.block_q
    q = q_ref[...]
    query_mask = qm_ref[...] != 0

    def body(kj, carry):
        acc, m, l = carry
        j0 = kj * p.block_k
        keys = _tile_slice(p, j0, p.block_k)
        v = v_ref[keys, :]
        s, _, real, _, _ = _tile(p, c2p_ref, p2c_ref, q, k_ref[keys, :], query_mask, km_ref[:, keys] != 0, i0, j0)
        m_new = jnp.maximum(m, jnp.max(s, axis=1, keepdims=True))
        correction = jnp.exp(m - m_new)
        # Padded keys contribute nothing, not even to a fully masked row (which stays uniform over real keys).
        e = jnp.where(real, jnp.exp(s - m_new), 0.0)
        l = correction * l + jnp.sum(e, axis=1, keepdims=True)
        e = dropped(e, keep_bits(batch, i0, j0), p.rate)
        acc = correction * acc + _dot(e.astype(v.dtype), v)
        return acc, m_new, l

    init = (jnp.zeros((p.block_q, p.head_dim), _F32), jnp.full((p.block_q, 1), -jnp.inf, _F32),
            jnp.zeros((p.block_q, 1), _F32))
    acc, m, l = lax.fori_loop(0, p.k_tiles, body, init)
    o_ref[...] = (acc / l).astype(o_ref.dtype)
    m_ref[...] = m
    logl_ref[...] = jnp.log(l)


def _tile_grads(p: _Plan, s, pair, real, m, logl, do, v, delta, keep):
    """Recomputed probabilities [bq, bk] (before dropout) and dScores w.r.t. the unscaled sum of terms [bq, bk].
    m, logl, delta: [bq, 1]."""
    probs = jnp.where(real, jnp.exp(s - m - logl), 0.0)
    dp = dropped(_dot(do, v, (1, 1)), keep, p.rate)
    # Masked pairs get no gradient (the score was replaced by a constant), fully masked rows included.
    ds = jnp.where(pair, probs * (dp - delta), 0.0) / p.scale
    return probs, ds


def _dq_kernel(p: _Plan, q_ref, k_ref, v_ref, qm_ref, km_ref, do_ref, m_ref, logl_ref, delta_ref, *refs):
    """One query tile of one head and the block's batch rows (see `_block_rows`): dQ [rows, bq, D] and the tile's
    strip of the c2p table gradient [nk * bk + bq, D] summed over the batch (so strips cost H * nq rows of the table,
    not B * H * nq)."""
    c2p_ref, p2c_ref, seed_ref, outs = _split_refs(p, refs)
    dq_ref, strip_ref = outs if c2p_ref is not None else (outs[0], None)
    keep_bits = _dropout_bits(p, seed_ref, pl.program_id(0))
    i0 = pl.program_id(1) * p.block_q
    rows, first_row = _block_rows(p)
    step = p.block_k // p.chunk

    def batch_body(r, unused):
        _sync_batch_rows(p)
        b = first_row + r
        q, do = q_ref[r], do_ref[r]
        m, logl, delta = m_ref[r], logl_ref[r], delta_ref[r]
        query_mask = qm_ref[r] != 0

        def key_body(kj, carry):
            dq, strip_carry = carry
            j0 = kj * p.block_k
            keys = _tile_slice(p, j0, p.block_k)
            k, v = k_ref[r, keys, :], v_ref[r, keys, :]
            s, pair, real, c2p, _ = _tile(p, c2p_ref, p2c_ref, q, k, query_mask, km_ref[r, :, keys] != 0, i0, j0)
            _, ds = _tile_grads(p, s, pair, real, m, logl, do, v, delta, keep_bits(b, i0, j0))
            dq = dq + _dot(ds.astype(k.dtype), k)
            if c2p is not None:
                dq_c2p, window_grads = _c2p_grads(p, ds, q, c2p)
                dq = dq + dq_c2p
                strip_carry = _emit_chunks(p, strip_ref, kj * step, window_grads, strip_carry, step, b > 0)
            return dq, strip_carry

        init = (jnp.zeros((p.block_q, p.head_dim), _F32), _zero_carry(p, step, c2p_ref is not None))
        dq, strip_carry = lax.fori_loop(0, p.k_tiles, key_body, init)
        dq_ref[r] = dq.astype(dq_ref.dtype)
        if strip_ref is not None:
            _write_chunks(p, strip_ref, p.k_tiles * step, strip_carry, b > 0)
        return unused

    lax.fori_loop(0, rows, batch_body, 0)


def _dkv_kernel(p: _Plan, q_ref, k_ref, v_ref, qm_ref, km_ref, do_ref, m_ref, logl_ref, delta_ref, *refs):
    """One key tile of one head and the block's batch rows: dK, dV [rows, bk, D] and the tile's strip of the p2c
    table gradient [nq * bq + bk, D] summed over the batch."""
    c2p_ref, p2c_ref, seed_ref, outs = _split_refs(p, refs)
    dk_ref, dv_ref, strip_ref = outs if p2c_ref is not None else (*outs, None)
    keep_bits = _dropout_bits(p, seed_ref, pl.program_id(0))
    j0 = pl.program_id(1) * p.block_k
    rows, first_row = _block_rows(p)
    step = p.block_q // p.chunk

    def batch_body(r, unused):
        _sync_batch_rows(p)
        b = first_row + r
        k, v = k_ref[r], v_ref[r]
        key_mask = km_ref[r] != 0

        def query_body(qi, carry):
            dk, dv, strip_carry = carry
            i0 = qi * p.block_q
            queries = _tile_slice(p, i0, p.block_q)
            q, do = q_ref[r, queries, :], do_ref[r, queries, :]
            s, pair, real, _, p2c = _tile(p, c2p_ref, p2c_ref, q, k, qm_ref[r, queries, :] != 0, key_mask, i0, j0)
            keep = keep_bits(b, i0, j0)
            probs, ds = _tile_grads(p, s, pair, real, m_ref[r, queries, :], logl_ref[r, queries, :], do, v,
                                    delta_ref[r, queries, :], keep)
            dv = dv + _dot(dropped(probs, keep, p.rate).astype(do.dtype), do, (0, 0))
            dk = dk + _dot(ds.astype(q.dtype), q, (0, 0))
            if p2c is not None:
                dk_p2c, window_grads = _p2c_grads(p, ds, k, p2c)
                dk = dk + dk_p2c
                strip_carry = _emit_chunks(p, strip_ref, qi * step, window_grads, strip_carry, step, b > 0)
            return dk, dv, strip_carry

        zeros = jnp.zeros((p.block_k, p.head_dim), _F32)
        init = (zeros, zeros, _zero_carry(p, step, p2c_ref is not None))
        dk, dv, strip_carry = lax.fori_loop(0, p.q_tiles, query_body, init)
        dk_ref[r] = dk.astype(dk_ref.dtype)
        dv_ref[r] = dv.astype(dv_ref.dtype)
        if strip_ref is not None:
            _write_chunks(p, strip_ref, p.q_tiles * step, strip_carry, b > 0)
        return unused

    lax.fori_loop(0, rows, batch_body, 0)


@dataclasses.dataclass(frozen=True)
class _Blocks:
    """The grid of one kernel and its operands' BlockSpecs.

    axes: the grid's axes in order, "b" (batch row), "h" (head) and "t" (tile of `tiles`); without "b" every block
    holds the whole batch. rows: the blocks' batch extent: None squeezes it (one row per program), 1 keeps it (the
    kernel loops over one row) and B is the whole batch. Where "b" comes last it is "arbitrary" (sequential): the
    outputs whose index does not follow it (table strips) then stay in on-chip memory and sum the batch rows.
    """

    p: _Plan
    axes: str
    tiles: int
    rows: int | None

    @property
    def grid(self) -> tuple[int, ...]:
        sizes = {"b": self.p.batch, "h": self.p.heads, "t": self.tiles}
        return tuple(sizes[a] for a in self.axes)

    @property
    def semantics(self) -> tuple[str, ...]:
        return tuple("arbitrary" if a == "b" and a == self.axes[-1] else "parallel" for a in self.axes)

    def spec(self, block, index):
        """index(b, h, t) -> block indices; b is 0 on a grid without a batch axis."""
        def index_map(*ids):
            at = dict(zip(self.axes, ids))
            return index(at.get("b", 0), at["h"], at["t"])

        return pl.BlockSpec(block, index_map)

    # A tiled operand follows the grid's tile index, a full one is the whole padded length.
    def seq(self, length: int, tiled: bool):  # [B, H, L, D]
        return self.spec((self.rows, None, length, self.p.head_dim), lambda b, h, t: (b, h, t if tiled else 0, 0))

    def query_mask(self, length: int, tiled: bool):  # [B, Qp, 1]
        return self.spec((self.rows, length, 1), lambda b, h, t: (b, t if tiled else 0, 0))

    def key_mask(self, length: int, tiled: bool):  # [B, 1, Kp]
        return self.spec((self.rows, 1, length), lambda b, h, t: (b, 0, t if tiled else 0))

    def row_stat(self, length: int, tiled: bool):  # [B, H, Qp, 1]
        return self.spec((self.rows, None, length, 1), lambda b, h, t: (b, h, t if tiled else 0, 0))

    def strip(self, rows: int):
        """Table-gradient strips fp32 [H, tiles, rows, D] (`_strip_shape`): one per (head, tile), summed over the
        batch rows."""
        return self.spec((None, None, rows, self.p.head_dim), lambda b, h, t: (h, t, 0, 0))

    def optional(self, c2p, p2c, seed):
        """The specs of the tables [H, rows, D] (whole padded length of one head) and the seed [1, 3], each only
        when used."""
        table = self.spec((None, self.p.table_rows, self.p.head_dim), lambda b, h, t: (h, 0, 0))
        seed_spec = self.spec((1, 3), lambda b, h, t: (0, 0))
        return [s for x, s in ((c2p, table), (p2c, table), (seed, seed_spec)) if x is not None]


def _backward_blocks(p: _Plan, tiles: int) -> _Blocks:
    """Mosaic: grid (H, tiles, B), one batch row's blocks in on-chip memory at a time. Triton: grid (H, tiles),
    each program loops over the whole batch, whose blocks stay in global memory."""
    return _Blocks(p, "htb", tiles, 1) if p.mosaic else _Blocks(p, "ht", tiles, p.batch)


def _strip_shape(p: _Plan, tiles: int, rows: int):
    return jax.ShapeDtypeStruct((p.heads, tiles, rows, p.head_dim), _F32)


# Per tile of each kernel: how many [bq, bk] x D products (scores, dP, dV, dQ or dK), and how many c2p / p2c
# window products ([bq or bk, D] x [D, W]: the scores, plus the two gradient products in the kernel that owns that
# table's strips).
_MATMULS = {"fwd": (2, 1, 1), "dq": (3, 3, 1), "dkv": (4, 1, 3)}


def _bytes_accessed(grid, specs, arrays) -> int:
    """HBM traffic of the pipeline: a block moves again whenever its index changes from one grid step to the next,
    i.e. prod(grid[:a + 1]) times, a being the innermost grid axis its index follows."""
    total = 0
    for spec, x in zip(specs, arrays):
        origin = spec.index_map(*(0 for _ in grid))
        follows = [a for a, n in enumerate(grid)
                   if n > 1 and spec.index_map(*(int(i == a) for i in range(len(grid)))) != origin]
        moves = math.prod(grid[:follows[-1] + 1]) if follows else 1
        total += moves * math.prod(d or 1 for d in spec.block_shape) * x.dtype.itemsize
    return total


def _cost(p: _Plan, blocks: _Blocks, kernel: str, specs, arrays) -> pl.CostEstimate:
    """The kernel's work, from the shapes, for XLA's cost analysis (Mosaic passes it on, Triton drops it): the
    matmuls of every (batch row, head, tile pair) (2 flops per multiply-add), one exponential per score (each kernel
    recomputes them) and the blocks' HBM traffic."""
    scores, c2p, p2c = _MATMULS[kernel]
    window = p.block_q + p.block_k
    per_pair = 2 * p.head_dim * (scores * p.block_q * p.block_k
                                 + window * (c2p * p.has_c2p * p.block_q + p2c * p.has_p2c * p.block_k))
    pairs = p.batch * p.heads * p.q_tiles * p.k_tiles
    return pl.CostEstimate(flops=pairs * per_pair, transcendentals=pairs * p.block_q * p.block_k,
                           bytes_accessed=_bytes_accessed(blocks.grid, specs, arrays))


def _run(p: _Plan, kernel, name: str, layout, out_shape, operands):
    """pallas_call through Triton on GPUs (jax would pick Mosaic GPU there), Mosaic on TPUs and the interpreter on
    CPUs (unless `p.interpret` forces it on or off). The choice is made when lowering for a platform, so exporting
    or compiling ahead of time for any platform works, from any host.

    name: "fwd", "dq" or "dkv"; layout(plan) -> (`_Blocks`, in_specs, out_specs) for that plan's flavour.
    """
    def call(plan, interpret, *args):
        blocks, in_specs, out_specs = layout(plan)
        params = None
        if plan.on_triton:
            params = pltriton.CompilerParams()
        elif plan.mosaic and not interpret:
            params = pltpu.CompilerParams(dimension_semantics=blocks.semantics)
        cost = _cost(plan, blocks, name, [*in_specs, *out_specs], [*args, *out_shape])
        return pl.pallas_call(functools.partial(kernel, plan), grid=blocks.grid, in_specs=in_specs,
                              out_specs=out_specs, out_shape=out_shape, interpret=interpret,
                              name=f"disentangled_attention_{name}", compiler_params=params,
                              cost_estimate=cost)(*args)

    if p.interpret:
        return call(p, True, *operands)
    triton = functools.partial(call, dataclasses.replace(p, kernels="triton", on_triton=True), False)
    mosaic = functools.partial(call, dataclasses.replace(p, kernels="mosaic"), False)
    return lax.platform_dependent(*operands, cuda=triton, rocm=triton, tpu=mosaic,
                                  default=functools.partial(call, p, p.interpret is None))


def _present(*operands):
    return [x for x in operands if x is not None]


def _forward_call(p: _Plan, q, k, v, qm, km, c2p, p2c, seed):
    """Padded operands -> o [B, H, Qp, D] in v.dtype, row max and log row sum [B, H, Qp, 1] fp32."""
    def layout(plan):
        blocks = _Blocks(plan, "bht", plan.q_tiles, None)
        in_specs = [blocks.seq(p.block_q, True), blocks.seq(p.k_pad, False), blocks.seq(p.k_pad, False),
                    blocks.query_mask(p.block_q, True), blocks.key_mask(p.k_pad, False),
                    *blocks.optional(c2p, p2c, seed)]
        stat = blocks.row_stat(p.block_q, True)
        return blocks, in_specs, [blocks.seq(p.block_q, True), stat, stat]

    stat = jax.ShapeDtypeStruct((p.batch, p.heads, p.q_pad, 1), _F32)
    out_shape = [jax.ShapeDtypeStruct(q.shape, v.dtype), stat, stat]
    return _run(p, _forward_kernel, "fwd", layout, out_shape, (q, k, v, qm, km, *_present(c2p, p2c, seed)))


def _dq_call(p: _Plan, q, k, v, qm, km, c2p, p2c, seed, do, m, logl, delta):
    """dQ [B, H, Qp, D] and, with c2p, the c2p gradient strips [H, nq, nk * bk + bq, D]."""
    strip_rows = p.k_pad + p.block_q

    def layout(plan):
        blocks = _backward_blocks(plan, plan.q_tiles)
        query, stat = blocks.seq(p.block_q, True), blocks.row_stat(p.block_q, True)
        in_specs = [query, blocks.seq(p.k_pad, False), blocks.seq(p.k_pad, False),
                    blocks.query_mask(p.block_q, True), blocks.key_mask(p.k_pad, False), query, stat, stat, stat,
                    *blocks.optional(c2p, p2c, seed)]
        return blocks, in_specs, [query, *([blocks.strip(strip_rows)] if p.has_c2p else [])]

    out_shape = [jax.ShapeDtypeStruct(q.shape, q.dtype), *([_strip_shape(p, p.q_tiles, strip_rows)] if p.has_c2p
                                                           else [])]
    return _run(p, _dq_kernel, "dq", layout, out_shape,
                (q, k, v, qm, km, do, m, logl, delta, *_present(c2p, p2c, seed)))


def _dkv_call(p: _Plan, q, k, v, qm, km, c2p, p2c, seed, do, m, logl, delta):
    """dK, dV [B, H, Kp, D] and, with p2c, the p2c gradient strips [H, nk, nq * bq + bk, D]."""
    strip_rows = p.q_pad + p.block_k

    def layout(plan):
        blocks = _backward_blocks(plan, plan.k_tiles)
        keys, stat = blocks.seq(p.block_k, True), blocks.row_stat(p.q_pad, False)
        in_specs = [blocks.seq(p.q_pad, False), keys, keys, blocks.query_mask(p.q_pad, False),
                    blocks.key_mask(p.block_k, True), blocks.seq(p.q_pad, False), stat, stat, stat,
                    *blocks.optional(c2p, p2c, seed)]
        return blocks, in_specs, [keys, keys, *([blocks.strip(strip_rows)] if p.has_p2c else [])]

    out_shape = [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype),
                 *([_strip_shape(p, p.k_tiles, strip_rows)] if p.has_p2c else [])]
    return _run(p, _dkv_kernel, "dkv", layout, out_shape,
                (q, k, v, qm, km, do, m, logl, delta, *_present(c2p, p2c, seed)))


def _heads_major(x):
    """[B, L, H, D] <-> [B, H, L, D]."""
    return jnp.swapaxes(x, 1, 2)


def _pad_operands(p: _Plan, query, key, value, c2p, p2c, query_mask, key_mask):
    """The kernels' operands: sequences padded to whole tiles, [B, H, Lp, D]; masks int32 [B, Qp, 1] and
    [B, 1, Kp] (padding False); tables padded to `table_rows` keeping row <-> offset (the descending c2p table
    gains Qp - Q rows in front, the ascending p2c table Kp - K), [H, table_rows, D]."""
    dq, dk = p.q_pad - p.query_len, p.k_pad - p.key_len
    table = lambda t, descending: None if t is None else jnp.swapaxes(pad_table(t, p, descending, p.table_rows), 0, 1)
    return (_heads_major(pad_axis(query, 1, 0, dq)), _heads_major(pad_axis(key, 1, 0, dk)),
            _heads_major(pad_axis(value, 1, 0, dk)), pad_axis(query_mask.astype(jnp.int32), 1, 0, dq)[:, :, None],
            pad_axis(key_mask.astype(jnp.int32), 1, 0, dk)[:, None, :], table(c2p, True), table(p2c, False))


def _fold_strips(strips, starts, rows: int):
    """Sums per-tile strips into one table gradient.

    Args:
      strips: fp32 [H, T, L, D], strip row r of tile t being table row starts[t] + r (may fall outside
        [0, rows), where only zeros lie: offsets that no real pair has).
    Returns:
      fp32 [rows, H, D].
    """
    length = strips.shape[2]
    zero = jnp.zeros((), _F32)
    total = sum(lax.pad(strips[:, t], zero, [(0, 0, 0), (s, rows - s - length, 0), (0, 0, 0)])
                for t, s in enumerate(starts))
    return jnp.swapaxes(total, 0, 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attention(p: _Plan, query, key, value, c2p, p2c, query_mask, key_mask, seed):
    return _attention_fwd(p, query, key, value, c2p, p2c, query_mask, key_mask, seed)[0]


def _attention_fwd(p: _Plan, query, key, value, c2p, p2c, query_mask, key_mask, seed):
    padded = _pad_operands(p, query, key, value, c2p, p2c, query_mask, key_mask)
    q, k, v, qm, km, c2p_pad, p2c_pad = padded
    out, m, logl = _forward_call(p, q, k, v, qm, km, c2p_pad, p2c_pad, seed)
    return _heads_major(out)[:, :p.query_len], (padded, seed, out, m, logl)


def _attention_bwd(p: _Plan, residuals, d_out):
    (q, k, v, qm, km, c2p, p2c), seed, out, m, logl = residuals
    do = _heads_major(pad_axis(d_out, 1, 0, p.q_pad - p.query_len))
    # delta_i = sum_j P_ij dP_ij = dO_i · O_i (dropout included, since O already holds the dropped weights).
    delta = jnp.einsum("bhqd,bhqd->bhq", do.astype(_F32), out.astype(_F32))[..., None]
    operands = (q, k, v, qm, km, c2p, p2c, seed, do, m, logl, delta)
    dq, *c2p_strips = _dq_call(p, *operands)
    dk, dv, *p2c_strips = _dkv_call(p, *operands)
    rows = p.query_len + p.key_len - 1
    d_c2p = d_p2c = None
    if p.has_c2p:
        starts = [p.query_len - p.block_q * (t + 1) for t in range(p.q_tiles)]
        d_c2p = _fold_strips(c2p_strips[0], starts, rows).astype(c2p.dtype)
    if p.has_p2c:
        starts = [p.key_len - p.block_k * (t + 1) for t in range(p.k_tiles)]
        d_p2c = _fold_strips(p2c_strips[0], starts, rows).astype(p2c.dtype)
    dq, dk, dv = (_heads_major(x) for x in (dq, dk, dv))
    return (dq[:, :p.query_len], dk[:, :p.key_len], dv[:, :p.key_len], d_c2p, d_p2c, None, None, None)


_attention.defvjp(_attention_fwd, _attention_bwd)


def pallas_attention(query, key, value, c2p_table, p2c_table, query_mask, key_mask, *, scale: float,
                     block_q: int, block_k: int, dropout_rate: float = 0.0, dropout_seed=None,
                     first_row=0, first_head=0, total_heads: int | None = None, interpret: bool | None = None,
                     kernels: str = "triton") -> jnp.ndarray:
    """Disentangled attention fused into Pallas kernels, equal to the dense c2c + c2p + p2c path.

    s[b, h, i, j] = (Q_i·K_j + Q_i·c2p_table[Q-1-(i-j)] + K_j·p2c_table[(i-j)+K-1]) / scale in fp32; pairs
    outside query_mask[b, i] & key_mask[b, j] score finfo(float32).min (a fully masked row is uniform over
    the K keys); softmax over j; optional counter-based dropout (`keep_mask` at global coordinates);
    context = probs @ V. Differentiable w.r.t. query, key, value and both tables.

    Compiled, the kernels lower through Triton on GPUs and Mosaic on TPUs, chosen when lowering for the platform.

    Args:
      query: [B, Q, H, D]; key, value: [B, K, H, D] (fp32 or bf16, one dtype). D a power of two >= 16.
      c2p_table: [Q + K - 1, H, D] relative keys in DESCENDING offset order (row c: offset i - j = Q - 1 - c),
        or None to drop the c2p term.
      p2c_table: [Q + K - 1, H, D] relative queries in ASCENDING offset order (row c: offset c - (K - 1)),
        or None to drop the p2c term.
      query_mask: bool [B, Q]; key_mask: bool [B, K].
      scale: the score divisor.
      block_q, block_k: tile sizes, powers of two >= 16 (Triton tensor shapes; the window chunking needs
        multiples of 16); Mosaic (TPU) needs multiples of 128. Lengths need not be multiples: they are padded,
        and padded keys are excluded.
      dropout_rate: probability of dropping an attention weight; dropout_seed: uint32 scalar, needed if > 0.
      first_row, first_head, total_heads: where this call's rows and heads lie in a larger batch (a device's
        shard of it), so that the dropout bits are those of the global coordinates; None total_heads means H.
      interpret: True runs the kernels in the Pallas interpreter on every platform, False never; None (the
        default) interprets them when lowering for a CPU, which has no Pallas compiler.
      kernels: the flavour the interpreter runs, "triton" or "mosaic" (compiled, the platform decides).
    Returns:
      context [B, Q, H, D] in value.dtype.
    """
    if not query.dtype == key.dtype == value.dtype:
        raise ValueError(f"query, key and value need one dtype; got {query.dtype}, {key.dtype}, {value.dtype}")
    for name, size in (("block_q", block_q), ("block_k", block_k), ("head_dim", query.shape[-1])):
        if not is_pallas_tile_size(size):
            raise ValueError(f"{name} must be a power of two >= {_CHUNK}; got {size}")
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}; got {kernels!r}")
    plan = _Plan.checked(query, key, value, c2p_table, p2c_table, query_mask, key_mask, scale=scale, block_q=block_q,
                         block_k=block_k, dropout_rate=dropout_rate, dropout_seed=dropout_seed,
                         interpret=interpret, kernels=kernels, total_heads=total_heads or query.shape[2])
    # The kernels' matmuls take one operand dtype; the cast outside the custom VJP carries the gradient back.
    cast = lambda t: None if t is None else t.astype(query.dtype)
    seed = None
    if dropout_rate > 0:
        seed = jnp.stack([jnp.asarray(x).astype(jnp.uint32) for x in (dropout_seed, first_row, first_head)])[None]
    return _attention(plan, query, key, value, cast(c2p_table), cast(p2c_table), query_mask, key_mask, seed)
