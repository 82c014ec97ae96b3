"""Command-line options of `python -m benchmarks`.

This module imports nothing heavy: `--help` and a bad option answer without starting any framework.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

WORKLOADS = ("forward", "train")
FAMILIES = ("ours", "transformers", "keras-hub")
EXTRAS = ("compile-scan", "gather-count", "memory-curve")
DEFAULT_RESULTS_DIR = os.path.join("experiments", "bench", "results")


def _csv(text: str) -> list[str]:
    """Comma-separated values; 'none' is the empty list (e.g. `--workloads none` runs only the extras)."""
    if text.strip().lower() == "none":
        return []
    return [x.strip() for x in text.split(",") if x.strip()]


def _csv_int(text: str) -> list[int]:
    return [int(x) for x in _csv(text)]


def _scan_flags(text: str) -> list[bool]:
    flags = []
    for item in _csv(text):
        if item.lower() in ("off", "false", "0", "no"):
            flags.append(False)
        elif item.lower() in ("on", "true", "1", "yes"):
            flags.append(True)
        else:
            raise argparse.ArgumentTypeError(f"--scan-layers takes off,on; got {item!r}")
    return flags


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """Everything one benchmark run measures; see `add_arguments` for the meaning of each field."""

    models: list[str] = dataclasses.field(default_factory=lambda: ["deberta-v3-xsmall", "deberta-v3-base"])
    seq_lens: list[int] = dataclasses.field(default_factory=lambda: [128, 512])
    batch: int = 8
    workloads: list[str] = dataclasses.field(default_factory=lambda: list(WORKLOADS))
    impls: list[str] = dataclasses.field(default_factory=lambda: ["reference", "skew", "chunked"])
    scan_layers: list[bool] = dataclasses.field(default_factory=lambda: [False, True])
    families: list[str] = dataclasses.field(default_factory=lambda: list(FAMILIES))
    torch_compile: bool = True
    dtype: str = "float32"
    reps: int = 5
    warmup: int = 1
    mask_fraction: float = 0.15
    seed: int = 0
    check_atol: float = 1e-4
    memory_probe: bool = True
    probe_timeout_s: float = 900.0
    extras: list[str] = dataclasses.field(default_factory=list)
    compile_scan_model: str = "deberta-v3-base"
    hlo_model: str | None = None  # None: the first of `models`
    hlo_seq_len: int = 128
    curve_seq_lens: list[int] = dataclasses.field(default_factory=lambda: [512, 1024, 2048, 4096, 8192])
    curve_layers: int = 1
    results_dir: str = DEFAULT_RESULTS_DIR
    output: str | None = None  # JSON path; default results_dir/<machine kind>.json
    plots: bool = True
    peak_size: int = 2048

    def validate(self) -> None:
        for w in self.workloads:
            if w not in WORKLOADS:
                raise ValueError(f"unknown workload {w!r}; known: {list(WORKLOADS)}")
        for f in self.families:
            if f not in FAMILIES:
                raise ValueError(f"unknown implementation family {f!r}; known: {list(FAMILIES)}")
        for e in self.extras:
            if e not in EXTRAS:
                raise ValueError(f"unknown extra measurement {e!r}; known: {list(EXTRAS)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"--dtype must be float32 or bfloat16; got {self.dtype!r}")
        if self.reps < 1 or self.batch < 1 or any(n < 2 for n in self.seq_lens):
            raise ValueError("--reps and --batch must be >= 1 and every --seq-lens entry >= 2")
        if not 0 < self.mask_fraction <= 1:
            raise ValueError("--mask-fraction must be in (0, 1]")
        if not self.extras and not (self.workloads and self.families):
            raise ValueError("nothing to measure: give --workloads and --families, or --extras")
        if not self.scan_layers:
            raise ValueError("--scan-layers needs at least one of off,on")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the harness options to `parser`."""
    d = BenchOptions()
    g = parser.add_argument_group("what to measure")
    g.add_argument("--models", type=_csv, default=d.models,
                   help="comma-separated presets (deberta-v3-xsmall, deberta-v3-base, ...), 'tiny' (2 layers, width "
                        "32), or paths to HF config.json files (default: deberta-v3-xsmall,deberta-v3-base)")
    g.add_argument("--seq-lens", type=_csv_int, default=d.seq_lens, help="sequence lengths N (default: 128,512)")
    g.add_argument("--batch", type=int, default=d.batch, help="batch size B (default: %(default)s)")
    g.add_argument("--workloads", type=_csv, default=d.workloads,
                   help="forward (backbone, last hidden state) and/or train (MLM step with AdamW) (default: both); "
                        "'none' to run only --extras")
    g.add_argument("--impls", type=_csv, default=d.impls,
                   help="our attention_impl values to time (default: reference,skew,chunked; pallas also accepted); "
                        "NAME:QxK also sets the tile sizes, e.g. pallas:32x32")
    g.add_argument("--scan-layers", type=_scan_flags, default=d.scan_layers,
                   help="our scan_layers settings: off, on or off,on (default: off,on)")
    g.add_argument("--families", type=_csv, default=d.families,
                   help="implementations: ours, transformers, keras-hub (default: all three)")
    g.add_argument("--no-torch-compile", dest="torch_compile", action="store_false",
                   help="skip the torch.compile variant of transformers (it compiles for minutes on a CPU)")
    g.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16"],
                   help="compute dtype: ours config.dtype, torch autocast, keras mixed_bfloat16 (default float32; "
                        "use bfloat16 on GPU/TPU)")

    g = parser.add_argument_group("how to measure")
    g.add_argument("--reps", type=int, default=d.reps, help="timed rounds, interleaved across implementations")
    g.add_argument("--warmup", type=int, default=d.warmup, help="untimed calls after the first (compiling) call")
    g.add_argument("--mask-fraction", type=float, default=d.mask_fraction, help="MLM masked fraction (default 0.15)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--check-atol", type=float, default=d.check_atol,
                   help="max-abs tolerance of the ours/keras vs transformers output check in fp32 (default 1e-4)")
    g.add_argument("--no-memory-probe", dest="memory_probe", action="store_false",
                   help="skip the per-implementation child processes that measure peak RSS / device memory")
    g.add_argument("--probe-timeout", dest="probe_timeout_s", type=float, default=d.probe_timeout_s)
    g.add_argument("--peak-size", type=int, default=d.peak_size, help="matrix size of the matmul-peak measurement")

    g = parser.add_argument_group("extra measurements (each off unless named)")
    g.add_argument("--extras", type=_csv, default=d.extras,
                   help="comma-separated: compile-scan (compile seconds of a train step with/without scan_layers), "
                        "gather-count (gather ops in the compiled forward and grad per attention_impl), "
                        "memory-curve (compiled temp bytes of a small backbone's forward+backward vs N); 'all' = all")
    g.add_argument("--compile-scan-model", default=d.compile_scan_model, help="model of compile-scan")
    g.add_argument("--hlo-model", default=d.hlo_model, help="model of gather-count (default: first of --models)")
    g.add_argument("--hlo-seq-len", type=int, default=d.hlo_seq_len, help="N of gather-count (batch 1)")
    g.add_argument("--curve-seq-lens", type=_csv_int, default=d.curve_seq_lens, help="N of memory-curve (batch 1)")
    g.add_argument("--curve-layers", type=int, default=d.curve_layers,
                   help="layers of the memory-curve model (deberta-v3-xsmall widths, vocab 1024)")

    g = parser.add_argument_group("output")
    g.add_argument("--results-dir", default=d.results_dir)
    g.add_argument("--output", default=None, help="JSON path (default: RESULTS_DIR/<machine kind>.json, or "
                   "<machine kind>_extras.json when no workload runs); a .md table and .png plots go beside it")
    g.add_argument("--no-plots", dest="plots", action="store_false")
    return parser


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    fields = {f.name for f in dataclasses.fields(BenchOptions)}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if values.get("extras") == ["all"]:
        values["extras"] = list(EXTRAS)
    opts = BenchOptions(**values)
    opts.validate()
    return opts


def configure_environment() -> None:
    """Environment the harness needs, set before any framework starts: keras on the JAX backend, JAX not
    pre-allocating 75% of a GPU (torch shares the device in the same process), and a fresh inductor cache so that
    torch.compile's first call is a cold compile like jit's (set TORCHINDUCTOR_CACHE_DIR to reuse one)."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        import atexit
        import shutil
        import tempfile

        cache = tempfile.mkdtemp(prefix="deberta-bench-inductor-")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        atexit.register(shutil.rmtree, cache, True)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
