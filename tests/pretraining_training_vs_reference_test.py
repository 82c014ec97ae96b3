"""Whole pretraining runs against PyTorch, step by step.

Our side is what `pretrain()` runs: the model and loss function of `build_objective`, `pretrain_optimizer`, and
`make_train_step`'s jitted step, fed batches from `PretrainBatches.host_batch` (the real `mask_batch`). The torch side
is a plain loop over the same losses built in this file on transformers' modules, from the same initial weights and
on the same batches:

- MLM + EMD: a `DebertaV2ForMaskedLM` whose last layer is re-run twice with query = that layer's input + absolute
  position embeddings (microsoft/DeBERTa's EnhancedMaskDecoder); loss = mean cross-entropy over the masked slots.
- RTD + GDES: a `DebertaV2ForMaskedLM` generator; a `DebertaV2Model` discriminator reading the word table
  E_gen.detach() + E_delta (E_delta a zero-initialised parameter); microsoft's RTD head LayerNorm(h_cls + h) -> dense
  -> act -> 1 logit; loss = MLM + 50 * BCE over non-pad tokens. The generator's replacements are drawn from the torch
  generator's own logits with the Gumbel noise behind our step's `jax.random.categorical`.

Both sides: AdamW with decay on matrices only, linear warmup then linear decay, clipping at 1.0 (for RTD the generator
and the discriminator each by its own norm, pretrain()'s default decoupled clipping), no dropout.
Compared, at each of 24 steps: the loss and its MLM / RTD parts, the pre-clip gradient norm and the learning rate, to
1e-4 relative; at the end, every parameter tensor to max|ours - theirs| <= 1e-4 * max|theirs|.

Both sides run in float64 (our config dtype "float64" under jax_enable_x64, within these tests only). In float32
the runs agree to ~1e-6 except E_delta: it starts at zero, so its own scale is only what 24 Adam steps moved it, and
Adam turns the float32 rounding of gradient entries that nearly cancel (|g| near eps) into whole-size update
differences; over five seeds its worst entry ranged from 2e-5 to 3e-4 of max|E_delta|, astride the tolerance. In
float64 the worst difference is ~2e-7 (E_delta; optax computes the learning rate in float32), losses ~2e-9.
"""

import types

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers
from flax.traverse_util import flatten_dict, unflatten_dict

from deberta_jax.config import DebertaConfig
from deberta_jax.conversion.hf_checkpoint import hf_key, params_to_state_dict, swap_layout
from deberta_jax.model.vocab_padding import resize_axis, resize_vocab, vocab_axes
from deberta_jax.pretraining.config import PretrainConfig
from deberta_jax.pretraining.train import PretrainBatches, build_objective, pretrain_optimizer
from deberta_jax.sharding.mesh import make_mesh
from deberta_jax.training.optimizer import OptimizerConfig
from deberta_jax.training.train_step import create_train_state, make_train_step
from reference import hf_config

pytestmark = [pytest.mark.slow, pytest.mark.reference]

STEPS = 24
BATCH, SEQ = 4, 20
PAD, CLS, SEP, UNK, MASK, VOCAB = 0, 1, 2, 3, 99, 100
TOLERANCE = 1e-4
DTYPE = "float64"
TOKENIZER = types.SimpleNamespace(pad_id=PAD, cls_id=CLS, sep_id=SEP, unk_id=UNK, mask_id=MASK, vocab_size=VOCAB)


@pytest.fixture(autouse=True)
def float64_and_one_torch_thread():
    """float64 JAX arrays for this test only; one torch thread, faster than two fighting over a shared CPU for these
    tiny models."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with jax.enable_x64(True):
        yield
    torch.set_num_threads(threads)


def _pretrain_config(objective: str, generator_emd_steps: int = 0) -> PretrainConfig:
    # The batches come from _rows, so the corpus is never read; PretrainConfig only insists on naming one.
    return PretrainConfig(objective=objective, steps=STEPS,
                          rtd={"sharing": "gdes", "generator_emd_steps": generator_emd_steps},
                          data={"corpus": ("unused.txt",), "seq_len": SEQ, "batch_size": BATCH},
                          optimizer={"learning_rate": 3e-3, "warmup_steps": 4}, masking={"mask_prob": 0.25})


def _our_config(hf: transformers.DebertaV2Config) -> DebertaConfig:
    return DebertaConfig.from_hf_dict(hf.to_dict(), dtype=DTYPE, param_dtype=DTYPE)


def _hf_config(layers: int) -> transformers.DebertaV2Config:
    """The tiny v3 family of tests/reference.py (buckets 8, shared keys, p2c|c2p, no absolute positions), no dropout."""
    return hf_config("v3", vocab_size=VOCAB, num_hidden_layers=layers, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)


def _rows(seed: int = 1):
    """Endless batches of [CLS] ordinary tokens [SEP] rows of random lengths, right-padded (row 0 full length)."""
    rng = np.random.default_rng(seed)
    while True:
        lengths = rng.integers(SEQ // 2, SEQ + 1, size=BATCH)
        lengths[0] = SEQ
        ids = rng.integers(UNK + 1, MASK, size=(BATCH, SEQ))
        ids[:, 0] = CLS
        ids[np.arange(BATCH), lengths - 1] = SEP
        mask = np.arange(SEQ)[None] < lengths[:, None]
        yield {"input_ids": np.where(mask, ids, PAD).astype(np.int32), "attention_mask": mask.astype(np.int32)}


def _add_noise(module: torch.nn.Module, skip: tuple = ()) -> torch.nn.Module:
    """The module in float64, with noise on every tensor (biases and LayerNorm included) so that a parameter mapped
    to the wrong place or updated wrongly cannot hide behind a zero or a one."""
    module = module.double()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name not in skip:
                p.add_(0.05 * torch.randn_like(p))
    return module


def _params_from_torch(module: torch.nn.Module, model, init_args) -> dict:
    """Our params holding the torch module's weights: each param path names its torch parameter by `hf_key` (the
    checkpoint conversion's rule), kernels transposed, vocabulary-sized ones padded with zero rows to our padded
    vocabulary. The two name sets must be equal."""
    boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *init_args))["params"]
    abstract, padded = flatten_dict(nn.meta.unbox(boxed)), vocab_axes(boxed)
    theirs = {name: p.detach().numpy() for name, p in module.named_parameters()}
    assert {hf_key(path) for path in abstract} == set(theirs)
    ours = {path: swap_layout(path, theirs[hf_key(path)]) for path in abstract}
    return unflatten_dict({path: resize_axis(x, padded[path], abstract[path].shape[padded[path]]) if path in padded
                           else x for path, x in ours.items()})


def _torch_optimizer(module: torch.nn.Module, opt_cfg: OptimizerConfig, total: int):
    """AdamW and LambdaLR set up as make_optimizer sets up optax. Weight decay is decided from the torch names
    (biases and LayerNorm parameters are not decayed), independently of our ndim rule. LambdaLR's first factor is
    lambda(0): optax evaluates the schedule at the step count before the update."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": opt_cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=opt_cfg.learning_rate, betas=(opt_cfg.b1, opt_cfg.b2), eps=opt_cfg.eps)
    warmup = opt_cfg.warmup(total)

    def factor(count):
        return count / warmup if count < warmup else max(0.0, 1.0 - (count - warmup) / (total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _train_side_by_side(cfg: PretrainConfig, config: DebertaConfig, module: torch.nn.Module, torch_losses):
    """Runs both sides for cfg.steps steps on the same batches, comparing each step's metrics as it goes.

    torch_losses(batch, step_rng) -> dict of scalar tensors, "loss" among them, keyed like our metrics; step_rng is
    the key our step derives for this step. Returns (our final params, the torch module's), both by torch name.
    """
    model, loss_fn, init_args, mode = build_objective(cfg, config)
    params = _params_from_torch(module, model, init_args)
    schedule, optimizer = pretrain_optimizer(cfg)
    opt_cfg = cfg.optimizer
    mesh = make_mesh(cfg.mesh.shape)
    state, shardings = create_train_state(model, init_args, optimizer, cfg.seed, mesh, params=params)
    train_step = make_train_step(loss_fn, optimizer, schedule, shardings, mesh)
    batches = PretrainBatches(cfg, _rows(), TOKENIZER, mode, sharding=None)
    torch_optimizer, scheduler = _torch_optimizer(module, opt_cfg, cfg.steps)

    # The per-step key as make_train_step derives it: create_train_state(params=...) keeps split(PRNGKey(seed))[1],
    # and each step splits the state's key into (the next state key, step_rng). Checked against state.rng below, so
    # a change there fails here instead of silently comparing different samples.
    rng = jax.random.split(jax.random.PRNGKey(cfg.seed))[1]
    for step in range(cfg.steps):
        rng, step_rng = jax.random.split(rng)
        batch = batches.host_batch(step)
        state, metrics = train_step(state, batch)
        assert np.array_equal(np.asarray(state.rng), np.asarray(rng)), "make_train_step's key chain changed"

        torch_optimizer.zero_grad()
        theirs = torch_losses({k: torch.from_numpy(np.asarray(v[0])) for k, v in batch.items()}, step_rng)
        theirs["loss"].backward()
        theirs["grad_norm"] = _clip(module, cfg, opt_cfg.clip_norm)
        theirs["learning_rate"] = torch.tensor(torch_optimizer.param_groups[0]["lr"])
        torch_optimizer.step()
        scheduler.step()
        for key, value in theirs.items():
            np.testing.assert_allclose(np.asarray(metrics[key]), value.detach().numpy(), rtol=TOLERANCE, atol=0,
                                       err_msg=f"step {step}: {key}")
    padded = vocab_axes(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *init_args))["params"])
    ours = params_to_state_dict(resize_vocab(state.params, padded, VOCAB), None)
    theirs = {name: p.detach().numpy() for name, p in module.named_parameters()}
    assert set(ours) == set(theirs)
    return ours, theirs


def _clip(module: torch.nn.Module, cfg: PretrainConfig, max_norm: float) -> torch.Tensor:
    """Clips as pretrain() does: RTD with decoupled clipping clips the generator's parameters and the rest (the
    discriminator, its head and E_delta) each by its own norm; otherwise one norm over all. Returns the norm of all
    gradients before clipping."""
    named = list(module.named_parameters())
    if cfg.objective == "rtd" and cfg.rtd.decoupled_clipping:
        groups = [[p for n, p in named if n.startswith("generator.")],
                  [p for n, p in named if not n.startswith("generator.")]]
    else:
        groups = [[p for _, p in named]]
    norms = torch.stack([torch.nn.utils.clip_grad_norm_(group, max_norm) for group in groups])
    return norms.square().sum().sqrt()


def _assert_params_close(ours: dict, theirs: dict) -> None:
    """Per tensor, max|ours - theirs| <= TOLERANCE * max|theirs|."""
    for name, want in theirs.items():
        error = np.abs(ours[name] - want).max()
        assert error <= TOLERANCE * np.abs(want).max(), f"{name}: max|diff| {error} vs max|value| {np.abs(want).max()}"


def _masked_lm_loss(logits, labels, weights):
    """Mean cross-entropy over the prediction slots of weight 1."""
    nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten().long(), reduction="none")
    return (nll * weights.flatten()).sum() / weights.sum().clamp(min=1)


def _gather(x, positions):
    """x [B, N, ...] at positions [B, M] -> [B, M, ...]."""
    return x[torch.arange(x.shape[0])[:, None], positions.long()]


class TorchMLMWithEMD(torch.nn.Module):
    """transformers' DebertaV2ForMaskedLM with the enhanced mask decoder of microsoft/DeBERTa
    (apps/models/masked_language_model.py, EnhancedMaskDecoder.emd_context_layer): keys/values = the input of the last
    encoder layer, query = that input + absolute position embeddings, the last layer applied twice, each time
    querying with the previous output, relative positions built inside the layer; the MLM head reads the result."""

    def __init__(self, config: transformers.DebertaV2Config, emd_steps: int):
        super().__init__()
        mlm = transformers.DebertaV2ForMaskedLM(config)
        self.deberta, self.cls = mlm.deberta, mlm.cls     # the decoder stays tied to the word table
        self.emd_position_embeddings = torch.nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.emd_steps = emd_steps

    def forward(self, input_ids, attention_mask, masked_positions):
        """MLM logits [B, M, vocab] at the masked positions."""
        hidden = self.deberta(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states[-2]
        encoder = self.deberta.encoder
        query = hidden + self.emd_position_embeddings.weight[: input_ids.shape[1]]
        pair_mask, rel_embeddings = encoder.get_attention_mask(attention_mask), encoder.get_rel_embedding()
        for _ in range(self.emd_steps):
            query = encoder.layer[-1](hidden, pair_mask, query_states=query, rel_embeddings=rel_embeddings)[0]
        return self.cls(_gather(query, masked_positions))


class TorchRTDHead(torch.nn.Module):
    """microsoft/DeBERTa's LMMaskPredictionHead (apps/models/replaced_token_detection_model.py): LayerNorm(h_cls + h)
    -> dense -> act -> classifier, one logit per token."""

    def __init__(self, config: transformers.DebertaV2Config):
        super().__init__()
        self.LayerNorm = torch.nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = torch.nn.Linear(config.hidden_size, config.hidden_size)
        self.act = transformers.activations.ACT2FN[config.hidden_act]
        self.classifier = torch.nn.Linear(config.hidden_size, 1)

    def forward(self, hidden):
        return self.classifier(self.act(self.dense(self.LayerNorm(hidden[:, :1] + hidden))))[..., 0]


class TorchRTD(torch.nn.Module):
    """Generator, discriminator, head and E_delta under the names our params map to. The discriminator's own word
    table is removed: under GDES it reads E_gen.detach() + E_delta, given as inputs_embeds."""

    def __init__(self, generator: transformers.DebertaV2Config, discriminator: transformers.DebertaV2Config,
                 generator_emd_steps: int = 0):
        super().__init__()
        # microsoft's generator is its MLM model, which predicts through the EMD
        self.generator = (TorchMLMWithEMD(generator, generator_emd_steps) if generator_emd_steps
                          else transformers.DebertaV2ForMaskedLM(generator))
        self.discriminator = transformers.DebertaV2Model(discriminator)
        self.discriminator.embeddings.word_embeddings = None
        self.rtd_head = TorchRTDHead(discriminator)
        self.embedding_delta = torch.nn.Parameter(torch.zeros(discriminator.vocab_size, discriminator.hidden_size))

    def discriminator_word_table(self):
        return self.generator.deberta.embeddings.word_embeddings.weight.detach() + self.embedding_delta

    def generator_logits(self, input_ids, attention_mask, masked_positions):
        """MLM logits [B, M, vocab] at the masked positions."""
        if isinstance(self.generator, TorchMLMWithEMD):
            return self.generator(input_ids, attention_mask, masked_positions)
        return _gather(self.generator(input_ids, attention_mask=attention_mask).logits, masked_positions)


def _sampling_noise(step_rng, shape):
    """The Gumbel noise behind our step's replacements. make_train_step hands loss_fn fold_in(step_rng, 0) for its
    single micro-batch, rtd_loss_fn splits that into (generator, sampling, discriminator) keys, and
    jax.random.categorical(key, logits) is argmax(logits + gumbel(key, logits.shape, logits.dtype))."""
    _, sample_key, _ = jax.random.split(jax.random.fold_in(step_rng, 0), 3)
    return torch.from_numpy(np.array(jax.random.gumbel(sample_key, shape, DTYPE)))


def test_mlm_with_emd_training_matches_torch():
    """MLM + EMD (emd_steps 2): per-step loss, gradient norm and learning rate within 1e-4 relative; final params
    per tensor within 1e-4 of the tensor's largest value."""
    cfg = _pretrain_config("mlm")
    hf = _hf_config(2)
    torch.manual_seed(0)
    module = _add_noise(TorchMLMWithEMD(hf, cfg.emd.steps))

    def losses(batch, step_rng):
        logits = module(batch["input_ids"].long(), batch["attention_mask"], batch["masked_positions"])
        return {"loss": _masked_lm_loss(logits, batch["masked_labels"], batch["masked_weights"])}

    ours, theirs = _train_side_by_side(cfg, _our_config(hf), module, losses)
    _assert_params_close(ours, theirs)


@pytest.mark.parametrize("generator_emd_steps", [0, 2])
def test_rtd_with_gdes_training_matches_torch(generator_emd_steps):
    """RTD + GDES (generator 1 layer, plain or predicting through the EMD; discriminator 2, weight 50): per-step
    loss, MLM and RTD parts, gradient norm and learning rate within 1e-4 relative, and the same number of replaced
    tokens; final params per tensor within 1e-4 of the tensor's largest value."""
    cfg = _pretrain_config("rtd", generator_emd_steps)
    disc_hf = _hf_config(2)
    torch.manual_seed(0)
    module = _add_noise(TorchRTD(_hf_config(1), disc_hf, generator_emd_steps), skip=("embedding_delta",))

    def losses(batch, step_rng):
        ids, original, mask = batch["input_ids"].long(), batch["original_ids"].long(), batch["attention_mask"]
        positions, weights = batch["masked_positions"].long(), batch["masked_weights"]
        gen_logits = module.generator_logits(ids, mask, positions)
        mlm = _masked_lm_loss(gen_logits, batch["masked_labels"], weights)
        noise = _sampling_noise(step_rng, tuple(gen_logits.shape))
        samples = (gen_logits.detach() / cfg.rtd.temperature + noise).argmax(-1)
        rows = torch.arange(ids.shape[0])[:, None]
        disc_ids = original.clone()
        disc_ids[rows, positions] = torch.where(weights > 0, samples, original[rows, positions])
        replaced = (disc_ids != original).to(gen_logits.dtype)
        embeds = torch.nn.functional.embedding(disc_ids, module.discriminator_word_table())
        hidden = module.discriminator(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        bce = torch.nn.functional.binary_cross_entropy_with_logits(module.rtd_head(hidden), replaced,
                                                                   reduction="none")
        rtd = (bce * mask).sum() / mask.sum()
        # Our metric is the replaced fraction over all B x N tokens; a different draw shows here or in the RTD loss.
        return {"loss": mlm + cfg.rtd.weight * rtd, "mlm_loss": mlm, "rtd_loss": rtd,
                "replaced_fraction": replaced.mean()}

    ours, theirs = _train_side_by_side(cfg, _our_config(disc_hf), module, losses)
    # GDES: torch's detach keeps every RTD gradient off the generator's word table, so agreeing with it means ours
    # does too; E_delta moved from zero, so the RTD loss did reach the discriminator's copy.
    table = "generator.deberta.embeddings.word_embeddings.weight"
    error = np.abs(ours[table] - theirs[table]).max()
    assert error <= TOLERANCE * np.abs(theirs[table]).max(), f"GDES: the generator's word table drifted by {error}"
    assert np.abs(ours["embedding_delta"]).max() > 0.1 * cfg.optimizer.learning_rate
    _assert_params_close(ours, theirs)
