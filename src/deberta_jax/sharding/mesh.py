"""Building the (data, fsdp, tensor) device mesh."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
from jax.sharding import AxisType, Mesh

from deberta_jax.config_tree import Section

MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig(Section):
    """The device mesh of a run: sizes of (data, fsdp, tensor); one -1 takes the remaining devices."""

    shape: tuple[int, ...] = (-1, 1, 1)

    def checks(self):
        valid = (len(self.shape) == 3 and all(isinstance(x, int) and (x >= 1 or x == -1) for x in self.shape)
                 and self.shape.count(-1) <= 1)
        return [(valid, "shape", "must be 3 sizes (data, fsdp, tensor): positive integers, at most one -1")]


def resolve_mesh_shape(shape: Sequence[int], device_count: int) -> tuple[int, int, int]:
    """Fills one -1 entry of a (data, fsdp, tensor) shape so that the product is the device count."""
    shape = tuple(int(x) for x in shape)
    if len(shape) != 3:
        raise ValueError(f"mesh shape must have 3 entries (data, fsdp, tensor); got {shape}")
    if shape.count(-1) > 1 or any(x == 0 or x < -1 for x in shape):
        raise ValueError(f"mesh shape {shape}: use positive sizes and at most one -1")
    known = math.prod(x for x in shape if x != -1)
    if -1 in shape:
        if device_count % known:
            raise ValueError(f"mesh shape {shape} does not divide the {device_count} devices")
        shape = tuple(device_count // known if x == -1 else x for x in shape)
    if math.prod(shape) != device_count:
        raise ValueError(f"mesh shape {shape} needs {math.prod(shape)} devices; {device_count} are available")
    return shape


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh over all (or the given) devices with axes (data, fsdp, tensor).

    Axis types are Auto: linen's logical sharding constraints do not work on Explicit axes, the default of
    `jax.make_mesh`.
    """
    devices = list(devices) if devices is not None else jax.devices()
    shape = resolve_mesh_shape(shape, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def check_batch_divides(batch_size: int, mesh: Mesh, name: str) -> None:
    """Raises ValueError unless `batch_size` rows split evenly over the mesh's data-parallel devices (data x fsdp),
    each device getting at least one; `name` says which batch size it is."""
    devices = mesh.shape["data"] * mesh.shape["fsdp"]
    if batch_size % devices:
        raise ValueError(f"{name} {batch_size} is not divisible by the {devices} data-parallel devices of mesh "
                         f"{dict(mesh.shape)}")
