"""The implementations under test behind one interface (`base.Runner`), one module per framework.

Each runner owns one workload of one case for one implementation:

- `ours.OursRunner`: deberta-jax under `jax.jit` (AOT-compiled), for one `attention_impl` and `scan_layers` setting.
  forward: `DebertaModel(...).last_hidden_state`; train: the production step (`make_train_step` with
  `mlm_loss_fn` of `DebertaForMLMPretraining(emd_steps=0)`, i.e. plain MLM with logits only at the masked
  positions, and `make_optimizer`'s AdamW with clipping at 1.0 and weight decay 0.01 off biases/LayerNorm).
- `pytorch.TorchRunner`: transformers' `DebertaV2Model` / `DebertaV2ForMaskedLM` eager, or under `torch.compile`
  (logits at all N positions, as the reference computes them), torch.optim.AdamW with the same hyper-parameters.
- `keras_jax.KerasRunner`: keras-hub's `DebertaV3Backbone` / `DebertaV3MaskedLM` on the JAX backend, called through
  `stateless_call` under `jax.jit` (keras' own pattern for JAX training loops), keras AdamW; logits at the masked
  positions (keras-hub's MLM head gathers them, like ours).

All three load the same transformers weights where possible (ours through `state_dict_to_params`, keras-hub by a
variable-by-variable copy); where a copy fails the runner keeps its own random init and says so in `meta`.
Each module imports its framework inside the runner's methods, so a memory-probe child starts only the one it needs.
"""

from __future__ import annotations

from benchmarks.cases import Case
from benchmarks.runners.base import Runner
from benchmarks.runners.keras_jax import KerasRunner
from benchmarks.runners.ours import OursRunner, OursShared
from benchmarks.runners.pytorch import TorchRunner, TorchShared


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
