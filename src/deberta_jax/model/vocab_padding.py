"""Vocabulary-sized parameters between their padded rows (inside deberta-jax) and `vocab_size` rows (files).

Inside, the word table, the MLM bias and RTD's embedding delta have `config.padded_vocab_size` rows (see
`DebertaConfig.vocab_pad_multiple`), so that mesh axes divide them; HF files and deberta-jax checkpoints hold
`vocab_size`. A parameter's vocabulary axis is the one whose logical axis name is "vocab" (model/layers.py), so no
table of parameter names is kept here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from deberta_jax.model.modeling import abstract_boxed_params

Path = tuple[str, ...]


def vocab_axes(boxed_params) -> dict[Path, int]:
    """Flattened param path -> its "vocab" axis, for each param that has one. `boxed_params`: params still in their
    logical-axis boxes (`model.init(...)["params"]`, or its `jax.eval_shape`)."""
    specs = flatten_dict(nn.get_partition_spec(boxed_params))
    return {path: tuple(spec).index("vocab") for path, spec in specs.items() if "vocab" in tuple(spec or ())}


def resize_axis(x, axis: int, size: int):
    """`x` (NumPy or JAX array, or a ShapeDtypeStruct) with `axis` cut to its first `size` entries, or padded with
    zeros up to `size`."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(x.shape[:axis] + (size,) + x.shape[axis + 1:], x.dtype)
    if x.shape[axis] >= size:
        return x[(slice(None),) * axis + (slice(0, size),)]
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return (np.pad if isinstance(x, np.ndarray) else jnp.pad)(x, widths)


def resize_vocab(params, axes: dict[Path, int], size: int):
    """`params` (a nested dict, unboxed) with every vocabulary axis in `axes` cut or zero-padded to `size` rows:
    `vocab_size` for files, `padded_vocab_size` for the model."""
    flat = flatten_dict(params)
    return unflatten_dict({path: resize_axis(x, axes[path], size) if path in axes else x
                           for path, x in flat.items()})


def unpadded_params(model: nn.Module, params):
    """`params` of `model` (a model of modeling.HEADS) with their vocabulary axes cut from `padded_vocab_size` to
    `vocab_size` rows: what HF files and deberta-jax checkpoints hold."""
    axes = vocab_axes(abstract_boxed_params(model))
    return resize_vocab(nn.meta.unbox(params), axes, model.config.vocab_size)


def padded_params(model: nn.Module, params):
    """The inverse of `unpadded_params`: vocabulary axes padded with zero rows up to `padded_vocab_size`."""
    return resize_vocab(params, vocab_axes(abstract_boxed_params(model)), model.config.padded_vocab_size)
