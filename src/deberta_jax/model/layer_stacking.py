"""Converts params between the per-layer layout (`layer_0` … `layer_{L-1}`) and the scanned layout (`layers`).

`scan_layers=True` keeps the encoder's layers as one `nn.scan` whose parameters carry a leading layer axis under
the key `layers`; checkpoints, HF conversion and inspection use the per-layer layout. Both functions walk the
whole tree, so they work for any model that embeds encoders (heads, EMD, generator and discriminator alike).
When the encoder has a `conv` branch, `layer_0` stays outside the scan (the conv runs right after it).
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

STACKED = "layers"
_LAYER = re.compile(r"layer_(\d+)$")


def _layer_numbers(tree: dict) -> list[int]:
    return sorted(int(m.group(1)) for k in tree if (m := _LAYER.match(k)))


def _first_scanned(tree: dict) -> int:
    """Index of the first layer inside the scan: 1 beside a conv branch, else 0."""
    return 1 if "conv" in tree else 0


def stack_layers(params):
    """Per-layer -> scanned: `layer_{first}` … `layer_{L-1}` become `layers` with leaves [L - first, ...]."""
    if not isinstance(params, dict):
        return params
    out = {k: stack_layers(v) for k, v in params.items()}
    numbers = _layer_numbers(out)
    if not numbers:
        return out
    if numbers != list(range(len(numbers))):
        raise ValueError(f"encoder layers must be numbered 0..{len(numbers) - 1}; got {numbers}")
    first = _first_scanned(out)
    scanned = [out.pop(f"layer_{i}") for i in numbers[first:]]
    if not scanned:
        raise ValueError("scan_layers needs at least one layer inside the scan")
    out[STACKED] = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *scanned)
    return out


def unstack_layers(params):
    """Scanned -> per-layer: `layers` leaves [n, ...] become `layer_{first}` … `layer_{first + n - 1}`."""
    if not isinstance(params, dict):
        return params
    out = {k: unstack_layers(v) for k, v in params.items()}
    if STACKED not in out:
        return out
    stacked = out.pop(STACKED)
    first = _first_scanned(out)
    count = jax.tree_util.tree_leaves(stacked)[0].shape[0]
    for i in range(count):
        out[f"layer_{first + i}"] = jax.tree_util.tree_map(lambda x, i=i: x[i], stacked)
    return out


def is_stacked(path) -> bool:
    """Whether a tree_map_with_path path lies under a scanned `layers` subtree (its leaves have a layer axis)."""
    return any(getattr(k, "key", None) == STACKED for k in path)
