"""Start-up of a multi-process run: two real JAX processes on this machine join through the coordinator that the
environment names, before any other JAX call (calling jax.process_count() first made initialising impossible)."""

import os
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

JOIN = """
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from deberta_jax.distributed import maybe_initialize_distributed
maybe_initialize_distributed()
maybe_initialize_distributed()  # a second call (a second command in one process) is a no-op
print(jax.process_index(), jax.process_count(), jax.device_count())
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_join_through_the_environment():
    port = _free_port()
    processes = []
    for index in range(2):
        env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
               "JAX_PROCESS_ID": str(index), "JAX_PLATFORMS": "cpu",
               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
        processes.append(subprocess.Popen([sys.executable, "-c", JOIN], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=180) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-2000:]
    assert sorted(out.split()[0] for out, _ in outputs) == ["0", "1"]
    assert all(out.split()[1:] == ["2", "4"] for out, _ in outputs)


def test_an_unreachable_coordinator_fails_fast_with_a_clear_error():
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{_free_port()}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "1", "JAX_PLATFORMS": "cpu", "DEBERTA_JAX_INIT_TIMEOUT": "5"}
    result = subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "process 1 of 2 could not reach the coordinator at 127.0.0.1:" in result.stderr
    assert "within 5 s" in result.stderr
