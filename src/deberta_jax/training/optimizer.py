"""AdamW with warmup + linear decay, global-norm clipping, and no weight decay on biases and LayerNorm."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from deberta_jax.config_tree import Section
from deberta_jax.model.layer_stacking import is_stacked


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Section):
    """AdamW with warmup + linear decay. Defaults are microsoft/DeBERTa's pretraining settings (Adam eps 1e-6,
    decay 0.01, clip 1.0). The run's length decides the total number of steps, so it is not a field here."""

    learning_rate: float = 1e-4
    warmup_steps: int | None = None   # linear warmup over this many steps; None: warmup_ratio of the run
    warmup_ratio: float = 0.0
    end_learning_rate: float = 0.0
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-6
    clip_norm: float = 1.0            # <= 0: no clipping
    layer_decay: float = 1.0          # layer-wise LR decay: layer i of L gets decay**(L - i), embeddings decay**(L + 1)

    def checks(self):
        return [(self.learning_rate > 0, "learning_rate", "must be > 0"),
                (self.warmup_steps is None or self.warmup_steps >= 0, "warmup_steps", "must be >= 0 or null"),
                (0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)"),
                (self.end_learning_rate >= 0, "end_learning_rate", "must be >= 0"),
                (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
                (0 <= self.b1 < 1, "b1", "must be in [0, 1)"), (0 <= self.b2 < 1, "b2", "must be in [0, 1)"),
                (self.eps > 0, "eps", "must be > 0"),
                (0 < self.layer_decay <= 1, "layer_decay", "must be in (0, 1]")]

    def warmup(self, total_steps: int) -> int:
        """Warmup steps of a run of `total_steps`: warmup_steps (capped at the run) or warmup_ratio of it."""
        if self.warmup_steps is not None:
            return min(self.warmup_steps, total_steps)
        return int(self.warmup_ratio * total_steps)


def learning_rate_schedule(cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to the peak, then linear decay to `end_learning_rate` at `total_steps`."""
    if total_steps < 1:
        raise ValueError(f"a learning-rate schedule needs total_steps >= 1, got {total_steps}")
    warmup_steps = cfg.warmup(total_steps)
    warmup = optax.linear_schedule(0.0, cfg.learning_rate, max(warmup_steps, 1))
    decay = optax.linear_schedule(cfg.learning_rate, cfg.end_learning_rate, max(total_steps - warmup_steps, 1))
    if warmup_steps == 0:
        return decay
    return optax.join_schedules([warmup, decay], [warmup_steps])


def decay_mask(params):
    """True for matrices (kernels, embeddings); False for biases and LayerNorm scales (1-D per layer: the stacked
    layer axis of scan_layers does not count)."""
    return jax.tree_util.tree_map_with_path(lambda path, p: p.ndim - is_stacked(path) > 1, params)


def layer_decay_factors(params, num_layers: int, decay: float):
    """Learning-rate multipliers per parameter: encoder layer i -> decay**(num_layers - i); embeddings, relative
    embeddings and the conv branch -> decay**(num_layers + 1); heads -> 1."""
    def factor(path, leaf):
        names = [getattr(k, "key", str(k)) for k in path]
        if is_stacked(path):  # scanned layers: one factor per slice of the leading layer axis, broadcast over the rest
            depth = jnp.arange(num_layers - leaf.shape[0], num_layers)
            return (decay ** (num_layers - depth)).reshape((-1,) + (1,) * (leaf.ndim - 1))
        for name in names:
            if name.startswith("layer_") and name[6:].isdigit():
                return decay ** (num_layers - int(name[6:]))
        if "embeddings" in names or "encoder" in names:
            return decay ** (num_layers + 1)
        return 1.0

    return jax.tree_util.tree_map_with_path(factor, params)


def _scale_by_tree(factors) -> optax.GradientTransformation:
    def update(updates, state, params=None):
        del params
        return jax.tree_util.tree_map(lambda u, f: u * f, updates, factors), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def clip_by_group_norm(max_norm: float, labels, names: tuple[str, ...]) -> optax.GradientTransformation:
    """Clips each group of parameters to `max_norm` by the group's own global norm.

    labels: params -> a tree of group names, one per leaf, from `names` (optax.multi_transform's labels).
    """
    return optax.multi_transform({name: optax.clip_by_global_norm(max_norm) for name in names}, labels)


def make_optimizer(cfg: OptimizerConfig, schedule: optax.Schedule, layer_factors=None,
                   clip_groups=None) -> optax.GradientTransformation:
    """AdamW stepping along `schedule` (from `learning_rate_schedule`, built once per run: the train step logs
    it). `layer_factors` (from `layer_decay_factors`) scales each parameter's step when cfg.layer_decay != 1;
    `clip_groups` = (labels, names) clips each group by its own norm instead of one global norm (see
    clip_by_group_norm)."""
    if cfg.layer_decay != 1.0 and layer_factors is None:
        raise ValueError("OptimizerConfig.layer_decay needs layer_factors (see layer_decay_factors)")
    if cfg.clip_norm <= 0:
        clip = optax.identity()
    elif clip_groups is not None:
        clip = clip_by_group_norm(cfg.clip_norm, *clip_groups)
    else:
        clip = optax.clip_by_global_norm(cfg.clip_norm)
    return optax.chain(
        clip,
        optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                    weight_decay=cfg.weight_decay, mask=decay_mask),
        _scale_by_tree(layer_factors) if cfg.layer_decay != 1.0 else optax.identity(),
    )
