"""A whole fine-tuning run of our jitted train step against a plain PyTorch loop on transformers'
DebertaV2ForSequenceClassification: same initial weights and batches; AdamW with the same betas, eps, weight decay
and decay mask; the same warmup + linear decay, global-norm clipping and layer-wise LR decay; dropout 0.

Compared over 100 steps: the loss, the pre-clipping gradient norm and the learning rate of every step (rtol 1e-4),
and at the end every parameter tensor (max|ours - theirs| <= 1e-4 * max|theirs|, per tensor).

Both sides run in float32: after 100 steps the measured drift stays ~30x below the tolerance, so the float64 mode
that the pretraining comparison needs (tests/pretraining_training_vs_reference_test.py) is not used here.
"""

import re

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from deberta_jax.conversion.hf_checkpoint import params_to_state_dict
from deberta_jax.finetuning.train import FinetuneConfig, make_loss_fn
from deberta_jax.model.vocab_padding import unpadded_params
from deberta_jax.sharding.mesh import make_mesh
from deberta_jax.training.optimizer import (
    OptimizerConfig, layer_decay_factors, learning_rate_schedule, make_optimizer,
)
from deberta_jax.training.train_step import create_train_state, make_train_step
from reference import jax_twin, padded_batch, random_hf_model

pytestmark = [pytest.mark.slow, pytest.mark.reference]

HEAD = "sequence_classification"
STEPS, WARMUP, BATCH, SEQ = 100, 10, 4, 16
# Batches cycle 4 times: the loss falls but stays far from 0, where its relative error would be all rounding.
NUM_BATCHES = 25
RTOL = 1e-4
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pooler_dropout=0.0, cls_dropout=0.0)
_TORCH_LAYER = re.compile(r"^deberta\.encoder\.layer\.(\d+)\.")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The model is tiny: one thread is faster than two fighting over a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _batches(num_labels: int, vocab: int) -> list[dict]:
    """Right-padded batches (row b keeps SEQ - 3b tokens) with class ids, or float targets for one label."""
    rng = np.random.default_rng(1)
    batches = []
    for i in range(NUM_BATCHES):
        ids, mask, types = padded_batch(vocab, BATCH, SEQ, seed=10 + i)
        labels = (rng.normal(size=BATCH).astype(np.float32) if num_labels == 1
                  else rng.integers(0, num_labels, size=BATCH))
        batches.append(dict(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels))
    return batches


def _schedule_fraction(step: int) -> float:
    """Fraction of the peak LR after `step` updates: linear warmup from 0 over WARMUP steps, then linear decay to 0
    at STEPS."""
    if step < WARMUP:
        return step / WARMUP
    return max(0.0, 1 - (step - WARMUP) / (STEPS - WARMUP))


def _torch_run(hf_model, batches, opt_cfg: OptimizerConfig):
    """The plain loop. Param groups by (layer factor, weight decay on or off), read off the torch names and shapes
    alone: layer i of L gets decay**(L - i), the rest of the backbone decay**(L + 1), pooler and classifier 1;
    weight decay on matrices and embeddings, not on biases or LayerNorm."""
    num_layers = hf_model.config.num_hidden_layers
    groups = {}
    for name, p in hf_model.named_parameters():
        if m := _TORCH_LAYER.match(name):
            factor = opt_cfg.layer_decay ** (num_layers - int(m.group(1)))
        elif name.startswith(("deberta.embeddings.", "deberta.encoder.")):
            factor = opt_cfg.layer_decay ** (num_layers + 1)
        else:
            factor = 1.0
        groups.setdefault((factor, p.ndim > 1), []).append(p)
    optimizer = torch.optim.AdamW(
        [dict(params=ps, lr=opt_cfg.learning_rate * factor, weight_decay=opt_cfg.weight_decay if decay else 0.0,
              factor=factor) for (factor, decay), ps in groups.items()],
        betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps)
    # LambdaLR scales each group's lr by the fraction for the updates done so far, as optax evaluates its schedule
    # at the count before the update: the first step trains with lr 0.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule_fraction)
    hf_model.train()
    losses, norms, rates = [], [], []
    for step in range(STEPS):
        group = optimizer.param_groups[0]
        rates.append(group["lr"] / group["factor"])
        batch = {k: torch.from_numpy(v) for k, v in batches[step % NUM_BATCHES].items()}
        loss = hf_model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(hf_model.parameters(), opt_cfg.clip_norm).item())
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    params = {n: p.detach().numpy() for n, p in hf_model.named_parameters()}
    return np.array(losses), np.array(norms), np.array(rates), params


def _jax_run(model, params, batches, task: str, opt_cfg: OptimizerConfig):
    """The production pieces as `finetune` assembles them: the CLI's loss, make_optimizer with the layer factors,
    the sharded, jitted train step."""
    cfg = FinetuneConfig(task=task, model="unused", optimizer=opt_cfg)
    schedule = learning_rate_schedule(cfg.optimizer, STEPS)
    optimizer = make_optimizer(cfg.optimizer, schedule, layer_decay_factors(params, model.config.num_hidden_layers,
                                                                              cfg.optimizer.layer_decay))
    mesh = make_mesh(cfg.mesh.shape)
    state, shardings = create_train_state(model, (jnp.zeros((1, 8), jnp.int32),), optimizer, cfg.seed, mesh,
                                          params=params)
    train_step = make_train_step(make_loss_fn(model, cfg), optimizer, schedule, shardings, mesh)
    # A leading accumulation axis of 1 (one micro-batch per step); every row has weight 1.
    device_batches = [{**{k: v[None] for k, v in b.items()}, "weights": np.ones((1, BATCH), np.float32)}
                      for b in batches]
    losses, norms, rates = [], [], []
    for step in range(STEPS):
        state, metrics = train_step(state, device_batches[step % NUM_BATCHES])
        losses.append(float(metrics["loss"]))
        norms.append(float(metrics["grad_norm"]))
        rates.append(float(metrics["learning_rate"]))
    final = params_to_state_dict(unpadded_params(model, state.params), HEAD)
    return np.array(losses), np.array(norms), np.array(rates), final


@pytest.mark.parametrize("task,num_labels,layer_decay", [("sst2", 2, 1.0), ("stsb", 1, 0.8)],
                         ids=["two_labels", "regression_layer_decay"])
def test_finetuning_run_matches_pytorch_loop(task, num_labels, layer_decay):
    hf_model = random_hf_model("v3", HEAD, num_labels=num_labels, **NO_DROPOUT)
    model, params = jax_twin(hf_model, HEAD)
    batches = _batches(num_labels, hf_model.config.vocab_size)
    # A peak LR large enough that weight decay moves LayerNorm scales by ~5x the tolerance: a wrong decay mask shows.
    opt_cfg = OptimizerConfig(learning_rate=1e-3, warmup_steps=WARMUP, weight_decay=0.01,
                              clip_norm=1.0, layer_decay=layer_decay)

    ours_loss, ours_norm, ours_lr, ours = _jax_run(model, params, batches, task, opt_cfg)
    ref_loss, ref_norm, ref_lr, ref = _torch_run(hf_model, batches, opt_cfg)

    # Clipping must both act and not act during the run, or one branch goes untested.
    assert (ref_norm > opt_cfg.clip_norm).any() and (ref_norm < opt_cfg.clip_norm).any(), ref_norm
    np.testing.assert_allclose(ours_lr, ref_lr, rtol=RTOL, err_msg="learning rate per step")
    np.testing.assert_allclose(ours_loss, ref_loss, rtol=RTOL, err_msg="loss per step")
    np.testing.assert_allclose(ours_norm, ref_norm, rtol=RTOL, err_msg="gradient norm per step")
    assert set(ours) == set(ref)  # every torch parameter maps to one of ours through the converter
    for key, theirs in ref.items():
        error = np.abs(ours[key] - theirs).max() / np.abs(theirs).max()
        assert error <= RTOL, f"{key}: relative error {error}"
