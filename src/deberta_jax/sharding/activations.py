"""Sharding constraints on activations by logical axis names, as MaxText places them.

The train step traces the model inside `activation_sharding(mesh, rules)`; there `constrain(x, names)` pins an
activation to the mesh axes the rules give its logical names, so that XLA's propagation cannot pick another layout
(e.g. gather a batch that should stay split). Outside that context (a plain `model.apply`, one device) it returns
`x` unchanged. A mesh axis that does not divide its dimension (2 heads on tensor=4) is left out for that dimension.
"""

from __future__ import annotations

import contextlib
import contextvars

import flax.linen as nn
import jax
from jax.sharding import Mesh

from deberta_jax.sharding.rules import DEFAULT_RULES, LogicalRules, fit_spec

_RULES: contextvars.ContextVar[LogicalRules | None] = contextvars.ContextVar("activation_rules", default=None)

HIDDEN = ("activation_batch", "activation_length", "activation_embed")   # [B, N, hidden]
HEADS = ("activation_batch", "activation_length", "activation_heads", "activation_kv")   # [B, N, H, D]
MLP = ("activation_batch", "activation_length", "activation_mlp")   # [B, N, intermediate]


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
