"""What the two fused attention implementations (`chunked_attention`, `pallas_attention`) share: the static plan of
one call, its argument checks, the padding to whole tiles, the window each tile reads and the masked score.

For a query tile [i0, i0 + bq) and a key tile [j0, j0 + bk) the offsets i - j take bq + bk - 1 consecutive values,
so each position term of the tile reads one window of consecutive rows of its per-offset table.

Shapes: B batch, Q query length, K key length, H heads, D head_dim; bq / bk the query / key tile sizes;
Qp / Kp the lengths padded up to whole tiles.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

# A user-masked pair scores the fp32 minimum and still takes part in the softmax (a fully masked row comes out
# uniform over the K real keys, as in `masked_softmax`); padding keys are left out of the softmax altogether.
MASKED_SCORE = float(jnp.finfo(jnp.float32).min)


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """Static sizes and options of one call (hashable: the custom_vjp's non-differentiable argument)."""

    batch: int
    heads: int
    head_dim: int
    query_len: int
    key_len: int
    block_q: int
    block_k: int
    scale: float
    rate: float
    has_c2p: bool
    has_p2c: bool

    @classmethod
    def checked(cls, query, key, value, c2p_table, p2c_table, query_mask, key_mask, *, scale: float, block_q: int,
                block_k: int, dropout_rate: float, dropout_seed, **options):
        """The plan of one call, after checking the arguments every fused implementation takes alike (see
        `chunked_attention`); `options` are the fields a subclass adds."""
        batch, query_len, heads, head_dim = query.shape
        key_len = key.shape[1]
        if key.shape != (batch, key_len, heads, head_dim) or value.shape != key.shape:
            raise ValueError(f"query {query.shape}, key {key.shape} and value {value.shape} do not line up")
        table_shape = (query_len + key_len - 1, heads, head_dim)
        for name, table in (("c2p_table", c2p_table), ("p2c_table", p2c_table)):
            if table is not None and table.shape != table_shape:
                raise ValueError(f"{name} must have shape {table_shape}; got {table.shape}")
        if query_mask.shape != (batch, query_len) or key_mask.shape != (batch, key_len):
            raise ValueError(f"masks must be [B, Q] and [B, K]; got {query_mask.shape} and {key_mask.shape}")
        if block_q < 1 or block_k < 1:
            raise ValueError(f"block sizes must be positive; got {block_q}, {block_k}")
        if not 0.0 <= dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1); got {dropout_rate}")
        if dropout_rate > 0.0 and dropout_seed is None:
            raise ValueError("dropout_rate > 0 needs a dropout_seed")
        return cls(batch=batch, heads=heads, head_dim=head_dim, query_len=query_len, key_len=key_len,
                   block_q=block_q, block_k=block_k, scale=float(scale), rate=float(dropout_rate),
                   has_c2p=c2p_table is not None, has_p2c=p2c_table is not None, **options)

    @property
    def q_tiles(self) -> int:
        return -(-self.query_len // self.block_q)

    @property
    def k_tiles(self) -> int:
        return -(-self.key_len // self.block_k)

    @property
    def q_pad(self) -> int:
        return self.q_tiles * self.block_q

    @property
    def k_pad(self) -> int:
        return self.k_tiles * self.block_k

    @property
    def window(self) -> int:
        """Offsets one tile spans: bq + bk - 1."""
        return self.block_q + self.block_k - 1

    @property
    def padded_offsets(self) -> int:
        """Offsets the padded lengths span, Qp + Kp - 1: the rows of the per-offset table for lengths (Qp, Kp)."""
        return self.q_pad + self.k_pad - 1


def pad_axis(x: jnp.ndarray, axis: int, before: int, after: int, value=0) -> jnp.ndarray:
    widths = [(0, 0)] * x.ndim
    widths[axis] = (before, after)
    return jnp.pad(x, widths, constant_values=value)


def table_pads(plan: TilePlan, descending: bool, rows: int) -> tuple[int, int]:
    """Rows to add before / after a [Q + K - 1] per-offset table to give it `rows` rows, row <-> offset kept.

    Padded queries reach offset Qp - 1 and padded keys -(Kp - 1): the DESCENDING (c2p) table gains Qp - Q rows in
    front, the ASCENDING (p2c) table Kp - K. With rows >= `plan.padded_offsets` every tile's window lies inside.
    """
    before = plan.q_pad - plan.query_len if descending else plan.k_pad - plan.key_len
    return before, rows - before - (plan.query_len + plan.key_len - 1)


def pad_table(table: jnp.ndarray | None, plan: TilePlan, descending: bool, rows: int) -> jnp.ndarray | None:
    """[Q + K - 1, H, D] -> [rows, H, D] by `table_pads` (zeros); None stays None."""
    return None if table is None else pad_axis(table, 0, *table_pads(plan, descending, rows))


def window_starts(plan: TilePlan, i0, j0):
    """First padded-table row of the window of the tile whose first query is i0 and first key j0: (c2p, p2c).

    c2p is query-major over DESCENDING offsets: window column t - m + bq - 1 (what `diagonal_skew` reads for query
    row m, key column t) must hold offset (i0 + m) - (j0 + t), i.e. padded row Qp - 1 - (i0 - j0) - (m - t), so the
    window starts at Qp - bq - i0 + j0. p2c is key-major over ASCENDING offsets: key row t, query column m reads
    window column m - t + bk - 1, padded row (i0 + m) - (j0 + t) + Kp - 1, so it starts at Kp - bk + i0 - j0.
    """
    return plan.q_pad - plan.block_q - i0 + j0, plan.k_pad - plan.block_k + i0 - j0


def dropped(weights: jnp.ndarray, keep: jnp.ndarray | None, rate: float) -> jnp.ndarray:
    """weights · keep / (1 - rate); the weights unchanged without dropout (keep None)."""
    return weights if keep is None else jnp.where(keep, weights / (1.0 - rate), 0.0)
