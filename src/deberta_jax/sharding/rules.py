"""Logical axis names of parameters and batches -> mesh axes.

Parameters carry logical names (see `model/layers.py`); these rules map them to mesh axes. A dimension that a mesh
axis does not divide evenly stays replicated instead of failing (tiny test models, odd vocabularies).
"""

from __future__ import annotations

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]

DEFAULT_RULES: LogicalRules = (
    ("batch", ("data", "fsdp")),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("embed_in", "fsdp"),
    ("qkv", "tensor"),
    ("mlp", "tensor"),
    ("classes", None),
    ("pooler", "tensor"),
    ("rel", None),
    ("position", None),
    ("types", None),
    ("norm", None),
    ("heads_in", None),
    ("heads_out", None),
    ("conv_width", None),
    ("conv_in", None),
    ("layers", None),  # the stacked axis of scan_layers: every device holds its shard of every layer
)


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Drops mesh axes from dimensions they do not divide."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        kept, size = [], 1
        for name in names:
            if dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def logical_shardings(boxed_tree, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES):
    """NamedShardings for a tree of (abstract) arrays, some wrapped in logical-axis boxes (params, and optimizer
    state built from boxed params); unboxed leaves are replicated. Returns a tree shaped like the unboxed tree."""
    logical = nn.get_partition_spec(boxed_tree)
    shapes = nn.meta.unbox(boxed_tree)

    def one(spec, leaf):
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules) if spec else PartitionSpec()
        return NamedSharding(mesh, _fit(mesh_spec, tuple(leaf.shape), mesh))

    return jax.tree_util.tree_map(one, logical, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES, leading_axes: int = 0) -> NamedSharding:
    """The batch dimension (after `leading_axes` unsharded ones, e.g. gradient-accumulation steps) split over the
    data-parallel axes; the rest replicated."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes((None,) * leading_axes + ("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
