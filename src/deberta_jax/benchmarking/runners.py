"""The implementations under test behind one interface.

Each runner owns one workload of one case for one implementation:

- `OursRunner`: deberta-jax under `jax.jit` (AOT-compiled), for one `attention_impl` and `scan_layers` setting.
  forward: `DebertaModel(...).last_hidden_state`; train: the production step (`make_train_step` with
  `mlm_loss_fn` of `DebertaForMLMPretraining(emd_steps=0)`, i.e. plain MLM with logits only at the masked
  positions, and `make_optimizer`'s AdamW with clipping at 1.0 and weight decay 0.01 off biases/LayerNorm).
- `TorchRunner`: transformers' `DebertaV2Model` / `DebertaV2ForMaskedLM` eager, or under `torch.compile`
  (logits at all N positions, as the reference computes them), torch.optim.AdamW with the same hyper-parameters.
- `KerasRunner`: keras-hub's `DebertaV3Backbone` / `DebertaV3MaskedLM` on the JAX backend, called through
  `stateless_call` under `jax.jit` (keras' own pattern for JAX training loops), keras AdamW; logits at the masked
  positions (keras-hub's MLM head gathers them, like ours).

All three load the same transformers weights where possible (ours through `state_dict_to_params`, keras-hub by a
variable-by-variable copy); where a copy fails the runner keeps its own random init and says so in `meta`.

A runner's life: `build()` (construct, load weights, lower/compile where AOT applies), `prepare()` (the first call,
timed apart: it includes compilation for jit/torch.compile), `call()` (one synchronised step: what is timed),
`check_output()` (fp32 NumPy output for the numerical check: the last hidden state for forward, eval-mode logits
at the masked positions for train), `memory()`, `close()`.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import numpy as np

from deberta_jax.benchmarking.cases import Case, backbone_state, make_inputs

LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-6
CLIP_NORM = 1.0


class Runner:
    family = ""

    def __init__(self, case: Case, name: str):
        self.case = case
        self.name = name
        self.meta: dict[str, Any] = {"family": self.family}
        self.compile_s: float | None = None

    def build(self) -> None:
        raise NotImplementedError

    def prepare(self) -> float:
        """The first call; returns its seconds (compilation included where the framework compiles lazily)."""
        t0 = time.perf_counter()
        self.call()
        return time.perf_counter() - t0

    def call(self) -> None:
        raise NotImplementedError

    def check_output(self) -> np.ndarray:
        raise NotImplementedError

    def memory(self) -> dict:
        return {}

    def xla_flops(self) -> float | None:
        return None

    def close(self) -> None:
        for attr in list(vars(self)):
            if attr not in ("case", "name", "meta", "compile_s"):
                setattr(self, attr, None)
        gc.collect()


# ----------------------------------------------------------------------------------------------------- ours
def compiled_memory(compiled) -> dict:
    """XLA's buffer assignment of a compiled program: bytes of arguments, outputs, temporaries (activations and
    intermediates live at once, at their peak), aliased (donated) bytes; peak = arguments + outputs + temp - alias."""
    try:
        m = compiled.memory_analysis()
    except Exception as e:  # noqa: BLE001 - some backends have no analysis
        return {"error": f"{type(e).__name__}: {e}"}
    if m is None:
        return {"error": "memory_analysis() returned None on this backend"}
    out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
           for k in ("argument", "output", "temp", "alias", "generated_code")}
    out["peak_estimate"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
    return out


def impl_overrides(impl: str) -> dict:
    """Config fields of an --impls entry: "chunked" -> attention_impl only; "pallas:32x32" -> also the tile sizes
    attention_block_q x attention_block_k (the default 128 x 128 suits "chunked"; the Pallas kernel's one-hot
    window selects want smaller tiles, see model/pallas_attention.py)."""
    name, _, blocks = impl.partition(":")
    out: dict = {"attention_impl": name}
    if blocks:
        try:
            block_q, block_k = (int(x) for x in blocks.lower().split("x"))
        except ValueError:
            raise ValueError(f"attention impl {impl!r}: tile sizes are written NAME:QxK, e.g. pallas:32x32") from None
        out.update(attention_block_q=block_q, attention_block_k=block_k)
    return out


def ours_config(case: Case, impl: str, scan: bool):
    return case.cfg.replace(**impl_overrides(impl), scan_layers=scan, dtype=case.dtype)


def ours_forward_fn(model):
    def forward(params, ids, mask):
        return model.apply({"params": params}, ids, attention_mask=mask, deterministic=True).last_hidden_state
    return forward


def ours_lowered_text(case: Case, impl: str, scan: bool) -> str:
    """StableHLO of our backbone forward at the case's shapes, lowered from abstract params (nothing allocated,
    nothing compiled). Two settings that lower to the same text compute the same program: how the harness tells
    an attention_impl or scan_layers value that the model does not implement yet."""
    import jax
    import jax.numpy as jnp

    from deberta_jax.model.modeling import DebertaModel, abstract_params

    model = DebertaModel(ours_config(case, impl, scan))
    params = abstract_params(model)
    ids = jax.ShapeDtypeStruct((case.batch, case.seq_len), jnp.int32)
    return jax.jit(ours_forward_fn(model)).lower(params, ids, ids).as_text()


class OursShared:
    """What our runners of one case share: converted params per tree layout, and one train state per layout
    (runners pass it along step after step, so N variants cost one copy of params + Adam moments)."""

    def __init__(self):
        self.params: dict = {}
        self.states: dict = {}


class JitRunner(Runner):
    """A runner whose program is one AOT-compiled JAX function: `compiled(*args)` for forward, `train_step()` (which
    advances the runner's own state and returns the step's outputs) for train."""

    def call(self) -> None:
        import jax

        self.last = self.compiled(*self.args) if self.case.workload == "forward" else self.train_step()
        jax.block_until_ready(self.last)

    def train_step(self):
        raise NotImplementedError

    def memory(self) -> dict:
        return {"compiled": compiled_memory(self.compiled)}

    def xla_flops(self) -> float | None:
        from deberta_jax.training.throughput import compiled_flops

        return compiled_flops(self.compiled)


class OursRunner(JitRunner):
    family = "ours"

    def __init__(self, case: Case, hf_state: dict, impl: str, scan: bool, shared: OursShared | None = None):
        super().__init__(case, spec_name({"family": "ours", "impl": impl, "scan": scan}))
        self.hf_state = hf_state
        self.impl, self.scan = impl, scan
        self.shared = shared or OursShared()
        self.meta.update(attention_impl=impl, scan_layers=scan, dtype=case.dtype,
                         executor="jax.jit, AOT-compiled (lower().compile())")
        if scan:
            self.meta["xla_flops_note"] = ("XLA's cost analysis counts the body of the layer scan once: xla_flops "
                                           "undercounts the layers' work (about 1/num_layers of it)")

    def _params(self, model, state):
        """Our params converted from the transformers weights; cached by layout (scan changes it)."""
        import jax

        from deberta_jax.conversion.hf_checkpoint import state_dict_to_params

        key = (type(model).__name__, self.scan)
        if key not in self.shared.params:
            params, report = state_dict_to_params(state, model)
            if report.missing or report.mismatched:
                raise RuntimeError(f"weight conversion incomplete for {self.name}: missing={report.missing[:5]} "
                                   f"mismatched={report.mismatched[:5]}")
            self.shared.params[key] = jax.device_put(params)
        self.meta["weights"] = "transformers weights via deberta_jax.conversion.hf_checkpoint.state_dict_to_params"
        return self.shared.params[key]

    def build(self) -> None:
        import jax
        import jax.numpy as jnp

        cfg = ours_config(self.case, self.impl, self.scan)
        inputs = make_inputs(self.case)
        self.inputs = {k: jnp.asarray(v) for k, v in inputs.items() if k != "hf_labels"}
        t0 = time.perf_counter()
        if self.case.workload == "forward":
            from deberta_jax.model.modeling import DebertaModel

            model = DebertaModel(cfg)
            self.params = self._params(model, self.hf_state)
            self.args = (self.params, self.inputs["input_ids"], self.inputs["attention_mask"])
            lowered = jax.jit(ours_forward_fn(model)).lower(*self.args)
            self.compiled = lowered.compile()
        else:
            from deberta_jax.pretraining.emd import DebertaForMLMPretraining
            from deberta_jax.pretraining.objectives import mlm_loss_fn
            from deberta_jax.sharding.mesh import make_mesh
            from deberta_jax.training.optimizer import OptimizerConfig, learning_rate_schedule, make_optimizer
            from deberta_jax.training.train_step import create_train_state, make_train_step

            model = DebertaForMLMPretraining(cfg, emd_steps=0)
            self.model = model
            opt_cfg = OptimizerConfig(learning_rate=LEARNING_RATE, total_steps=10 ** 6, weight_decay=WEIGHT_DECAY,
                                      eps=ADAM_EPS, clip_norm=CLIP_NORM)
            optimizer = make_optimizer(opt_cfg)
            mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
            params = self._params(model, self.hf_state)
            self.params = params
            key = (self.scan, str(jax.tree_util.tree_structure(params)))
            if key not in self.shared.states:
                state, shardings = create_train_state(model, (self.inputs["input_ids"][:1],), optimizer,
                                                      self.case.seed, mesh, params=params)
                self.shared.states[key] = {"state": state, "shardings": shardings}
            self.holder = self.shared.states[key]
            step = make_train_step(mlm_loss_fn(model), optimizer, learning_rate_schedule(opt_cfg),
                                   self.holder["shardings"], mesh)
            self.batch = {k: self.inputs[k][None] for k in
                          ("input_ids", "attention_mask", "masked_positions", "masked_labels", "masked_weights")}
            self.compiled = step.lower(self.holder["state"], self.batch).compile()
            self.meta["train_step"] = ("deberta_jax.training.train_step.make_train_step + pretraining.objectives."
                                       "mlm_loss_fn, dropout on, logits at the masked positions only")
        self.compile_s = time.perf_counter() - t0

    def train_step(self):
        state, metrics = self.compiled(self.holder["state"], self.batch)
        self.holder["state"] = state
        return metrics

    def check_output(self) -> np.ndarray:
        import jax

        if self.case.workload == "forward":
            return np.asarray(self.compiled(*self.args), np.float32)
        model = self.model
        logits = jax.jit(lambda p, ids, mask, pos: model.apply({"params": p}, ids, attention_mask=mask,
                                                                deterministic=True, masked_positions=pos).logits)
        return np.asarray(logits(self.params, self.inputs["input_ids"], self.inputs["attention_mask"],
                                 self.inputs["masked_positions"]), np.float32)


# ----------------------------------------------------------------------------------------------------- torch
def torch_device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TorchShared:
    """One transformers module (and optimizer) per case, shared by the eager and compiled runners."""

    def __init__(self):
        self.module = None
        self.optimizer = None


class TorchRunner(Runner):
    family = "transformers"

    def __init__(self, case: Case, hf_state: dict, compiled: bool, shared: TorchShared | None = None):
        super().__init__(case, spec_name({"family": "transformers", "compiled": compiled}))
        self.hf_state = hf_state
        self.use_compile = compiled
        self.shared = shared or TorchShared()

    def build(self) -> None:
        import torch
        import transformers

        from deberta_jax.benchmarking.cases import hf_config

        t0 = time.perf_counter()
        device = torch_device()
        cfg = self.case.cfg
        if self.shared.module is None:
            if self.case.workload == "forward":
                cls = transformers.DebertaModel if cfg.is_v1 else transformers.DebertaV2Model
                state = backbone_state(self.hf_state)
            else:
                cls = transformers.DebertaForMaskedLM if cfg.is_v1 else transformers.DebertaV2ForMaskedLM
                state = self.hf_state
            module = cls(hf_config(cfg))
            module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, strict=True)
            module.to(device)
            if self.case.workload == "forward":
                module.eval()
            else:
                module.train()
                decay = [p for p in module.parameters() if p.ndim > 1]
                no_decay = [p for p in module.parameters() if p.ndim <= 1]
                self.shared.optimizer = torch.optim.AdamW(
                    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
                    lr=LEARNING_RATE, betas=(0.9, 0.999), eps=ADAM_EPS)
            self.shared.module = module
        self.module = self.shared.module
        self.fn = torch.compile(self.module) if self.use_compile else self.module
        inputs = make_inputs(self.case)
        self.ids = torch.from_numpy(inputs["input_ids"].astype(np.int64)).to(device)
        self.mask = torch.from_numpy(inputs["attention_mask"].astype(np.int64)).to(device)
        self.labels = torch.from_numpy(inputs["hf_labels"]).to(device)
        self.positions = torch.from_numpy(inputs["masked_positions"].astype(np.int64)).to(device)
        self.autocast = dict(device_type=device, dtype=torch.bfloat16, enabled=self.case.dtype == "bfloat16")
        self.meta.update(
            weights="transformers' own init + N(0, 0.02) noise (the shared weights)", device=device,
            executor=("torch.compile (default inductor backend); the first call compiles" if self.use_compile
                      else "PyTorch eager"),
            dtype=("autocast bfloat16, fp32 weights" if self.case.dtype == "bfloat16" else "float32"),
            torch_threads=torch.get_num_threads())
        if self.case.workload == "train":
            self.meta["train_step"] = ("zero_grad, forward with labels (logits at all N positions), backward, "
                                       "clip_grad_norm_(1.0), AdamW step (decay 0.01 off 1-D params); dropout on")
        self.build_s = time.perf_counter() - t0

    def call(self) -> None:
        import torch

        if self.case.workload == "forward":
            with torch.no_grad(), torch.autocast(**self.autocast):
                self.last = self.fn(self.ids, attention_mask=self.mask).last_hidden_state
        else:
            opt = self.shared.optimizer
            opt.zero_grad(set_to_none=True)
            with torch.autocast(**self.autocast):
                loss = self.fn(input_ids=self.ids, attention_mask=self.mask, labels=self.labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), CLIP_NORM)
            opt.step()
            self.last = loss.detach()
        torch_sync()

    def check_output(self) -> np.ndarray:
        import torch

        with torch.no_grad(), torch.autocast(**self.autocast):
            if self.case.workload == "forward":
                out = self.fn(self.ids, attention_mask=self.mask).last_hidden_state
            else:
                was_training = self.module.training
                self.module.eval()
                try:
                    logits = self.module(input_ids=self.ids, attention_mask=self.mask).logits
                finally:
                    self.module.train(was_training)
                out = torch.take_along_dim(logits, self.positions[..., None], dim=1)
        return out.float().cpu().numpy()

    def device_memory(self) -> dict:
        """GPU only: peak bytes torch's allocator held during one call, above what was allocated before it."""
        import torch

        if not torch.cuda.is_available():
            return {}
        torch_sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        self.call()
        return {"torch_cuda": {"allocated_before": int(before), "peak": int(torch.cuda.max_memory_allocated()),
                               "peak_growth": int(torch.cuda.max_memory_allocated() - before)}}


# ----------------------------------------------------------------------------------------------------- keras
def keras_not_applicable(cfg) -> str | None:
    """Why keras-hub's DebertaV3Backbone cannot express this config (None when it can)."""
    problems = []
    if cfg.is_v1:
        problems.append("v1 (keras-hub has DeBERTa-v3 only)")
    if not (cfg.relative_attention and cfg.position_buckets > 0 and cfg.share_att_key
            and set(cfg.pos_att_type) == {"c2p", "p2c"} and cfg.norm_rel_embeddings):
        problems.append("needs relative attention with log buckets, share_att_key, c2p|p2c and LayerNorm'd "
                        "relative embeddings")
    if cfg.position_biased_input or cfg.type_vocab_size or cfg.conv_kernel_size or cfg.embed_dim != cfg.hidden_size:
        problems.append("no absolute positions, token types, conv branch or embedding_size projection")
    if cfg.hidden_act != "gelu" or cfg.attention_head_size not in (None, cfg.hidden_size // cfg.num_attention_heads):
        problems.append("gelu and head_dim = hidden / heads only")
    if cfg.hidden_dropout_prob != cfg.attention_probs_dropout_prob:
        problems.append("one dropout rate for hidden states and attention")
    return "; ".join(problems) or None


def keras_import():
    """keras-hub on the JAX backend, or an exception that says why not."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras

    if keras.backend.backend() != "jax":
        raise RuntimeError(f"keras was already imported with backend {keras.backend.backend()!r}; set "
                           "KERAS_BACKEND=jax before anything imports keras")
    import keras_hub

    return keras, keras_hub


def copy_hf_weights_to_keras(backbone, state: dict[str, np.ndarray], mlm=None) -> None:
    """Copies transformers DebertaV2 weights (torch layout, `deberta.` prefixed) into keras-hub's layers."""
    heads = backbone.num_heads
    hidden = backbone.hidden_dim

    def put(var, value):
        value = np.asarray(value, np.float32)
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{var.path}: keras shape {tuple(var.shape)} vs transformers {value.shape}")
        var.assign(value)

    def dense(layer, prefix, split_heads=False):
        w, b = state[prefix + ".weight"].T, state[prefix + ".bias"]
        if split_heads:
            w, b = w.reshape(hidden, heads, -1), b.reshape(heads, -1)
        put(layer.kernel, w)
        put(layer.bias, b)

    def norm(layer, prefix):
        put(layer.gamma, state[prefix + ".weight"])
        put(layer.beta, state[prefix + ".bias"])

    p = "deberta."
    put(backbone.token_embedding.embeddings, state[p + "embeddings.word_embeddings.weight"])
    norm(backbone.embeddings_layer_norm, p + "embeddings.LayerNorm")
    put(backbone.relative_embeddings.rel_embeddings, state[p + "encoder.rel_embeddings.weight"])
    norm(backbone.relative_embeddings.layer_norm, p + "encoder.LayerNorm")
    for i, layer in enumerate(backbone.transformer_layers):
        q = f"{p}encoder.layer.{i}."
        att = layer._self_attention_layer
        dense(att._query_dense, q + "attention.self.query_proj", split_heads=True)
        dense(att._key_dense, q + "attention.self.key_proj", split_heads=True)
        dense(att._value_dense, q + "attention.self.value_proj", split_heads=True)
        dense(att._output_dense, q + "attention.output.dense")
        norm(layer._self_attention_layer_norm, q + "attention.output.LayerNorm")
        dense(layer._feedforward_intermediate_dense, q + "intermediate.dense")
        dense(layer._feedforward_output_dense, q + "output.dense")
        norm(layer._feedforward_layer_norm, q + "output.LayerNorm")
    if mlm is not None:
        head = mlm.masked_lm_head
        dense(head._intermediate_dense, "cls.predictions.transform.dense")
        norm(head._intermediate_layer_norm, "cls.predictions.transform.LayerNorm")
        put(head._bias, state["cls.predictions.bias"])


class KerasRunner(JitRunner):
    family = "keras-hub"

    def __init__(self, case: Case, hf_state: dict):
        super().__init__(case, "keras-hub")
        self.hf_state = hf_state

    def build(self) -> None:
        reason = keras_not_applicable(self.case.cfg)
        if reason:
            raise RuntimeError(f"keras-hub DebertaV3Backbone cannot express this config: {reason}")
        keras, keras_hub = keras_import()
        import jax
        import jax.numpy as jnp

        t0 = time.perf_counter()
        cfg = self.case.cfg
        keras.utils.set_random_seed(self.case.seed)
        policy = "mixed_bfloat16" if self.case.dtype == "bfloat16" else "float32"
        backbone = keras_hub.models.DebertaV3Backbone(
            vocabulary_size=cfg.vocab_size, num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
            hidden_dim=cfg.hidden_size, intermediate_dim=cfg.intermediate_size, dropout=cfg.hidden_dropout_prob,
            max_sequence_length=cfg.max_relative, bucket_size=cfg.position_buckets, dtype=policy)
        mlm = keras_hub.models.DebertaV3MaskedLM(backbone=backbone) if self.case.workload == "train" else None
        if mlm is not None:
            # keras-hub's MaskedLMHead builds its LayerNorm with epsilon 1e-5; transformers uses the config's.
            mlm.masked_lm_head._intermediate_layer_norm.epsilon = cfg.layer_norm_eps
            self.meta["mlm_head_layer_norm_epsilon"] = f"set to the config's {cfg.layer_norm_eps:g} (keras-hub: 1e-5)"
        try:
            copy_hf_weights_to_keras(backbone, self.hf_state, mlm)
            self.meta["weights"] = "the transformers weights, copied variable by variable"
        except Exception as e:  # noqa: BLE001 - keep keras-hub's own init and say so
            self.meta["weights"] = f"keras-hub's own random init (copying transformers weights failed: {e!r})"
        self.meta.update(executor="keras Model.stateless_call under jax.jit (AOT-compiled)", dtype_policy=policy)
        inputs = make_inputs(self.case)
        x = {"token_ids": jnp.asarray(inputs["input_ids"]), "padding_mask": jnp.asarray(inputs["attention_mask"])}
        self.model = mlm if mlm is not None else backbone
        tv = [v.value for v in self.model.trainable_variables]
        ntv = [v.value for v in self.model.non_trainable_variables]
        if self.case.workload == "forward":
            def forward(tv, ntv, x):
                return backbone.stateless_call(tv, ntv, x, training=False)[0]

            self.args = (tv, ntv, x)
            self.compiled = jax.jit(forward).lower(*self.args).compile()
        else:
            x["mask_positions"] = jnp.asarray(inputs["masked_positions"])
            y = jnp.asarray(inputs["masked_labels"])
            w = jnp.asarray(inputs["masked_weights"])
            optimizer = keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY,
                                               beta_1=0.9, beta_2=0.999, epsilon=ADAM_EPS, global_clipnorm=CLIP_NORM)
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
            optimizer.build(self.model.trainable_variables)
            ov = [v.value for v in optimizer.variables]
            loss_obj = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            model = self.model

            def train_step(state, x, y, w):
                tv, ntv, ov = state

                def loss_fn(tv):
                    logits, new_ntv = model.stateless_call(tv, ntv, x, training=True)
                    return loss_obj(y, logits, sample_weight=w), new_ntv

                (loss, new_ntv), grads = jax.value_and_grad(loss_fn, has_aux=True)(tv)
                new_tv, new_ov = optimizer.stateless_apply(ov, grads, tv)
                return (new_tv, new_ntv, new_ov), loss

            self.state = (tv, ntv, ov)
            self.batch = (x, y, w)
            self.compiled = jax.jit(train_step, donate_argnums=(0,)).lower(self.state, *self.batch).compile()

            def eval_logits(tv, ntv, x):
                return model.stateless_call(tv, ntv, x, training=False)[0]

            self.eval_logits = jax.jit(eval_logits)
            self.meta["train_step"] = ("value_and_grad of SparseCategoricalCrossentropy at the masked positions, "
                                       "keras AdamW (global_clipnorm 1.0, decay 0.01 off bias/LayerNorm); dropout on")
        self.compile_s = time.perf_counter() - t0

    def train_step(self):
        self.state, loss = self.compiled(self.state, *self.batch)
        return loss

    def check_output(self) -> np.ndarray:
        if self.case.workload == "forward":
            return np.asarray(self.compiled(*self.args), np.float32)
        tv, ntv, _ = self.state
        return np.asarray(self.eval_logits(tv, ntv, self.batch[0]), np.float32)


# ----------------------------------------------------------------------------------------------------- specs
def runner_from_spec(spec: dict, case: Case, hf_state: dict, shared: dict | None = None) -> Runner:
    """spec: {"family": "ours", "impl": ..., "scan": ...} | {"family": "transformers", "compiled": bool} |
    {"family": "keras-hub"}. `shared` holds the per-case objects that runners of one family share."""
    shared = shared if shared is not None else {}
    if spec["family"] == "ours":
        return OursRunner(case, hf_state, spec["impl"], spec["scan"], shared.setdefault("ours", OursShared()))
    if spec["family"] == "transformers":
        return TorchRunner(case, hf_state, spec["compiled"], shared.setdefault("transformers", TorchShared()))
    if spec["family"] == "keras-hub":
        return KerasRunner(case, hf_state)
    raise ValueError(f"unknown family {spec['family']!r}")


def spec_name(spec: dict) -> str:
    if spec["family"] == "ours":
        return f"ours[{spec['impl']}{',scan' if spec['scan'] else ''}]"
    if spec["family"] == "transformers":
        return "transformers-compile" if spec["compiled"] else "transformers-eager"
    return spec["family"]
