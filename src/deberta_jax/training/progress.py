"""Training progress: a tqdm bar, TensorBoard event files, a JSON-lines metrics log and throughput figures."""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
import tqdm


class ProgressLogger:
    """Logs metrics every call with throughput (tokens/s) and MFU when FLOPs and a peak are known."""

    def __init__(self, workdir: str, total_steps: int, start_step: int, tokens_per_step: int,
                 flops_per_step: float | None = None, peak_flops: float | None = None, enabled: bool = True,
                 show_bar: bool = True):
        """enabled: write files (only one process of a multi-host run should); show_bar: draw the tqdm bar."""
        self.enabled = enabled
        self.tokens_per_step = tokens_per_step
        self.flops_per_step = flops_per_step
        self.peak_flops = peak_flops
        self._last_time = time.perf_counter()
        self._last_step = start_step
        self.history: list[dict] = []
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"))
            path = os.path.join(workdir, "metrics.jsonl")
            _drop_rows_after(path, start_step)
            self._jsonl = open(path, "a", encoding="utf-8")
            self._bar = tqdm.tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                                  disable=not show_bar)

    def log(self, step: int, step_metrics: list[dict]) -> dict:
        """Logs the mean of the per-step metric dicts (device or host scalars) of the steps since the last call;
        `step` is the number of steps done. Fetching here, every few steps, keeps the device from waiting on the
        host. Returns the logged row, throughput added."""
        fetched = jax.device_get(step_metrics)
        metrics = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
        now = time.perf_counter()
        steps = max(step - self._last_step, 1)
        seconds = max(now - self._last_time, 1e-9)
        self._last_time, self._last_step = now, step
        row = {"step": step, **{k: float(v) for k, v in metrics.items()},
               "tokens_per_second": self.tokens_per_step * steps / seconds,
               "seconds_per_step": seconds / steps}
        if self.flops_per_step:
            row["tflops_per_second"] = self.flops_per_step * steps / seconds / 1e12
            if self.peak_flops:
                row["mfu"] = self.flops_per_step * steps / seconds / self.peak_flops
        self.history.append(row)
        if self.enabled:
            for key, value in row.items():
                if key != "step":
                    self._writer.add_scalar(key, value, step)
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
            shown = {k: row[k] for k in ("loss", "mlm_accuracy", "rtd_accuracy", "tokens_per_second", "mfu")
                     if k in row}
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
            self._bar.update(steps)
        return row

    def close(self) -> None:
        if self.enabled:
            self._bar.close()
            self._writer.close()
            self._jsonl.close()


def _drop_rows_after(path: str, step: int) -> None:
    """Removes the rows of steps after `step` from a metrics.jsonl: a run resumed from a checkpoint at `step`
    logs those steps again, and each step must appear once."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) != len(lines):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(kept)
        os.replace(path + ".tmp", path)
