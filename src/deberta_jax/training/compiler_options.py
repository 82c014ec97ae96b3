"""XLA compile options of the train step, per platform (what `jax.jit(..., compiler_options=...)` passes on).

A recipe can carry compiler flags this way: the TPU flags MaxText-style runs set for the whole process through
LIBTPU_INIT_ARGS apply here to the train step alone, and they travel with the recipe. Each platform's compiler
rejects the others' flags (`xla_tpu_*` is no option of XLA:CPU), so a recipe keys its options by platform and a
compile takes those of the platform its mesh is on.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from deberta_jax.config_tree import ConfigError, Section

_UNKNOWN = re.compile(r"No such compile option: '([^']+)'")


def _valid(options: dict) -> bool:
    return all(isinstance(k, str) and isinstance(v, (bool, int, float, str)) for k, v in options.items())


@dataclasses.dataclass(frozen=True)
class CompilerSection(Section):
    """Options by platform, e.g. `{"tpu": {"xla_tpu_enable_windowed_einsum_for_all_gather": false}}`."""

    tpu: dict = dataclasses.field(default_factory=dict)
    gpu: dict = dataclasses.field(default_factory=dict)
    cpu: dict = dataclasses.field(default_factory=dict)

    def checks(self):
        return [(_valid(getattr(self, platform)), platform, "must map option names to booleans, numbers or strings")
                for platform in ("tpu", "gpu", "cpu")]


def mesh_compiler_options(section: CompilerSection, mesh: Mesh, key: str) -> dict:
    """The options of `section` for the platform of `mesh`'s devices, checked by compiling a trivial program for
    those devices: an option that compiler does not know fails here, as a ConfigError naming `key.PLATFORM.OPTION`,
    not at the train step's first compile with XLA's bare message."""
    platform = mesh.devices.flat[0].platform
    options = dict(getattr(section, platform, {}))
    if not options:
        return options
    scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, PartitionSpec()))
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(scalar).compile()
    except jax.errors.JaxRuntimeError as error:
        unknown = _UNKNOWN.search(str(error))
        if unknown:
            raise ConfigError(f"{key}.{platform}.{unknown.group(1)}: not an option of XLA's {platform} compiler "
                              f"(jax {jax.__version__})") from None
        raise ConfigError(f"{key}.{platform}: {' '.join(str(error).split())[:300]}") from None
    return options
