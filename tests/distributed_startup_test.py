"""Start-up of a multi-process run: two real JAX processes on this machine join through the coordinator that the
environment names, before any other JAX call (calling jax.process_count() first made initialising impossible)."""

import os
import subprocess
import sys

import pytest

from jax_processes import free_port, run_jax_processes

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

JOIN = """
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
from deberta_jax.distributed import maybe_initialize_distributed
maybe_initialize_distributed()
maybe_initialize_distributed()  # a second call (a second command in one process) is a no-op
print(jax.process_index(), jax.process_count(), jax.device_count())
"""


def test_two_processes_join_through_the_environment():
    results = run_jax_processes(JOIN)
    for returncode, _, err in results:
        assert returncode == 0, err[-2000:]
    outputs = [out for _, out, _ in results]
    assert sorted(out.split()[0] for out in outputs) == ["0", "1"]
    assert all(out.split()[1:] == ["2", "4"] for out in outputs)


def test_an_unreachable_coordinator_fails_fast_with_a_clear_error():
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}", "JAX_NUM_PROCESSES": "2",
           "JAX_PROCESS_ID": "1", "JAX_PLATFORMS": "cpu", "DEBERTA_JAX_INIT_TIMEOUT": "5"}
    result = subprocess.run([sys.executable, "-c", JOIN], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "process 1 of 2 could not reach the coordinator at 127.0.0.1:" in result.stderr
    assert "within 5 s" in result.stderr
