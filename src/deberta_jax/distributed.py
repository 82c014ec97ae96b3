"""Several JAX processes (a TPU pod slice, a SLURM job, `deberta-jax launch`): joining the runtime, barriers, each
process's rows of a global batch, and host copies of arrays that span processes.

Every process runs the same program on the same global batches; each holds a contiguous block of every batch's rows
(process i: rows [i*b, (i+1)*b) of a batch of b*process_count rows), which is how `make_mesh` orders the devices.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding

_ENVIRONMENT = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def maybe_initialize_distributed() -> None:
    """Joins a multi-process run when the launcher says there is one: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES
    and JAX_PROCESS_ID set by hand (all three), or DEBERTA_JAX_DISTRIBUTED=1 on a cluster that `jax.distributed`
    detects by itself (a TPU pod slice, SLURM). A single process needs nothing. Decided from the environment alone:
    any JAX call that starts the backend first would make initialising impossible. A process that cannot reach the
    coordinator gives up after DEBERTA_JAX_INIT_TIMEOUT seconds (default 300)."""
    if jax.distributed.is_initialized():
        return
    given = {name: os.environ.get(name) for name in _ENVIRONMENT if os.environ.get(name)}
    if given:
        # CPU processes exchange collectives through gloo; GPU and TPU backends ignore the setting.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        missing = [name for name in _ENVIRONMENT if name not in given]
        if missing:
            raise ValueError(f"a multi-process run needs all of {', '.join(_ENVIRONMENT)}; "
                             f"missing: {', '.join(missing)}")
        timeout = int(os.environ.get("DEBERTA_JAX_INIT_TIMEOUT", "300"))
        address, process_id = given["JAX_COORDINATOR_ADDRESS"], int(given["JAX_PROCESS_ID"])
        if process_id != 0:  # the runtime aborts the process when it cannot connect: check first, and say why
            _wait_for_coordinator(address, timeout, f"process {process_id} of {given['JAX_NUM_PROCESSES']}")
        jax.distributed.initialize(coordinator_address=address, num_processes=int(given["JAX_NUM_PROCESSES"]),
                                   process_id=process_id, initialization_timeout=timeout)
    elif os.environ.get("DEBERTA_JAX_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def _wait_for_coordinator(address: str, timeout: float, who: str) -> None:
    """Waits until the coordinator's port (process 0's) accepts connections; a clear error after `timeout` s."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"{who} could not reach the coordinator at {address} within {timeout:g} s "
                                   f"(DEBERTA_JAX_INIT_TIMEOUT): is process 0 running there? ({error})") from None
            time.sleep(0.5)


def is_main_process() -> bool:
    """Process 0 writes what must be written once: exports, summaries, submission files, logs, the progress bar."""
    return jax.process_index() == 0


def all_processes_reach(name: str) -> None:
    """A barrier: what process 0 wrote before it is there for every process after it."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def local_rows(global_rows: int) -> slice:
    """This process's block of a batch of `global_rows` rows."""
    count = jax.process_count()
    if global_rows % count:
        raise ValueError(f"a batch of {global_rows} rows does not split over {count} processes")
    size = global_rows // count
    return slice(jax.process_index() * size, (jax.process_index() + 1) * size)


def global_arrays(local: dict[str, np.ndarray], sharding: NamedSharding, batch_axis: int = 0) -> dict[str, jax.Array]:
    """Global arrays from each process's block of rows along `batch_axis` (the global batch is process_count times
    longer there)."""
    def one(x):
        shape = list(np.shape(x))
        shape[batch_axis] *= jax.process_count()
        return jax.make_array_from_process_local_data(sharding, x, tuple(shape))

    return {key: one(value) for key, value in local.items()}


def host_copy(tree):
    """A numpy copy of every array of `tree` on every process. Arrays split over several processes are gathered,
    a collective: all processes must call it together."""
    leaves = jax.tree_util.tree_leaves(tree)
    if all(getattr(leaf, "is_fully_addressable", True) or leaf.is_fully_replicated for leaf in leaves):
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
