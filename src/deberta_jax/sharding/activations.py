"""Sharding constraints on activations by logical axis names, as MaxText places them.

The train step traces the model inside `activation_sharding(mesh, rules)`; there `constrain(x, names)` pins an
activation to the mesh axes the rules give its logical names, so that XLA's propagation cannot pick another layout
(e.g. gather a batch that should stay split). Outside that context (a plain `model.apply`, one device) it returns
`x` unchanged. A mesh axis that does not divide its dimension (2 heads on tensor=4) is left out for that dimension.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import flax.linen as nn
import jax
from jax.sharding import Mesh, PartitionSpec

from deberta_jax.sharding.rules import DEFAULT_RULES, LogicalRules, fit_spec

_RULES: contextvars.ContextVar[LogicalRules | None] = contextvars.ContextVar("activation_rules", default=None)

HIDDEN = ("activation_batch", "activation_length", "activation_embed")   # [B, N, hidden]
HEADS = ("activation_batch", "activation_length", "activation_heads", "activation_kv")   # [B, N, H, D]
MLP = ("activation_batch", "activation_length", "activation_mlp")   # [B, N, intermediate]
OFFSET_HEADS = ("activation_length", "activation_heads", "activation_kv")   # per-offset tables [2N - 1, H, D]


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES):
    """Within this context (entered while a step is traced), `constrain` places activations on `mesh`."""
    token = _RULES.set(rules)
    try:
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            yield
    finally:
        _RULES.reset(token)


def constrain(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """`x` constrained to the mesh axes of its logical axis `names` (one per dimension), or `x` itself outside
    `activation_sharding`."""
    rules = _RULES.get()
    mesh = jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty:
        return x
    spec, _ = fit_spec(nn.logical_to_mesh_axes(names, rules), tuple(x.shape), mesh)
    return jax.lax.with_sharding_constraint(x, spec)


def map_over_shards(fn, args, in_names, out_names: tuple[str, ...], out_like: int = 0, whole: tuple[str, ...] = ()):
    """fn run on each device's shards (a shard_map) inside `activation_sharding`, fn(first, *args) outside it.

    For kernels XLA cannot partition (Mosaic custom calls). Argument i is split by the mesh axes that the rules
    give its logical names in_names[i] (None: replicated), the result (shaped like argument `out_like`) by those
    of `out_names`. `first(i, dim)` is the global index of the first element of argument i's shard along `dim` (0
    outside), e.g. a shard's first row. Logical axes in `whole` must not be split (e.g. the sequence, which an
    attention kernel needs whole): rules that map them to a mesh axis are refused rather than computed wrongly.
    """
    rules = _RULES.get()
    mesh = jax.sharding.get_abstract_mesh()
    if rules is None or mesh.empty:
        return fn(lambda i, dim: 0, *args)
    for name in whole:
        axes = nn.logical_to_mesh_axes((name,), rules)[0]
        if math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ())) > 1:
            raise ValueError(f"activation rule {name!r} -> {axes!r}: this kernel runs per device and needs {name!r} "
                             "unsplit; map it to None")
    spec = lambda names, shape: fit_spec(nn.logical_to_mesh_axes(names, rules), tuple(shape), mesh)[0]
    in_specs = [PartitionSpec() if names is None else spec(names, x.shape) for x, names in zip(args, in_names)]

    def body(*shards):
        def first(i, dim):
            axes = in_specs[i][dim] if dim < len(in_specs[i]) else None
            index = 0
            for axis in (axes,) if isinstance(axes, str) else axes or ():
                index = index * mesh.shape[axis] + jax.lax.axis_index(axis)
            return index * shards[i].shape[dim]
        return fn(first, *shards)

    return jax.shard_map(body, mesh=mesh, in_specs=tuple(in_specs), out_specs=spec(out_names, args[out_like].shape),
                         check_vma=False)(*args)
