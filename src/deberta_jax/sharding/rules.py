"""Logical axis names of parameters and batches -> mesh axes.

Parameters carry logical names (see `model/layers.py`); these rules map them to mesh axes. A dimension that a mesh
axis does not divide evenly stays replicated instead of failing (tiny test models, odd widths), with a warning
naming the parameter: every chip then holds more of it (`dropped_axes` counts the bytes). Vocabularies are padded
(`DebertaConfig.vocab_pad_multiple`) so that the word table is not such a case.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import flax.linen as nn
import jax
import numpy as np
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
    # Activations (`sharding/activations.py`): rows over the data-parallel axes, heads and the feed-forward's inner
    # width over tensor (Megatron's split), the hidden width between layers whole on each tensor shard.
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_kv", None),
    ("activation_mlp", "tensor"),
)


class ShardingFitWarning(UserWarning):
    """A mesh axis was dropped from a parameter dimension it does not divide: that dimension is replicated."""


@dataclasses.dataclass(frozen=True)
class DroppedAxes:
    """Mesh axes that the rules give a leaf of parameter `param` (shape `shape`) but that do not divide their
    dimension: `dropped` holds (dimension, mesh axis) pairs; `extra_bytes_per_chip` is what each chip holds more of
    the leaf than it would with those axes kept."""

    param: str
    shape: tuple[int, ...]
    dropped: tuple[tuple[int, str], ...]
    extra_bytes_per_chip: int


@dataclasses.dataclass(frozen=True)
class _Leaf:
    name: str
    leaf: jax.ShapeDtypeStruct
    spec: PartitionSpec  # the rules' mesh axes, before fitting


def fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> tuple[PartitionSpec, list[tuple[int, str]]]:
    """`spec` without the mesh axes that do not divide their dimension, and those (dimension, axis) pairs."""
    fitted, dropped = [], []
    for dim, (size_of_dim, axes) in enumerate(zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        kept, size = [], 1
        for name in names:
            if size_of_dim % (size * mesh.shape[name]) == 0:
                kept.append(name)
                size *= mesh.shape[name]
            else:
                dropped.append((dim, name))
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted), dropped


def _fit(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh, name: str, warned: set[str]) -> PartitionSpec:
    """Drops mesh axes from dimensions they do not divide, with a ShardingFitWarning for each that names parameter
    `name`: once per text, recorded in `warned` (a parameter and its optimizer moments share a name and a shape)."""
    fitted, dropped = fit_spec(spec, shape, mesh)
    for dim, axis in dropped:
        text = (f"{name} {tuple(shape)}: mesh axis {axis!r} (size {mesh.shape[axis]}) does not divide dimension "
                f"{dim} ({shape[dim]}); that dimension is replicated over it")
        if text not in warned:
            warned.add(text)
            warnings.warn(text, ShardingFitWarning, stacklevel=2)
    return fitted


def _param_name(path) -> str:
    """The parameter a leaf belongs to: the trailing dict keys of its path, so that a parameter and its optimizer
    moments (`.params['a']['b']`, `.opt_state[0].mu['a']['b']`) share one name, 'a/b'."""
    keys = []
    for entry in reversed(path):
        if not isinstance(entry, jax.tree_util.DictKey):
            break
        keys.append(str(entry.key))
    return "/".join(reversed(keys)) or jax.tree_util.keystr(path)


def _leaves(boxed_tree, rules: LogicalRules):
    """A tree shaped like the unboxed `boxed_tree` of _Leaf: each leaf's name, shape and unfitted mesh axes."""
    def one(path, spec, leaf):
        mesh_spec = nn.logical_to_mesh_axes(tuple(spec), rules) if spec else PartitionSpec()
        return _Leaf(_param_name(path), leaf, mesh_spec)

    return jax.tree_util.tree_map_with_path(one, nn.get_partition_spec(boxed_tree), nn.meta.unbox(boxed_tree),
                                            is_leaf=lambda x: isinstance(x, PartitionSpec))


def logical_shardings(boxed_tree, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES):
    """NamedShardings for a tree of (abstract) arrays, some wrapped in logical-axis boxes (params, and optimizer
    state built from boxed params); unboxed leaves are replicated. Returns a tree shaped like the unboxed tree.
    Warns (ShardingFitWarning) for each mesh axis dropped from a dimension it does not divide; Python shows a given
    warning once per process, so a state built twice warns once."""
    warned = set()
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, _fit(x.spec, tuple(x.leaf.shape), mesh, x.name,
                                                                     warned)),
                                  _leaves(boxed_tree, rules))


def _devices_along(spec: PartitionSpec, mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for axes in spec if axes for a in ((axes,) if isinstance(axes, str) else axes))


def dropped_axes(boxed_tree, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES) -> list[DroppedAxes]:
    """The leaves from which `logical_shardings` drops mesh axes, with the bytes per chip that costs: a leaf of B
    bytes split over n devices instead of the rules' N holds B/n - B/N more on each chip. A parameter and its
    optimizer moments are listed apart, under one `param` name."""
    out = []
    for x in jax.tree_util.tree_leaves(_leaves(boxed_tree, rules)):
        shape = tuple(x.leaf.shape)
        fitted, dropped = fit_spec(x.spec, shape, mesh)
        if dropped:
            nbytes = math.prod(shape) * np.dtype(x.leaf.dtype).itemsize
            extra = nbytes // _devices_along(fitted, mesh) - nbytes // _devices_along(x.spec, mesh)
            out.append(DroppedAxes(x.name, shape, tuple(dropped), extra))
    return out


def batch_sharding(mesh: Mesh, rules: LogicalRules = DEFAULT_RULES, leading_axes: int = 0) -> NamedSharding:
    """The batch dimension (after `leading_axes` unsharded ones, e.g. gradient-accumulation steps) split over the
    data-parallel axes; the rest replicated."""
    return NamedSharding(mesh, nn.logical_to_mesh_axes((None,) * leading_axes + ("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
