"""The runner interface, the AOT-compiled JAX runner both JAX frameworks build on, and the names of the specs.

A runner's life: `build()` (construct, load weights, lower/compile where AOT applies), `prepare()` (the first call,
timed apart: it includes compilation for jit/torch.compile), `call()` (one synchronised step: what is timed),
`check_output()` (fp32 NumPy output for the numerical check: the last hidden state for forward, eval-mode logits
at the masked positions for train), `memory()` and `device_memory()`, `close()`.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from benchmarks.cases import Case

# The train step's hyper-parameters, the same in every framework.
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-6
CLIP_NORM = 1.0


def spec_name(spec: dict) -> str:
    """The implementation's name in results and logs, e.g. "ours[chunked,scan]", "transformers-eager"."""
    if spec["family"] == "ours":
        return f"ours[{spec['impl']}{',scan' if spec['scan'] else ''}]"
    if spec["family"] == "transformers":
        return "transformers-compile" if spec["compiled"] else "transformers-eager"
    return spec["family"]


class Runner:
    family = ""

    def __init__(self, case: Case, name: str):
        self.case = case
        self.name = name
        self.meta: dict[str, Any] = {"family": self.family}
        self.compile_s: float | None = None

    def build(self) -> None:
        raise NotImplementedError

    def prepare(self) -> float:
        """The first call; returns its seconds (compilation included where the framework compiles lazily)."""
        t0 = time.perf_counter()
        self.call()
        return time.perf_counter() - t0

    def call(self) -> None:
        raise NotImplementedError

    def check_output(self) -> np.ndarray:
        raise NotImplementedError

    def memory(self) -> dict:
        return {}

    def device_memory(self) -> dict:
        """Accelerator memory of one more call, measured by the framework's allocator (empty where it has none)."""
        return {}

    def xla_flops(self) -> float | None:
        return None

    def close(self) -> None:
        for attr in list(vars(self)):
            if attr not in ("case", "name", "meta", "compile_s"):
                setattr(self, attr, None)
        gc.collect()


def compiled_memory(compiled) -> dict:
    """XLA's buffer assignment of a compiled program: bytes of arguments, outputs, temporaries (activations and
    intermediates live at once, at their peak), aliased (donated) bytes; peak = arguments + outputs + temp - alias."""
    try:
        m = compiled.memory_analysis()
    except Exception as e:  # noqa: BLE001 - some backends have no analysis
        return {"error": f"{type(e).__name__}: {e}"}
    if m is None:
        return {"error": "memory_analysis() returned None on this backend"}
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["peak_estimate"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


class JitRunner(Runner):
    """A runner whose program is one AOT-compiled JAX function: `compiled(*args)` for forward, `train_step()` (which
    advances the runner's own state and returns the step's outputs) for train."""

    def call(self) -> None:
        import jax

        self.last = self.compiled(*self.args) if self.case.workload == "forward" else self.train_step()
        jax.block_until_ready(self.last)

    def train_step(self):
        raise NotImplementedError

    def memory(self) -> dict:
        return {"compiled": compiled_memory(self.compiled)}

    def xla_flops(self) -> float | None:
        from deberta_jax.training.throughput import compiled_flops

        return compiled_flops(self.compiled)
