"""Peak memory of one implementation's step, measured in a fresh child process.

Run by the harness as `python -m benchmarks.memory_probe` with a JSON request on stdin
({"case": ..., "spec": ..., "weights": path of an .npz of the shared transformers weights}); prints one JSON line.

What is measured (CPU): the child imports the frameworks and records its resident set size (VmRSS); builds the
runner, makes the first (compiling) call and one more; records VmRSS again (`resident_after_warmup`: weights,
optimizer state, compiled code, allocator caches); resets the kernel's high-water mark (`echo 5 >
/proc/self/clear_refs`), makes one call, and reads VmHWM. Reported:

- `step_peak_growth` = VmHWM during the call - VmRSS before it: the transient memory of one step (activations,
  gradients, temporaries) on top of what stays resident.
- `peak_over_imports` = VmHWM during the call - VmRSS after imports: everything the workload holds at its peak,
  the framework libraries excluded.

The child runs with MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ fixed at 128 KiB so that glibc returns freed
large blocks to the kernel (otherwise a warmed-up allocator hides the step's allocations inside already-resident
memory); torch and XLA:CPU both allocate tensors through malloc. On GPU the child also reports the device peak:
torch.cuda.max_memory_allocated (reset before the call) and, for JAX, memory_stats()["peak_bytes_in_use"] (a
process-lifetime peak, compilation-time scratch included).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import numpy as np

from benchmarks.cases import Case
from benchmarks.runners import runner_from_spec
from benchmarks.runners.keras_jax import keras_import

# The folder that holds the `benchmarks` package: the child imports it from there whatever its working directory.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def read_status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def probe(request: dict) -> dict:
    case = Case(**request["case"])
    spec = request["spec"]
    if spec["family"] == "keras-hub":
        keras_import()
    elif spec["family"] == "transformers":
        import torch  # noqa: F401
        import transformers  # noqa: F401
    import jax

    jax.devices()
    rss_imports = read_status()["VmRSS"]
    with np.load(request["weights"]) as data:
        state = {k: data[k] for k in data.files}
    runner = runner_from_spec(spec, case, state)
    t0 = time.perf_counter()
    runner.build()
    runner.hf_state = None
    del state
    gc.collect()
    runner.prepare()
    runner.call()
    build_s = time.perf_counter() - t0
    gc.collect()
    before = read_status()["VmRSS"]
    torch_cuda = None
    if spec["family"] == "transformers":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            torch_cuda = torch.cuda.memory_allocated()
    resettable = reset_peak()
    runner.call()
    status = read_status()
    result = {
        "method": "fresh child process; VmHWM reset before one step (see memory_probe.py)",
        "resident_after_imports": rss_imports,
        "resident_after_warmup": before,
        "step_peak": status["VmHWM"],
        "step_peak_growth": status["VmHWM"] - before if resettable else None,
        "peak_over_imports": status["VmHWM"] - rss_imports,
        "hwm_reset_supported": resettable,
        "build_and_warmup_s": round(build_s, 3),
    }
    if torch_cuda is not None:
        import torch

        result["torch_cuda"] = {"allocated_before": int(torch_cuda), "peak": int(torch.cuda.max_memory_allocated()),
                                "peak_growth": int(torch.cuda.max_memory_allocated() - torch_cuda)}
    device = jax.devices()[0]
    if device.platform != "cpu":
        try:
            stats = device.memory_stats() or {}
            result["jax_device"] = {k: int(stats[k]) for k in ("bytes_in_use", "peak_bytes_in_use") if k in stats}
        except Exception as e:  # noqa: BLE001
            result["jax_device"] = {"error": repr(e)}
    runner.close()
    return result


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        result = {"status": "ok", **probe(request)}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which records it
        import traceback

        result = {"status": "error", "error": f"{type(e).__name__}: {e}",
                  "traceback": traceback.format_exc().splitlines()[-6:]}
    sys.stdout.write("\nPROBE_RESULT " + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def run_probe(case_dict: dict, spec: dict, weights_path: str, timeout_s: float) -> dict:
    """Runs one probe in a child process (called by the harness)."""
    env = dict(os.environ, **PROBE_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    env.setdefault("KERAS_BACKEND", "jax")
    request = json.dumps({"case": case_dict, "spec": spec, "weights": weights_path})
    try:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.memory_probe"], input=request,
                              capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"memory probe timed out after {timeout_s:.0f}s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("PROBE_RESULT "):
            return json.loads(line[len("PROBE_RESULT "):])
    return {"status": "error", "error": f"memory probe exited with {proc.returncode} and no result",
            "stderr_tail": proc.stderr.splitlines()[-8:]}


if __name__ == "__main__":
    sys.exit(main())
