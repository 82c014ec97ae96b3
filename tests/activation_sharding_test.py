"""`sharding/activations.py`: activation constraints by logical names, resolved through the rules on the mesh of
`activation_sharding`, a no-op outside it. Traced against an abstract (data 2, fsdp 2, tensor 2) mesh, so no devices
are needed; `sharded_step_test.py` checks the constraints in a real 8-device step."""

import jax
import pytest
import jax.numpy as jnp
from jax.sharding import AbstractMesh, AxisType, PartitionSpec

from deberta_jax.sharding.activations import HEADS, HIDDEN, MLP, activation_sharding, constrain, map_over_shards
from deberta_jax.sharding.rules import DEFAULT_RULES

MESH = AbstractMesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)


def _specs(fn, *shapes):
    """The PartitionSpec of every sharding constraint in fn's jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*(jnp.ones(s) for s in shapes))
    return [eqn.params["sharding"].spec for eqn in jaxpr.eqns if eqn.primitive.name == "sharding_constraint"]


def test_outside_the_context_nothing_is_constrained():
    x = jnp.ones((4, 6, 8))
    assert constrain(x, HIDDEN) is x
    assert _specs(lambda y: constrain(y, HIDDEN), (4, 6, 8)) == []


def test_rows_split_over_data_and_fsdp_heads_and_mlp_over_tensor():
    with activation_sharding(MESH):
        specs = _specs(lambda h, q, m: (constrain(h, HIDDEN), constrain(q, HEADS), constrain(m, MLP)),
                       (4, 6, 8), (4, 6, 2, 4), (4, 6, 16))
    assert specs == [PartitionSpec(("data", "fsdp"), None, None), PartitionSpec(("data", "fsdp"), None, "tensor", None),
                     PartitionSpec(("data", "fsdp"), None, "tensor")]


def test_an_axis_that_does_not_divide_its_dimension_is_left_out():
    with activation_sharding(MESH):
        specs = _specs(lambda q: constrain(q, HEADS), (4, 6, 3, 4))   # 3 heads on tensor = 2
        odd_rows = _specs(lambda h: constrain(h, HIDDEN), (2, 6, 8))   # 2 rows on data x fsdp = 4
    assert specs == [PartitionSpec(("data", "fsdp"), None, None, None)]
    assert odd_rows == [PartitionSpec("data", None, None)]


def test_the_context_is_left_on_exit():
    with activation_sharding(MESH):
        pass
    assert _specs(lambda y: constrain(y, HIDDEN), (4, 6, 8)) == []


def test_a_per_device_kernel_refuses_rules_that_split_what_it_needs_whole():
    """A kernel run per shard (the pallas attention on Mosaic) would attend within each sequence shard only."""
    split_length = tuple((name, "tensor" if name == "activation_length" else axes) for name, axes in DEFAULT_RULES)
    q = jnp.ones((4, 6, 2, 4))
    with activation_sharding(MESH, split_length), pytest.raises(ValueError, match="'activation_length' -> 'tensor'"):
        jax.make_jaxpr(lambda x: map_over_shards(lambda first, y: y, (x,), (HEADS,), HEADS,
                                                 whole=("activation_length",)))(q)
