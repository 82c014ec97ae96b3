"""Several JAX processes on one machine, as a pod slice or a multi-host GPU job would run them: a rehearsal of a
multi-process run before paying for one, and what the multi-process tests use.

    deberta-jax launch --processes 2 --devices-per-process 2 -- pretrain --config tiny_cpu --workdir runs/mp

Each process runs the same `deberta-jax` command with its own JAX_PROCESS_ID, the same coordinator on 127.0.0.1 and
`--devices-per-process` fake CPU devices; its output lines are prefixed with `[i]`. When one process fails, the
others are stopped and the launcher exits with the failed one's status.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

STOP_GRACE_SECONDS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _relay(index: int, stream, out) -> None:
    for line in stream:
        out.write(f"[{index}] {line}")
        out.flush()


def launch(command: list[str], processes: int, devices_per_process: int, port: int | None = None) -> int:
    """Runs `deberta-jax COMMAND` as `processes` JAX processes; returns 0 when all succeed, else the first
    failure's exit status, 128 + N for signal N (the others are stopped)."""
    if processes < 1 or devices_per_process < 1:
        raise ValueError(f"--processes {processes} and --devices-per-process {devices_per_process} must be >= 1")
    address = f"127.0.0.1:{port or _free_port()}"
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    children, relays = [], []
    for index in range(processes):
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": str(processes),
               "JAX_PROCESS_ID": str(index), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()}
        child = subprocess.Popen([sys.executable, "-m", "deberta_jax.cli", *command], env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        relay = threading.Thread(target=_relay, args=(index, child.stdout, sys.stdout), daemon=True)
        relay.start()
        children.append(child)
        relays.append(relay)
    failed = None  # (index, returncode) of the first process seen failing
    try:
        while failed is None and any(child.poll() is None for child in children):
            failed = next(((i, c.returncode) for i, c in enumerate(children) if c.poll() not in (None, 0)), None)
            time.sleep(0.2)
        failed = failed or next(((i, c.returncode) for i, c in enumerate(children) if c.returncode), None)
    finally:
        _stop(children)
        for relay in relays:
            relay.join(timeout=5)
    if failed is None:
        return 0
    index, returncode = failed
    how = f"was killed by {signal.Signals(-returncode).name}" if returncode < 0 else f"exited with status {returncode}"
    print(f"deberta-jax launch: process {index} {how}; stopped the others", file=sys.stderr)
    return 128 - returncode if returncode < 0 else returncode  # a shell's status for a signal


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGTERM to every child still running, then SIGKILL to those alive after a grace period."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
