"""Train state and the jitted, sharded train step (jax.jit with explicit in/out shardings: what pjit became)."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from deberta_jax.sharding.activations import activation_sharding
from deberta_jax.sharding.rules import DEFAULT_RULES, LogicalRules, batch_sharding, logical_shardings, replicated

LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array      # int32 []
    params: Any          # fp32 master weights
    opt_state: Any
    rng: jax.Array       # uint32 [2] raw key, split every step


def _state_initializer(model: nn.Module, init_args: tuple, optimizer: optax.GradientTransformation):
    """rng -> TrainState with boxed params; the optimizer state is built from the boxed params so that Adam's
    moments inherit the params' logical axes."""

    def init(rng):
        init_rng, state_rng = jax.random.split(rng)
        boxed = model.init(init_rng, *init_args)["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=boxed, opt_state=optimizer.init(boxed),
                          rng=state_rng)

    return init


def boxed_train_state(model: nn.Module, init_args: tuple, optimizer: optax.GradientTransformation):
    """The train state's shapes with the params' (and moments') logical-axis boxes, nothing allocated."""
    return jax.eval_shape(_state_initializer(model, init_args, optimizer), jax.ShapeDtypeStruct((2,), jnp.uint32))


def abstract_train_state(model: nn.Module, init_args: tuple, optimizer: optax.GradientTransformation, mesh: Mesh,
                         rules: LogicalRules = DEFAULT_RULES):
    """The train state as `jax.ShapeDtypeStruct` leaves that carry their shardings, nothing allocated: what an
    ahead-of-time compile lowers the step against. Returns (abstract_state, state_shardings)."""
    boxed = boxed_train_state(model, init_args, optimizer)
    shardings = logical_shardings(boxed, mesh, rules)
    abstract = jax.tree_util.tree_map(lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                                                  sharding=sharding),
                                      nn.meta.unbox(boxed), shardings)
    return abstract, shardings


def create_train_state(model: nn.Module, init_args: tuple, optimizer: optax.GradientTransformation, seed: int,
                       mesh: Mesh, rules: LogicalRules = DEFAULT_RULES, params=None):
    """Initialises params (or places the given `params`, e.g. a pretrained checkpoint) and the optimizer state
    directly in their shardings. Returns (state, state_shardings)."""
    init = _state_initializer(model, init_args, optimizer)
    rng = jax.random.PRNGKey(seed)
    _, shardings = abstract_train_state(model, init_args, optimizer, mesh, rules)
    if params is None:
        state = jax.jit(lambda r: nn.meta.unbox(init(r)), out_shardings=shardings)(rng)
    else:
        def place(p, r):
            return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p),
                              rng=jax.random.split(r)[1])

        state = jax.jit(place, out_shardings=shardings)(params, rng)
    return state, shardings


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                    state_shardings, mesh: Mesh, rules: LogicalRules = DEFAULT_RULES,
                    compiler_options: dict | None = None):
    """A jitted step `(state, batch) -> (state, metrics)`; the state is donated. `compiler_options` go to XLA
    (training/compiler_options.py).

    Every batch leaf is [accumulation_steps, micro_batch, ...]: gradients are averaged over the accumulation steps
    with a scan, so memory holds one micro-batch of activations. The model is traced inside `activation_sharding`,
    so its activations are constrained by `rules` too.
    """

    def step(state: TrainState, batch: dict):
        with activation_sharding(mesh, rules):
            return _step(state, batch)

    def _step(state: TrainState, batch: dict):
        rng, step_rng = jax.random.split(state.rng)
        accumulation = jax.tree_util.tree_leaves(batch)[0].shape[0]
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def micro_step(carry, xs):
            micro_batch, index = xs
            (_, metrics), grads = grad_fn(state.params, micro_batch, jax.random.fold_in(step_rng, index))
            return jax.tree_util.tree_map(jnp.add, carry, (grads, metrics)), None

        zeros = jax.tree_util.tree_map(
            jnp.zeros_like,
            jax.eval_shape(lambda: (state.params, grad_fn(state.params, jax.tree_util.tree_map(lambda x: x[0], batch),
                                                          step_rng)[0][1])))
        (grads, metrics), _ = jax.lax.scan(micro_step, zeros, (batch, jnp.arange(accumulation)))
        grads, metrics = jax.tree_util.tree_map(lambda x: x / accumulation, (grads, metrics))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), learning_rate=schedule(state.step))
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, rng=rng), metrics

    return jax.jit(step, in_shardings=(state_shardings, batch_sharding(mesh, rules, leading_axes=1)),
                   out_shardings=(state_shardings, replicated(mesh)), donate_argnums=(0,),
                   compiler_options=compiler_options or None)
