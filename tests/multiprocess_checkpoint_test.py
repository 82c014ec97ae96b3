"""Checkpoints of a run of two JAX processes: every save writes the train state and, when the score improves, the
best params, both at the same step. Both orbax managers once named their barriers after the step directory alone,
so the two saves of one step collided across processes (a hang or "Timed out while waiting for
async_write_complete barrier", at random in the fine-tuning test and on every step here)."""

import json

import pytest

from jax_processes import run_jax_processes

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SAVE_EVERY_STEP = """
import json, sys
from deberta_jax.distributed import maybe_initialize_distributed
maybe_initialize_distributed()
import flax.struct, jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from deberta_jax.training.checkpointing import TrainCheckpointer

mesh = jax.make_mesh((jax.device_count(),), ("data",))
rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())

@flax.struct.dataclass
class State:
    params: dict
    step: jax.Array

state = State(params={"w": jax.device_put(jnp.zeros((8, 4)), rows)}, step=jax.device_put(jnp.int32(0), replicated))
checkpointer = TrainCheckpointer(sys.argv[1] + "/checkpoints", keep=2, best_directory=sys.argv[1] + "/best")
for step in range(1, 7):
    state = jax.tree_util.tree_map(lambda x: x + 1, state)
    checkpointer.save(step, state, {"position": step}, score=float(step))  # improves every time: two saves a step
checkpointer.close()
restored, record = checkpointer.restore(state, jax.tree_util.tree_map(lambda x: x.sharding, state))
best = checkpointer.best_params(state.params)
print(json.dumps({"latest": checkpointer.latest_step(), "record": record["position"], "best": checkpointer.best,
                  "w": float(restored.params["w"].sum()), "best_w": float(best["w"].sum())}))
"""


def test_two_processes_save_state_and_best_params_at_the_same_steps(tmp_path):
    results = run_jax_processes(SAVE_EVERY_STEP, [str(tmp_path)], timeout=120)
    for returncode, _, err in results:
        assert returncode == 0, err[-3000:]
    for _, out, _ in results:
        report = json.loads(out.strip().splitlines()[-1])
        assert report == {"latest": 6, "record": 6, "best": {"score": 6.0, "step": 6}, "w": 6.0 * 32,
                          "best_w": 6.0 * 32}
