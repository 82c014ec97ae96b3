"""transformers' DeBERTa in PyTorch, eager or under `torch.compile`, with torch.optim.AdamW for the train step."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.cases import Case, backbone_state, hf_config, make_inputs
from benchmarks.runners.base import ADAM_EPS, CLIP_NORM, LEARNING_RATE, WEIGHT_DECAY, Runner, spec_name


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
