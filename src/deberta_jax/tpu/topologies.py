"""TPU chips (the published per-chip figures) and slices (names as Cloud TPU sells them -> libtpu topologies).

A slice's devices come from libtpu's topology description: real TPU device objects, on a machine with no TPU, that
`jax.jit(...).lower(...).compile()` compiles for. Only the compiler runs; nothing is measured.
"""

from __future__ import annotations

import dataclasses

GB, GIB = 1e9, 2.0 ** 30
LIBTPU_INSTALL = 'pip install "deberta-jax[tpu]" (or "jax[tpu]==<your jax version>", which brings libtpu)'


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """One chip's published figures (per chip, not per TensorCore), as the source page states them."""

    name: str
    hbm_bytes: float
    peak_bf16_flops: float     # FLOP/s
    hbm_bandwidth: float       # bytes/s
    source: str


# Values from each chip's Cloud TPU page; "GB" there read as 10^9 bytes, "GiB" as 2^30.
CHIPS: dict[str, ChipSpec] = {
    "v4": ChipSpec("v4", 32 * GIB, 275e12, 1200 * GB, "https://cloud.google.com/tpu/docs/v4"),
    "v5e": ChipSpec("v5e", 16 * GB, 197e12, 819 * GB, "https://cloud.google.com/tpu/docs/v5e"),
    "v5p": ChipSpec("v5p", 95 * GB, 459e12, 2765 * GB, "https://cloud.google.com/tpu/docs/v5p"),
    "v6e": ChipSpec("v6e", 32 * GB, 918e12, 1638 * GB, "https://cloud.google.com/tpu/docs/v6e"),
}


@dataclasses.dataclass(frozen=True)
class SliceSpec:
    """A slice by its Cloud TPU name (e.g. "v5e-8"): the chip, libtpu's topology name and the chip count.

    v4 and v5p names count TensorCores (two per chip, run as one "megacore" device): v5p-8 is 4 chips. v5e and v6e
    names count chips (one TensorCore each).
    """

    name: str
    chip: ChipSpec
    topology: str                       # libtpu's name, e.g. "v5e:2x4"
    host_chips: tuple[int, int, int]    # chips of one host along each axis (a v5e host holds 2x4, a v5p host 2x2x1)
    chip_config: str | None = None      # "megacore" for v4 and v5p: one JAX device per chip

    @property
    def chips(self) -> int:
        dims = [int(x) for x in self.topology.split(":")[1].split("x")]
        count = 1
        for d in dims:
            count *= d
        return count


def _slices() -> dict[str, SliceSpec]:
    table = {}
    for chip in ("v5e", "v6e"):
        for shape in ("1x1", "2x2", "2x4", "4x4", "4x8", "8x8", "8x16", "16x16"):
            x, y = (int(d) for d in shape.split("x"))
            spec = SliceSpec("", CHIPS[chip], f"{chip}:{shape}", (min(x, 2), min(y, 4), 1))
            table[f"{chip}-{spec.chips}"] = dataclasses.replace(spec, name=f"{chip}-{spec.chips}")
    for chip, prefix in (("v4", "v4"), ("v5p", "v5")):
        for shape in ("2x2x1", "2x2x2", "2x2x4", "2x4x4", "4x4x4"):
            spec = SliceSpec("", CHIPS[chip], f"{prefix}:{shape}", (2, 2, 1), "megacore")
            table[f"{chip}-{2 * spec.chips}"] = dataclasses.replace(spec, name=f"{chip}-{2 * spec.chips}")
    return table


SLICES: dict[str, SliceSpec] = _slices()


def get_slice(name: str) -> SliceSpec:
    """The slice named `name` (e.g. "v5e-8", "v5p-8"); a one-line error naming the known ones otherwise."""
    if name not in SLICES:
        raise ValueError(f"unknown TPU topology {name!r}; known: {', '.join(SLICES)}")
    return SLICES[name]


def slice_devices(spec: SliceSpec) -> list:
    """libtpu's devices of the slice (one per chip), to build a mesh over and compile for; no TPU needed."""
    try:
        import libtpu  # noqa: F401  (jax finds the compiler through this package)
    except ImportError:
        raise ImportError(f"compiling for TPU needs libtpu, which is not installed: {LIBTPU_INSTALL}") from None
    from jax.experimental import topologies

    kwargs = {"chip_config_name": spec.chip_config} if spec.chip_config else {}
    devices = topologies.get_topology_desc(platform="tpu", topology_name=spec.topology,
                                           chips_per_host_bounds=spec.host_chips, **kwargs).devices
    if len(devices) != spec.chips:
        raise RuntimeError(f"libtpu describes {spec.topology} ({spec.name}) as {len(devices)} devices; expected one "
                           f"per chip, {spec.chips}")
    return list(devices)
