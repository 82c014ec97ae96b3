"""Statistics, ratios, error entries, the printed / markdown table, the plots and the files of a benchmark result."""

from __future__ import annotations

import json
import os
import statistics
import traceback

import numpy as np

PEER_FAMILIES = ("transformers", "keras-hub")


def time_stats(times: list[float]) -> dict:
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "mean_s": statistics.fmean(times), "reps": len(times)}


def error_entry(e: BaseException, stage: str) -> dict:
    """The entry of a measurement that raised at `stage` (called inside the `except` block)."""
    return {"status": "error", "stage": stage, "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc().splitlines()[-5:]}


def not_wired_entry(what: str, baseline: str) -> dict:
    """The entry of a setting that lowers to its baseline's program: accepted by the config, not implemented."""
    return {"status": "error", "stage": "wiring",
            "error": f"{what} lowers to exactly the same program as {baseline}: not wired into the model yet "
                     "(nothing to measure)"}


def _pair(ours: dict, peer: dict) -> dict:
    out = {"time_ratio": ours["median_s"] / peer["median_s"], "speedup": peer["median_s"] / ours["median_s"]}
    a, b = ours.get("times_s") or [], peer.get("times_s") or []
    if a and len(a) == len(b):
        per_round = [x / y for x, y in zip(a, b)]
        out.update(paired_time_ratio_median=statistics.median(per_round), paired_time_ratio_min=min(per_round),
                   paired_time_ratio_max=max(per_round))
    return out


def ratios(implementations: dict) -> dict:
    """{ours name: {peer name: {...}}}: `time_ratio` = ours median / peer median, `speedup` its inverse, and
    `paired_time_ratio_median` (min, max) = the median over rounds of ours / peer within the same round, which
    cancels load that changes between rounds (both calls of a round ran under about the same load)."""
    ok = {k: v for k, v in implementations.items() if v.get("status") == "ok" and "median_s" in v}
    ours = {k: v for k, v in ok.items() if v["family"] == "ours"}
    peers = {k: v for k, v in ok.items() if v["family"] in PEER_FAMILIES}
    return {o: {p: _pair(ov, pv) for p, pv in peers.items()} for o, ov in ours.items()}


def add_throughput(result: dict) -> None:
    """Fills achieved FLOP/s and fractions of the measured matmul peak into every timed implementation, and the
    MFU (model FLOP/s / the device's datasheet peak in the run's dtype) where that peak is known."""
    peak = result["matmul_peak"]["flops_per_s"]
    datasheet = (result.get("device_peak") or {}).get("flops_per_s")
    for case in result["cases"]:
        flops = case.get("model_flops", {}).get("total")
        for entry in case.get("implementations", {}).values():
            if entry.get("status") != "ok" or "median_s" not in entry:
                continue
            if flops:
                entry["model_flops_per_s"] = flops / entry["median_s"]
                entry["model_flops_fraction_of_peak"] = entry["model_flops_per_s"] / peak if peak else None
                if datasheet:
                    entry["mfu"] = entry["model_flops_per_s"] / datasheet
            if entry.get("xla_flops"):
                entry["xla_flops_per_s"] = entry["xla_flops"] / entry["median_s"]
                entry["xla_flops_fraction_of_peak"] = entry["xla_flops_per_s"] / peak if peak else None


def _fmt_s(x) -> str:
    if x is None:
        return "-"
    return f"{x * 1e3:.1f} ms" if x < 10 else f"{x:.1f} s"


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for case in result["cases"]:
        label = f"{case['model']} {case['workload']} B={case['batch']} N={case['seq_len']}"
        if case.get("status") == "error":
            rows.append([label, "(case)", "ERROR", "", "", "", "", "", case.get("error", "")[:80]])
            continue
        baseline = next((k for k in ("transformers-eager", "keras-hub") if
                         case["implementations"].get(k, {}).get("median_s")), None)
        for name, e in case["implementations"].items():
            if e.get("status") != "ok" or "median_s" not in e:
                rows.append([label, name, "ERROR" if e.get("status") == "error" else e.get("status", ""),
                             "", "", "", "", "", (e.get("error") or "")[:90]])
                continue
            ratio = ""
            if baseline and name != baseline:
                pair = _pair(e, case["implementations"][baseline])
                ratio = f"{pair['time_ratio']:.2f}"
                if len(e.get("times_s") or []) > 1 and "paired_time_ratio_median" in pair:
                    ratio += f" ({pair['paired_time_ratio_median']:.2f})"
            check = case.get("numeric_check", {}).get("results", {}).get(name, {})
            check_txt = (f"{check['max_abs']:.1e}" if "max_abs" in check else "")
            mem = e.get("memory", {})
            probe = mem.get("probe", {})
            mem_txt = ""
            if probe.get("status") == "ok" and probe.get("peak_over_imports") is not None:
                mem_txt = f"{probe['peak_over_imports'] / 2 ** 20:.0f} MiB"
            elif "compiled" in mem and "peak_estimate" in mem["compiled"]:
                mem_txt = f"{mem['compiled']['peak_estimate'] / 2 ** 20:.0f} MiB (xla)"
            fraction = e.get("model_flops_fraction_of_peak")
            fraction_txt = f"{fraction:.1%}" if fraction is not None else "-"
            if e.get("mfu") is not None:
                fraction_txt += f" (MFU {e['mfu']:.1%})"
            rows.append([label, name, _fmt_s(e.get("compile_s") or e.get("first_call_s")),
                         f"{_fmt_s(e['median_s'])} [{_fmt_s(e['min_s'])}-{_fmt_s(e['max_s'])}]", ratio,
                         fraction_txt, mem_txt, check_txt, ""])
    return rows


HEADER = ["case", "implementation", "compile/first", "median [min-max]", "x of ref", "model FLOP/s % peak",
          "peak mem", "max|d| vs HF", "note"]


def markdown_extras(extras: dict) -> list[str]:
    """The compile-only extras as markdown lines (empty when none ran)."""
    lines = []
    cs = extras.get("compile_scan")
    if cs:
        lines += ["", f"Compile seconds, {cs.get('model')} train step, B={cs.get('batch')} N={cs.get('seq_len')}:", "",
                  "| scan_layers | lower s | compile s | XLA temp MiB |", "|---|---|---|---|"]
        for k, v in cs.get("scan_layers", {}).items():
            if v.get("status") == "ok":
                temp = v.get("memory", {}).get("temp")
                lines.append(f"| {k} | {v['lower_s']} | {v['compile_s']} | "
                             f"{temp / 2 ** 20:.0f} |" if temp is not None else f"| {k} | {v['lower_s']} | "
                             f"{v['compile_s']} | - |")
            else:
                lines.append(f"| {k} | ERROR: {v.get('error')} | | |")
    gc = extras.get("gather_counts")
    if gc:
        lines += ["", f"gather / scatter ops in the compiled HLO, {gc.get('model')} backbone, "
                  f"B=1 N={gc.get('seq_len')}:",
                  "", "| attention_impl | forward gather | grad gather | grad scatter |", "|---|---|---|---|"]
        for impl, v in gc.get("impls", {}).items():
            if v.get("status") == "ok":
                lines.append(f"| {impl} | {v['forward']['gather']} | {v['grad']['gather']} | {v['grad']['scatter']} |")
            else:
                lines.append(f"| {impl} | ERROR: {v.get('error')} | | |")
    mc = extras.get("memory_curve")
    if mc and "impls" in mc:
        ns = [str(n) for n in mc.get("seq_lens", [])]
        m = mc.get("model", {})
        lines += ["", f"XLA temp MiB of forward + backward, {m.get('num_hidden_layers')} layer(s) of width "
                  f"{m.get('hidden_size')}, B=1 (compiled, not run):", "",
                  "| attention_impl | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
        for impl, v in mc["impls"].items():
            if v.get("status") != "ok":
                lines.append(f"| {impl} | ERROR: {v.get('error')} |" + " |" * (len(ns) - 1))
                continue
            cells = [f"{v['by_seq_len'][n]['temp'] / 2 ** 20:.0f}" if "temp" in v["by_seq_len"].get(n, {}) else "ERROR"
                     for n in ns]
            lines.append(f"| {impl} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(result: dict) -> str:
    rows = table_rows(result)
    lines = []
    if rows:
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    peak = result["matmul_peak"]
    lines.append(f"Matmul peak ({peak['dtype']}, {peak['size']}^2): {peak['flops_per_s'] / 1e9:.1f} GFLOP/s.")
    device_peak = result.get("device_peak")
    if device_peak:
        lines[-1] += (f" MFU = model FLOP/s / the {device_peak['device_kind']} datasheet peak in "
                      f"{device_peak['dtype']}, {device_peak['flops_per_s'] / 1e12:.1f} TFLOP/s "
                      f"({device_peak['source']}).")
    if rows:
        lines[-1] += (" 'x of ref' = median time / median time of transformers-eager (keras-hub where "
                      "transformers was not run), in brackets the median over rounds of the same ratio within each "
                      "round: below 1 is faster. 'peak mem' = child-process peak RSS over imports (CPU) or XLA's "
                      "compiled estimate.")
    lines += markdown_extras(result.get("extras", {}))
    return "\n".join(lines) + "\n"


def text_table(result: dict) -> str:
    rows = [HEADER] + table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows) + "\n"


# ------------------------------------------------------------------------------------------------------- plots
def plot_times(result: dict, path: str) -> str | None:
    """Median times (min-max whiskers) per case, and ours / peer time ratios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = [c for c in result["cases"] if any(e.get("median_s") for e in c.get("implementations", {}).values())]
    if not cases:
        return None
    fig, axes = plt.subplots(len(cases), 2, figsize=(13, 1.2 + 2.2 * len(cases)), squeeze=False)
    colors = {"ours": "tab:blue", "transformers": "tab:orange", "keras-hub": "tab:green"}
    for row, case in zip(axes, cases):
        ok = [(k, e) for k, e in case["implementations"].items() if e.get("median_s")]
        names = [k for k, _ in ok]
        med = [e["median_s"] for _, e in ok]
        err = [[e["median_s"] - e["min_s"] for _, e in ok], [e["max_s"] - e["median_s"] for _, e in ok]]
        ax = row[0]
        ax.barh(names, med, xerr=err, color=[colors.get(e["family"], "grey") for _, e in ok])
        for y, (m, (_, e)) in enumerate(zip(med, ok)):
            ax.text(e["max_s"], y, f" {_fmt_s(m)}", va="center", fontsize=8)
        ax.invert_yaxis()
        if max(med) / max(min(med), 1e-9) > 30:
            ax.set_xscale("log")
        ax.set_xlabel("seconds per call (median, min-max)")
        ax.set_title(f"{case['model']} {case['workload']} B={case['batch']} N={case['seq_len']} {case['dtype']}",
                     fontsize=9)
        ax = row[1]
        labels, values = [], []
        for ours, peers in case.get("ratios", {}).items():
            for peer, r in peers.items():
                labels.append(f"{ours} / {peer}")
                values.append(r["time_ratio"])
        if values:
            ax.barh(labels, values, color=["tab:blue" if v < 1 else "tab:red" for v in values])
            ax.axvline(1.0, color="black", lw=0.8)
            for y, v in enumerate(values):
                ax.text(v, y, f" {v:.2f}", va="center", fontsize=8)
            ax.invert_yaxis()
        ax.set_xlabel("time ratio ours / peer (< 1: ours faster)")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{result.get('machine_kind', '')}  ({result['machine'].get('date_utc', '')})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_memory_curve(curve: dict, path: str) -> str | None:
    """Log-log compiled temp bytes vs N per attention_impl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for impl, entry in curve.get("impls", {}).items():
        pts = [(int(n), r["temp"]) for n, r in entry.get("by_seq_len", {}).items() if r.get("temp")]
        if pts:
            series[impl] = sorted(pts)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for impl, pts in series.items():
        ax.loglog([p[0] for p in pts], [p[1] / 2 ** 20 for p in pts], marker="o", label=impl)
    n0, b0 = next(iter(series.values()))[0]
    ns = sorted({p[0] for pts in series.values() for p in pts})
    ax.loglog(ns, [b0 / 2 ** 20 * (n / n0) ** 2 for n in ns], "k:", lw=0.8, label="~N^2")
    ax.loglog(ns, [b0 / 2 ** 20 * (n / n0) for n in ns], "k--", lw=0.8, label="~N")
    m = curve["model"]
    ax.set_xlabel("sequence length N (batch 1)")
    ax.set_ylabel("XLA temp MiB (forward + backward)")
    ax.set_title(f"compiled temp memory, {m['num_hidden_layers']} layer(s) width {m['hidden_size']}, "
                 f"{curve.get('backend')}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _jsonable(x):
    """JSON-ready: NumPy scalars to Python, non-finite floats to None (JSON has no NaN or inf)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def write_json(result: dict, path: str) -> None:
    """`result` as JSON at `path`, atomically (a crash mid-write leaves the previous file)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(_jsonable(result), f, indent=1)
        f.write("\n")
    os.replace(path + ".tmp", path)


def write_result_files(result: dict, path: str, plots: bool = True) -> dict:
    """The plots (times; the memory curve when measured), the JSON at `path` and its markdown table beside it.

    Returns what was written, also recorded in the JSON as `result["outputs"]`; a plot that fails is recorded there
    as `plot_error` and does not cost the JSON.
    """
    stem = os.path.splitext(path)[0]
    outputs = {"json": path, "table": stem + ".md"}
    if plots:
        try:
            outputs["times_plot"] = plot_times(result, stem + "_times.png")
            curve = result.get("extras", {}).get("memory_curve")
            if curve and "impls" in curve:
                outputs["memory_curve_plot"] = plot_memory_curve(curve, stem + "_memory_curve.png")
        except Exception as e:  # noqa: BLE001
            outputs["plot_error"] = f"{type(e).__name__}: {e}"
    result["outputs"] = outputs
    write_json(result, path)
    with open(stem + ".md", "w", encoding="utf-8") as f:
        f.write(markdown_table(result))
    return outputs


def rebuild(path: str) -> dict:
    """Recomputes ratios, throughput, the table and the plots of a results JSON (e.g. after changing this module)."""
    with open(path, encoding="utf-8") as f:
        result = json.load(f)
    for case in result["cases"]:
        if "implementations" in case:
            case["ratios"] = ratios(case["implementations"])
    add_throughput(result)
    write_result_files(result, path)
    return result


if __name__ == "__main__":
    import sys

    for p in sys.argv[1:]:
        print(text_table(rebuild(p)))
