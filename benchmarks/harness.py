"""The benchmark run: every case, every implementation, interleaved; then the extras, the JSON and the plots.

Per case (model x N x workload): build every runner (ours per attention_impl x scan_layers, transformers eager and
torch.compile, keras-hub) on the same weights and inputs; check numerically against transformers eager; make the
first call of each (timed apart: compilation); `warmup` more untimed calls; then `reps` rounds, each calling every
runner once in an order rotated by one per round, so load from other processes hits all of them alike; then the
memory figures (compiled analysis in process, peak RSS / device peak in a fresh child per runner).

A runner that raises at any stage becomes an error entry ({"status": "error", "stage", "error"}) and the others go
on; an attention_impl or scan_layers value that lowers to the same program as the baseline is an error entry at
stage "wiring" (it is accepted by the config but not implemented by the model yet).
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import extras
from benchmarks.cases import Case, config_to_dict, num_masked, random_hf_state, resolve_model
from benchmarks.device_peaks import datasheet_peak
from benchmarks.flops import model_flops
from benchmarks.machine import load_average, machine_info, machine_kind
from benchmarks.memory_probe import run_probe
from benchmarks.options import BenchOptions, configure_environment, options_from_args
from benchmarks.report import (add_throughput, error_entry, not_wired_entry, ratios, text_table, time_stats,
                               write_json, write_result_files)
from benchmarks.runners import runner_from_spec
from benchmarks.runners.base import Runner, spec_name
from benchmarks.runners.ours import ours_lowered_text
from deberta_jax.training.throughput import measure_matmul_peak

SCHEMA = "deberta-jax-bench/1"
NOTES = {
    "timing": "wall clock of one synchronised call (block_until_ready / torch.cuda.synchronize); the first call "
              "(compilation for jit and torch.compile) and `warmup` more calls are excluded from the statistics; "
              "rounds are interleaved across implementations (order rotated each round)",
    "workload_forward": "backbone forward in eval mode, output the last hidden state [B, N, hidden]",
    "workload_train": "one MLM train step with AdamW (lr 1e-4, eps 1e-6, decay 0.01 off 1-D params, global-norm "
                      "clipping 1.0), dropout on; forward, backward and update. ours and keras-hub compute vocab "
                      "logits at the masked positions only; transformers at all N positions (as it does)",
    "inputs": "random token ids without padding (attention_mask all ones); M = round(mask_fraction * N) masked "
              "positions per row, the same for every implementation",
    "weights": "one transformers DebertaV2ForMaskedLM random init (+N(0, 0.02) noise) per model, converted into "
               "ours and copied into keras-hub; see each implementation's 'weights'",
    "numeric_check": "max |x - transformers eager| before timing: forward = last hidden state, train = eval-mode "
                     "MLM logits at the masked positions",
    "model_flops": "closed-form count of benchmarks/flops.py (same FLOPs credited to every "
                   "implementation); xla_flops = XLA cost_analysis of the compiled program (ours, keras-hub)",
    "fraction_of_peak": "FLOP/s divided by matmul_peak.flops_per_s, measured in the same run on the same device",
    "mfu": "model FLOP/s divided by device_peak.flops_per_s, the accelerator's dense datasheet rate in the run's "
           "dtype (benchmarks/device_peaks.py); absent on CPU and on unlisted devices",
    "memory": "compiled: XLA memory_analysis (arguments + outputs + temp - aliased); probe: fresh child process, "
              "peak RSS during one step (CPU) and device peaks (GPU), see benchmarks/memory_probe.py",
    "ratios": "time_ratio = ours median / peer median (< 1: ours faster); speedup = its inverse",
}


def default_log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_peak(dtype: str, size: int) -> float:
    return measure_matmul_peak(jnp.dtype(dtype), size=size)


# ----------------------------------------------------------------------------------------------- one case
def _specs(opts: BenchOptions) -> list[dict]:
    specs = []
    if "ours" in opts.families:
        specs += [{"family": "ours", "impl": impl, "scan": scan} for impl in opts.impls for scan in opts.scan_layers]
    if "transformers" in opts.families:
        specs.append({"family": "transformers", "compiled": False})
        if opts.torch_compile:
            specs.append({"family": "transformers", "compiled": True})
    if "keras-hub" in opts.families:
        specs.append({"family": "keras-hub"})
    return specs


def _case_entry(case: Case) -> dict:
    """The case's result entry before anything runs: what it is and its model FLOPs."""
    return {"model": case.model, "workload": case.workload, "batch": case.batch, "seq_len": case.seq_len,
            "masked_per_row": case.masked, "dtype": case.dtype,
            "config": {k: case.config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                   "intermediate_size", "vocab_size", "position_buckets",
                                                   "max_position_embeddings")},
            "model_flops": model_flops(case.cfg, case.workload, case.batch, case.seq_len, case.masked),
            "implementations": {}}


def _fail(runner: Runner, e: BaseException, stage: str, impls: dict, log) -> None:
    """Records `e` as the runner's error at `stage` and closes it (called inside the `except` block)."""
    impls[runner.name].update(error_entry(e, stage))
    log(f"  {runner.name}: ERROR at {stage}: {impls[runner.name]['error']}")
    runner.close()


def _call_each(runners: list[Runner], step, stage: str, impls: dict, log) -> list[Runner]:
    """step(runner) for every runner; returns those that did not raise (the others become error entries)."""
    alive = []
    for r in runners:
        try:
            step(r)
            alive.append(r)
        except Exception as e:  # noqa: BLE001
            _fail(r, e, stage, impls, log)
    return alive


def _wiring(case: Case, specs: list[dict], log) -> dict[str, dict]:
    """Error entries for ours specs that are not wired (same lowered program as their baseline) or fail to lower."""
    texts: dict = {}

    def text(impl, scan):
        if (impl, scan) not in texts:
            try:
                texts[(impl, scan)] = ours_lowered_text(case, impl, scan)
            except Exception as e:  # noqa: BLE001
                texts[(impl, scan)] = error_entry(e, "lower")
        return texts[(impl, scan)]

    errors = {}
    for spec in specs:
        if spec["family"] != "ours":
            continue
        name, impl, scan = spec_name(spec), spec["impl"], spec["scan"]
        own = text(impl, scan)
        if isinstance(own, dict):
            errors[name] = own
        elif impl != "reference" and own == text("reference", scan):
            errors[name] = not_wired_entry(f"attention_impl={impl!r}", "attention_impl='reference'")
        elif scan and own == text(impl, False):
            errors[name] = not_wired_entry("scan_layers=True", "scan_layers=False")
        if name in errors:
            log(f"  {name}: {errors[name]['error']}")
    return errors


def _build(case: Case, specs: list[dict], hf_state: dict, shared: dict, impls: dict, log) -> list[Runner]:
    """Builds (and AOT-compiles where the framework allows) one runner per spec; a spec that is not wired or does
    not build becomes an error entry."""
    errors = _wiring(case, specs, log) if any(s["family"] == "ours" for s in specs) else {}
    runners = []
    for spec in specs:
        name = spec_name(spec)
        if name in errors:
            impls[name] = {"family": spec["family"], **spec, **errors[name]}
            continue
        log(f"  {name}: build{' + compile' if spec['family'] != 'transformers' else ''}")
        runner = runner_from_spec(spec, case, hf_state, shared)
        try:
            runner.build()
        except Exception as e:  # noqa: BLE001
            impls[name] = {**runner.meta, **error_entry(e, "build")}
            log(f"  {name}: ERROR at build: {impls[name]['error']}")
            runner.close()
            continue
        impls[name] = {**runner.meta, "status": "ok", "compile_s": runner.compile_s}
        runners.append(runner)
    return runners


def _check_outputs(case: Case, runners: list[Runner], log) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """Each runner's output for the numerical check, and the failed results of those that raised."""
    outputs, failed = {}, {}
    for r in runners:
        if case.workload == "train" and r.name == "transformers-compile":
            continue  # shares its module with transformers-eager; its check would repeat the eager one
        log(f"  {r.name}: output for the numerical check")
        try:
            outputs[r.name] = r.check_output()
        except Exception as e:  # noqa: BLE001
            failed[r.name] = {"passed": False, **error_entry(e, "check")}
    return outputs, failed


def _compare(out: np.ndarray, ref: np.ndarray, atol: float, dtype: str) -> dict:
    if out.shape != ref.shape:
        return {"passed": False, "error": f"shape {out.shape} vs reference {ref.shape}"}
    diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    scale = float(np.abs(ref).max()) or 1.0
    tol = atol if dtype == "float32" else 3e-2 * scale
    return {"max_abs": float(diff.max()), "mean_abs": float(diff.mean()),
            "max_rel_to_ref_max": float(diff.max()) / scale,
            "tolerance": tol, "passed": bool(diff.max() <= tol)}


def _numeric_check(case: Case, outputs: dict[str, np.ndarray], failed: dict[str, dict], atol: float, log) -> dict:
    """Every output against transformers eager's (against the first output when transformers did not run)."""
    check = {"reference": "transformers-eager", "what": ("last hidden state" if case.workload == "forward" else
                                                         "eval-mode MLM logits at the masked positions"),
             "results": dict(failed)}
    ref = outputs.get("transformers-eager")
    if ref is None and outputs:
        check["reference"] = next(iter(outputs))
        ref = outputs[check["reference"]]
    for name, out in outputs.items():
        if name != check["reference"]:
            result = check["results"][name] = _compare(out, ref, atol, case.dtype)
            if not result["passed"]:
                log(f"  WARNING {name}: max|d| vs {check['reference']} = {result['max_abs']:.3g} "
                    f"> tolerance {result['tolerance']:.3g}")
    return check


def _first_calls_and_check(case: Case, runners: list[Runner], impls: dict, atol: float,
                           log) -> tuple[list[Runner], dict]:
    """The first (compiling) call of every runner, timed apart, and the numerical check. A train step changes the
    weights, so train outputs are taken before the first call; forward outputs after it (compiled by then)."""

    def first_call(r: Runner) -> None:
        log(f"  {r.name}: first call")
        impls[r.name]["first_call_s"] = r.prepare()

    if case.workload == "train":
        outputs, failed = _check_outputs(case, runners, log)
    runners = _call_each(runners, first_call, "first_call", impls, log)
    if case.workload == "forward":
        outputs, failed = _check_outputs(case, runners, log)
    return runners, _numeric_check(case, outputs, failed, atol, log)


def _time_rounds(runners: list[Runner], reps: int, impls: dict, log) -> tuple[list[Runner], dict[str, list[float]]]:
    """`reps` rounds, each calling every runner once in an order rotated by one per round (so that load from other
    processes hits all of them alike); returns the runners still alive and each one's seconds per call."""
    times: dict[str, list[float]] = {r.name: [] for r in runners}
    for rep in range(reps):
        if not runners:
            break
        k = rep % len(runners)
        order = runners[k:] + runners[:k]
        line = []
        alive_names = set()
        for r in order:
            t0 = time.perf_counter()
            try:
                r.call()
            except Exception as e:  # noqa: BLE001
                _fail(r, e, "run", impls, log)
                continue
            dt = time.perf_counter() - t0
            times[r.name].append(dt)
            alive_names.add(r.name)
            line.append(f"{r.name} {dt * 1e3:.0f}ms")
        runners = [r for r in runners if r.name in alive_names]
        log(f"  round {rep + 1}/{reps}: " + ", ".join(line))
    return runners, times


def _record_and_close(runners: list[Runner], times: dict[str, list[float]], impls: dict) -> None:
    """Time statistics, in-process memory and XLA's FLOP count of every runner that finished its rounds."""
    for r in runners:
        e = impls[r.name]
        e.update(time_stats(times[r.name]), times_s=times[r.name])
        try:
            e["memory"] = r.memory()
            e["memory"].update(r.device_memory())
            e["xla_flops"] = r.xla_flops()
        except Exception as ex:  # noqa: BLE001
            e["memory_error"] = f"{type(ex).__name__}: {ex}"
        r.close()


def _probe_memory(case: Case, specs: list[dict], impls: dict, weights_path: str, timeout_s: float, log) -> None:
    """Peak memory of one step of every measured implementation, each in a fresh child process."""
    for spec in specs:
        name = spec_name(spec)
        e = impls.get(name, {})
        if e.get("status") != "ok":
            continue
        if name == "transformers-compile":
            e.setdefault("memory", {})["probe"] = {"status": "skipped",
                                                   "reason": "would recompile for minutes in the child"}
            continue
        log(f"  {name}: memory probe (child process)")
        e.setdefault("memory", {})["probe"] = run_probe(dataclasses.asdict(case), spec, weights_path, timeout_s)
        if e["memory"]["probe"].get("status") != "ok":
            log(f"  {name}: memory probe ERROR: {e['memory']['probe'].get('error')}")


def run_case(case: Case, hf_state: dict, opts: BenchOptions, log, weights_path: str | None) -> dict:
    """One case: build, first call and numerical check, warmup, timed rounds, memory; returns its result entry."""
    entry = _case_entry(case)
    impls = entry["implementations"]
    specs = _specs(opts)
    log(f"== case {case.key}: {len(specs)} implementation(s), model FLOPs {entry['model_flops']['total']:.3g}")
    shared: dict = {}  # what runners of one family share within the case (weights, train state, module)
    runners = _build(case, specs, hf_state, shared, impls, log)
    runners, entry["numeric_check"] = _first_calls_and_check(case, runners, impls, opts.check_atol, log)
    for _ in range(opts.warmup):
        runners = _call_each(runners, lambda r: r.call(), "warmup", impls, log)
    runners, times = _time_rounds(runners, opts.reps, impls, log)
    _record_and_close(runners, times, impls)
    shared.clear()
    gc.collect()
    if opts.memory_probe and weights_path:
        _probe_memory(case, specs, impls, weights_path, opts.probe_timeout_s, log)
    entry["ratios"] = ratios(impls)
    entry["load_average_after"] = load_average()
    return entry


# ----------------------------------------------------------------------------------------------- whole run
def run(opts: BenchOptions, log=default_log) -> dict:
    """Runs everything `opts` asks for; writes the JSON (and plots) and returns the result dict."""
    configure_environment()
    opts.validate()
    info = machine_info()
    kind = machine_kind(info)
    log(f"machine {kind}: {info['cpu_model']}, {info['cpu_affinity']} cores, jax {info['jax_backend']} "
        f"{info['jax_devices']}, load {info['load_average_at_start']}")
    result = {"schema": SCHEMA, "machine_kind": kind, "machine": info, "options": dataclasses.asdict(opts),
              "notes": NOTES, "cases": [], "extras": {}}
    result["device_peak"] = _device_peak(opts.dtype)
    log(f"matmul peak ({opts.dtype}, {opts.peak_size}^2)")
    peaks = [measure_peak(opts.dtype, opts.peak_size)]
    log(f"  {peaks[0] / 1e9:.1f} GFLOP/s")
    _set_matmul_peak(result, peaks, opts)  # in the partial results too, so that a stopped run can be rebuilt

    if opts.workloads and opts.families:
        for model_name in opts.models:
            try:
                cfg = resolve_model(model_name).replace(dtype="float32")
                log(f"model {model_name}: transformers random init")
                hf_state = random_hf_state(cfg, opts.seed)
            except Exception as e:  # noqa: BLE001
                result["cases"].append({"model": model_name, **error_entry(e, "model")})
                log(f"model {model_name}: ERROR {result['cases'][-1]['error']}")
                continue
            with tempfile.TemporaryDirectory(prefix="deberta-bench-") as tmp:
                weights_path = None
                if opts.memory_probe:
                    weights_path = os.path.join(tmp, "weights.npz")
                    np.savez(weights_path, **hf_state)
                for seq_len in opts.seq_lens:
                    for workload in opts.workloads:
                        case = Case(model=model_name, config=config_to_dict(cfg), workload=workload,
                                    batch=opts.batch, seq_len=seq_len, masked=num_masked(seq_len, opts.mask_fraction),
                                    dtype=opts.dtype, seed=opts.seed)
                        try:
                            result["cases"].append(run_case(case, hf_state, opts, log, weights_path))
                        except Exception as e:  # noqa: BLE001 - a case that breaks the harness is still reported
                            result["cases"].append({"model": model_name, "workload": workload, "batch": opts.batch,
                                                    "seq_len": seq_len, **error_entry(e, "case")})
                            log(f"case {case.key}: ERROR {result['cases'][-1]['error']}")
                        write_partial(result, opts)
                        gc.collect()
            del hf_state
            gc.collect()

    if opts.extras:
        result["extras"] = run_extras(opts, log)

    log("matmul peak again (end of run)")
    peaks.append(measure_peak(opts.dtype, opts.peak_size))
    _set_matmul_peak(result, peaks, opts)
    info["load_average_at_end"] = load_average()
    add_throughput(result)
    write_outputs(result, opts, log)
    return result


def run_extras(opts: BenchOptions, log) -> dict:
    out = {}
    if "compile-scan" in opts.extras:
        try:
            cfg = resolve_model(opts.compile_scan_model).replace(dtype=opts.dtype)
            n = opts.seq_lens[0]
            out["compile_scan"] = extras.compile_scan(cfg, opts.compile_scan_model, opts.batch, n,
                                                      num_masked(n, opts.mask_fraction), log)
        except Exception as e:  # noqa: BLE001
            out["compile_scan"] = error_entry(e, "compile-scan")
    if "gather-count" in opts.extras:
        name = opts.hlo_model or opts.models[0]
        try:
            cfg = resolve_model(name).replace(dtype=opts.dtype)
            out["gather_counts"] = {"model": name, **extras.gather_counts(cfg, opts.impls, opts.hlo_seq_len, log)}
        except Exception as e:  # noqa: BLE001
            out["gather_counts"] = error_entry(e, "gather-count")
    if "memory-curve" in opts.extras:
        try:
            cfg = resolve_model("deberta-v3-xsmall").replace(num_hidden_layers=opts.curve_layers, vocab_size=1024,
                                                             dtype=opts.dtype)
            out["memory_curve"] = extras.memory_curve(cfg, opts.impls, opts.curve_seq_lens, log)
        except Exception as e:  # noqa: BLE001
            out["memory_curve"] = error_entry(e, "memory-curve")
    return out


def _results_path(result: dict, opts: BenchOptions) -> str:
    suffix = "" if result["cases"] else "_extras"
    return opts.output or os.path.join(opts.results_dir, f"{result['machine_kind']}{suffix}.json")


def _device_peak(dtype: str) -> dict | None:
    """The datasheet peak of the default accelerator in `dtype` (None on CPU or for an unlisted device)."""
    device = jax.devices()[0]
    return None if device.platform == "cpu" else datasheet_peak(device.device_kind, dtype)


def _set_matmul_peak(result: dict, peaks: list[float], opts: BenchOptions) -> None:
    result["matmul_peak"] = {"flops_per_s": max(peaks), "measurements": list(peaks), "dtype": opts.dtype,
                             "size": opts.peak_size, "device": str(jax.devices()[0]),
                             "how": "deberta_jax.training.throughput.measure_matmul_peak at the start and the end "
                                    "of the run; the larger is the denominator"}


def write_partial(result: dict, opts: BenchOptions) -> None:
    """The cases measured so far to <results>.partial.json (atomically), so that a crash or a stop mid-run keeps
    them; the final write removes it."""
    write_json(result, os.path.splitext(_results_path(result, opts))[0] + ".partial.json")


def write_outputs(result: dict, opts: BenchOptions, log) -> None:
    path = _results_path(result, opts)
    stem = os.path.splitext(path)[0]
    outputs = write_result_files(result, path, plots=opts.plots)
    if "plot_error" in outputs:
        log(f"plot ERROR: {outputs['plot_error']}")
    if os.path.exists(stem + ".partial.json"):
        os.remove(stem + ".partial.json")
    if result["cases"]:
        print(text_table(result), flush=True)
    print(f"matmul peak {result['matmul_peak']['flops_per_s'] / 1e9:.1f} GFLOP/s; wrote {path}", flush=True)
    _print_extras(result.get("extras", {}))
    _print_problems(result, log)


def _print_extras(ex: dict) -> None:
    if "compile_scan" in ex:
        for k, v in ex["compile_scan"].get("scan_layers", {}).items():
            print(f"compile-scan scan_layers={k}: " + (f"lower {v['lower_s']}s compile {v['compile_s']}s"
                                                       if v.get("status") == "ok" else f"ERROR {v.get('error')}"))
    if "gather_counts" in ex:
        for impl, v in ex["gather_counts"].get("impls", {}).items():
            print(f"gather-count {impl}: " + (f"forward {v['forward']} grad {v['grad']}"
                                              if v.get("status") == "ok" else f"ERROR {v.get('error')}"))
    if "memory_curve" in ex:
        for impl, v in ex["memory_curve"].get("impls", {}).items():
            if v.get("status") != "ok":
                print(f"memory-curve {impl}: ERROR {v.get('error')}")
                continue
            pts = ", ".join(f"N={n}: {r['temp'] / 2 ** 20:.0f} MiB" if "temp" in r else f"N={n}: ERROR"
                            for n, r in v["by_seq_len"].items())
            print(f"memory-curve {impl} temp: {pts}")


def _print_problems(result: dict, log) -> None:
    problems = []
    for case in result["cases"]:
        if case.get("status") == "error":
            problems.append(f"{case.get('model')} {case.get('workload', '')}: {case['error']}")
            continue
        for name, e in case.get("implementations", {}).items():
            if e.get("status") == "error":
                problems.append(f"{case['model']} {case['workload']} N={case['seq_len']} {name} "
                                f"[{e.get('stage')}]: {e['error']}")
        for name, c in case.get("numeric_check", {}).get("results", {}).items():
            if not c.get("passed"):
                problems.append(f"{case['model']} {case['workload']} N={case['seq_len']} {name}: numeric check "
                                f"failed ({c.get('max_abs', c.get('error'))})")
    for p in problems:
        log(f"recorded error: {p}")


def numeric_checks_passed(result: dict) -> bool:
    return all(c.get("passed", False) for case in result["cases"]
               for c in case.get("numeric_check", {}).get("results", {}).values())


def run_from_args(args) -> int:
    """Entry point of `python -m benchmarks`: 0, or 1 when a numerical check failed."""
    result = run(options_from_args(args))
    return 0 if numeric_checks_passed(result) else 1
