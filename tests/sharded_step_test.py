"""One train step on an 8-device (data 2 x fsdp 2 x tensor 2) fake CPU mesh equals the single-device step."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]

SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from deberta_jax.config import DebertaConfig
    from deberta_jax.pretraining.rtd import ReplacedTokenDetection, generator_config
    from deberta_jax.pretraining.objectives import rtd_loss_fn
    from deberta_jax.sharding.mesh import make_mesh
    from deberta_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
    from deberta_jax.training.train_step import create_train_state, make_train_step

    assert jax.device_count() == 8
    config = DebertaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, relative_attention=True,
                           position_buckets=8, max_relative_positions=64, norm_rel_ebd="layer_norm",
                           share_att_key=True, pos_att_type=("p2c", "c2p"), position_biased_input=False,
                           **json.loads(sys.argv[1]))
    model = ReplacedTokenDetection(generator_config(config), config, "gdes")
    opt_cfg = OptimizerConfig(learning_rate=1e-3, warmup_steps=0)
    schedule = learning_rate_schedule(opt_cfg, 10)
    optimizer = make_optimizer(opt_cfg, schedule)
    rng = np.random.default_rng(0)
    ids = rng.integers(4, 128, size=(2, 8, 16)).astype(np.int32)   # [accumulation, batch, seq]
    positions = np.stack([np.sort(rng.choice(np.arange(1, 16), 3, replace=False)) for _ in range(16)])
    positions = positions.reshape(2, 8, 3).astype(np.int32)
    masked = ids.copy()
    np.put_along_axis(masked, positions, 127, axis=-1)
    batch = {"input_ids": masked, "original_ids": ids, "attention_mask": np.ones_like(ids),
             "masked_positions": positions, "masked_labels": np.take_along_axis(ids, positions, -1),
             "masked_weights": np.ones(positions.shape, np.float32)}
    init_args = (jnp.zeros((1, 16), jnp.int32),)

    def run(mesh):
        state, shardings = create_train_state(model, init_args, optimizer, 0, mesh)
        step = make_train_step(rtd_loss_fn(model), optimizer, schedule, shardings, mesh)
        text = step.lower(state, batch).as_text()
        state, metrics = step(state, batch)
        return jax.device_get(state.params), jax.device_get(metrics), state.params, text

    single, m1, _, _ = run(make_mesh((1, 1, 1), devices=jax.devices()[:1]))
    sharded, m8, live, text = run(make_mesh((2, 2, 2)))
    # Activations are pinned (sharding/activations.py): rows over data x fsdp everywhere; q / k / v [B, N, H, D]
    # and the feed-forward's inner activations also split over tensor. Counted in both models (generator and
    # discriminator), forward pass only: at least one per layer of each.
    constraints = [line for line in text.splitlines() if "sdy.sharding_constraint" in line]
    rows = [line for line in constraints if '[{"data", "fsdp"}, {}, {}]' in line]
    heads = [line for line in constraints if '[{"data", "fsdp"}, {}, {"tensor"}, {}]' in line]
    mlp = [line for line in constraints if '[{"data", "fsdp"}, {}, {"tensor"}]' in line]
    layers = 1 + config.num_hidden_layers
    print("constraints", len(constraints), len(rows), len(heads), len(mlp))
    assert len(rows) >= layers and len(heads) >= 3 * layers and len(mlp) >= layers, text[:3000]
    worst = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree_util.tree_leaves(single),
                                                            jax.tree_util.tree_leaves(sharded)))
    print("max_abs_param_diff", worst, "loss", float(m1["loss"]), float(m8["loss"]))
    assert worst <= 1e-5, worst
    assert abs(float(m1["loss"]) - float(m8["loss"])) <= 1e-5
    table = live["generator"]["deberta"]["embeddings"]["word_embeddings"]["embedding"]
    assert table.sharding.spec == P("tensor", "fsdp"), table.sharding.spec
    encoder = live["discriminator"]["encoder"]
    if config.scan_layers:  # stacked layers: the leading layer axis stays whole on every device
        query, ffn, lead = encoder["layers"]["attention"]["self"]["query_proj"]["kernel"], \
            encoder["layers"]["output"]["dense"]["kernel"], (None,)
    else:
        query, ffn, lead = encoder["layer_0"]["attention"]["self"]["query_proj"]["kernel"], \
            encoder["layer_1"]["output"]["dense"]["kernel"], ()
    assert query.sharding.spec == P(*lead, "fsdp", "tensor"), query.sharding.spec
    assert ffn.sharding.spec == P(*lead, "tensor", "fsdp"), ffn.sharding.spec
    shard = table.addressable_shards[0].data
    assert shard.shape == (64, 16), shard.shape    # really split, not replicated
    print("OK")
""")


@pytest.mark.parametrize("overrides", [{}, {"scan_layers": True, "attention_impl": "skew"}],
                         ids=["per_layer_reference", "scanned_skew"])
def test_sharded_step_equals_single_device_step(overrides):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(overrides)], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK" in result.stdout
