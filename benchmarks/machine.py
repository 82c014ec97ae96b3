"""What machine and software a result was measured on, and the file-name tag of the machine kind."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import re

PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "transformers", "keras", "keras-hub", "matplotlib")


# Vector / matrix extensions that change which GEMM kernels the frameworks pick: two hosts with the same model
# name but different extensions give different absolute times (and different torch / XLA ratios).
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def _cpuinfo_field(name: str) -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.split(":", 1)[0].strip() == name:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def cpu_features() -> dict:
    """The ISA extensions of `_ISA_FLAGS` the CPU reports, and its cache size line (None where unknown)."""
    flags = set((_cpuinfo_field("flags") or "").split())
    return {"isa": [f for f in _ISA_FLAGS if f in flags] if flags else None, "cache": _cpuinfo_field("cache size")}


def memory_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """The Python version and each installed distribution's version (None where it is not installed)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info() -> dict:
    import jax

    devices = jax.devices()
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_features": cpu_features(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_total_bytes": memory_total_bytes(),
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d.platform}:{d.device_kind}" for d in devices],
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "load_average_at_start": load_average(),
        "versions": versions(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def machine_kind(info: dict) -> str:
    """e.g. cpu_amd-epyc_2c, gpu_nvidia-h100-80gb-hbm3, tpu_tpu-v5-lite: the results file's name."""
    backend = info["jax_backend"]
    if backend == "cpu":
        cores = info.get("cpu_affinity") or info.get("cpu_count")
        return f"cpu_{_slug(info['cpu_model'])}_{cores}c"
    kind = info["jax_devices"][0].split(":", 1)[1]
    return f"{'gpu' if backend in ('gpu', 'cuda', 'rocm') else backend}_{_slug(kind)}"
