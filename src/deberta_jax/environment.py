"""What `deberta-jax info` reports: the versions of the stack, the JAX backend and its devices, and which optional
packages are installed. Optional packages are looked up, never imported (importing torch takes seconds)."""

from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import platform

# (row name, distribution) of what every run needs.
STACK = (("jax", "jax"), ("jaxlib", "jaxlib"), ("flax", "flax"), ("optax", "optax"),
         ("orbax-checkpoint", "orbax-checkpoint"))
# (row name, module, distributions that provide it) of what some features need: torch / transformers for parity
# checks and pytorch_model.bin, libtpu for TPUs, huggingface_hub for Hub ids.
OPTIONAL = (("torch", "torch", ("torch",)), ("transformers", "transformers", ("transformers",)),
            ("libtpu", "libtpu", ("libtpu", "libtpu-nightly")),
            ("huggingface_hub", "huggingface_hub", ("huggingface_hub",)))


def _version(distributions: tuple[str, ...]) -> str | None:
    for distribution in distributions:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _optional(module: str, distributions: tuple[str, ...]) -> str:
    if importlib.util.find_spec(module) is None:
        return "not installed"
    return _version(distributions) or "installed (version unknown)"


def describe_devices(devices) -> str:
    """'4 x NVIDIA H200' for a list of jax devices; kinds in order of first appearance."""
    counts = collections.Counter(device.device_kind for device in devices)
    return ", ".join(f"{count} x {kind}" for kind, count in counts.items())


def environment() -> list[tuple[str, str]]:
    """(name, value) rows: package, python, the stack's versions, backend, devices, optional packages."""
    import jax

    from deberta_jax import __version__

    rows = [("deberta-jax", __version__),
            ("python", f"{platform.python_version()} ({platform.python_implementation()}, {platform.system()} "
                       f"{platform.machine()})")]
    rows += [(name, _version((distribution,)) or "not installed") for name, distribution in STACK]
    rows += [("backend", jax.default_backend()),
             ("devices", f"{describe_devices(jax.devices())} (process {jax.process_index()} of "
                         f"{jax.process_count()})")]
    rows += [(name, _optional(module, distributions)) for name, module, distributions in OPTIONAL]
    return rows
