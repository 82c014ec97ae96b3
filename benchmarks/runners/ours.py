"""deberta-jax under `jax.jit` (AOT-compiled) for one `attention_impl` and `scan_layers` setting, and the helpers
that the compile-only extras share with it (the config of an --impls entry, the forward function, its lowering)."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.cases import Case, make_inputs
from benchmarks.runners.base import ADAM_EPS, CLIP_NORM, LEARNING_RATE, WEIGHT_DECAY, JitRunner, spec_name


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
            opt_cfg = OptimizerConfig(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY, eps=ADAM_EPS,
                                      clip_norm=CLIP_NORM)
            schedule = learning_rate_schedule(opt_cfg, 10 ** 6)
            optimizer = make_optimizer(opt_cfg, schedule)
            mesh = make_mesh((1, 1, 1), devices=jax.devices()[:1])
            params = self._params(model, self.hf_state)
            self.params = params
            key = (self.scan, str(jax.tree_util.tree_structure(params)))
            if key not in self.shared.states:
                state, shardings = create_train_state(model, (self.inputs["input_ids"][:1],), optimizer,
                                                      self.case.seed, mesh, params=params)
                self.shared.states[key] = {"state": state, "shardings": shardings}
            self.holder = self.shared.states[key]
            step = make_train_step(mlm_loss_fn(model), optimizer, schedule, self.holder["shardings"], mesh)
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
