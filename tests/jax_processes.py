"""Runs a Python snippet as several real JAX processes on this machine, joined through a coordinator on
127.0.0.1 (the environment `deberta_jax.distributed.maybe_initialize_distributed` reads)."""

import os
import socket
import subprocess
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_jax_processes(code: str, args: list[str] = (), processes: int = 2, devices_per_process: int = 2,
                      timeout: float = 180) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each process; all are killed after `timeout` seconds."""
    port = free_port()
    children = []
    for index in range(processes):
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(processes),
               "JAX_PROCESS_ID": str(index), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}"}
        children.append(subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True))
    try:
        outputs = [child.communicate(timeout=timeout) for child in children]
    finally:
        for child in children:
            child.kill()
    return [(child.returncode, out, err) for child, (out, err) in zip(children, outputs)]
