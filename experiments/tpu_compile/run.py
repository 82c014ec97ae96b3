"""Compiles pretraining recipes for TPU slices and finds the largest per-chip batch that fits; writes one JSON per
compile and the README table. Compiler estimates only: no TPU is used (needs libtpu: pip install "jax[tpu]").

    JAX_PLATFORMS=cpu python experiments/tpu_compile/run.py --case v3_base:v5e-8:skew [--case ...]
    python experiments/tpu_compile/run.py --table          # the markdown table of every JSON here

The search per case: compile at --start rows per chip; from that compile's memory, the largest power of two whose
linear extrapolation (fixed part + rows x temp per row) fits is compiled next, then doubled while it fits or
halved until it does, at most --max-compiles compiles. Compiles run one after another, in this one process.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _remat(step: dict) -> str:
    """The step's remat policy as a label; "" for none (and for reports from before named policies)."""
    return "" if step.get("remat") in (None, False, "none") else str(step["remat"])


def _path(recipe: str, topology: str, impl: str, per_chip: int, remat: str = "", tag: str = "") -> str:
    suffix = (f"_remat-{remat}" if remat else "") + (f"_{tag}" if tag else "")
    return os.path.join(HERE, f"{recipe}_{topology}_{impl}{suffix}_b{per_chip}.json")


def compile_case(recipe: str, topology: str, impl: str, per_chip: int, extra: list[str], tag: str = "") -> dict:
    from deberta_jax.tpu.report import compile_for_topology, summary_lines
    from deberta_jax.tpu.topologies import get_slice
    from deberta_jax.training.records import write_json

    chips = get_slice(topology).chips
    sets = [f"data.batch_size={per_chip * chips}", f"model.overrides.attention_impl={impl}", *extra]
    report = compile_for_topology(recipe, topology, overrides=sets)
    flags = report["versions"]["libtpu_init_args"]
    report["command"] = ((f"LIBTPU_INIT_ARGS='{flags}' " if flags else "")
                         + f"deberta-jax compile --config {recipe} --topology {topology} "
                         + " ".join(f"--set {s}" for s in sets))
    report["tag"] = tag
    write_json(_path(recipe, topology, impl, per_chip, _remat(report["step"]), tag), report)
    print("\n".join(summary_lines(report)), flush=True)
    return report


def _extrapolated_rows(report: dict, per_chip: int) -> int:
    """The largest power of two of rows per chip that fits if temp memory grows in proportion to the rows."""
    memory = report["memory_per_chip"]
    fixed = memory["total"] - memory["temp"]
    rows = (memory["hbm"] - fixed) / (memory["temp"] / per_chip)
    return 2 ** int(math.floor(math.log2(max(rows, 1))))


def search(recipe: str, topology: str, impl: str, start: int, max_compiles: int, extra: list[str],
           tag: str = "") -> None:
    fits, per_chip = {}, start
    while len(fits) < max_compiles:
        report = compile_case(recipe, topology, impl, per_chip, extra, tag)
        fits[per_chip] = report["memory_per_chip"]["fits"]
        if fits[per_chip]:
            following = max(2 * per_chip, _extrapolated_rows(report, per_chip)) if len(fits) == 1 else 2 * per_chip
        else:
            following = per_chip // 2
        if following < 1 or following in fits:
            break
        per_chip = following
    best = max((b for b, ok in fits.items() if ok), default=None)
    print(f"== {recipe} {topology} {impl}: largest per-chip batch that fits: {best} (compiled: {fits})", flush=True)


def table() -> str:
    """The markdown table of every report in this folder, best (largest fitting) batch per case marked."""
    rows = []
    for path in sorted(glob.glob(os.path.join(HERE, "*.json"))):
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
        step, memory = r["step"], r["memory_per_chip"]
        per_chip = step["batch_size"] // (step["mesh"]["data"] * step["mesh"]["fsdp"])
        key = (step["preset"], r["topology"]["name"],
               step["attention_impl"] + (f", remat {_remat(step)}" if _remat(step) else "")
               + (f", {r['tag']}" if r.get("tag") else ""))
        if "compiler_error" in memory:
            rows.append((key, per_chip, f"| {key[0]} | {key[1]} | {key[2]} | {per_chip} | does not fit (compiler) "
                                        f"| | | | | | {r['compile_seconds']:.0f} |"))
            continue
        bound, kinds = r["roofline"], r["collectives"]["by_kind"]
        traffic = r.get("roofline_hbm_traffic")  # reports from before the HBM-traffic estimate lack it
        ours = f"{100 * traffic['mfu']:.1f}" if traffic else ""
        loops = f" ({r['while_loops']} loops)" if r["while_loops"] else ""
        rows.append((key, per_chip,
                     f"| {key[0]} | {key[1]} | {key[2]} | {per_chip} | {memory['total'] / 2 ** 30:.2f} / "
                     f"{memory['hbm'] / 2 ** 30:.1f} {'fits' if memory['fits'] else 'NO'} "
                     f"| {_extrapolated_rows(r, per_chip) if memory['fits'] else ''} "
                     f"| {bound['step_seconds'] * 1e3:.0f} ({bound['bound']}) | {100 * bound['mfu']:.1f} | {ours} "
                     f"| {r['compiled_over_model_flops']:.2f}{loops} | {r['gathers']} "
                     f"| {kinds['all-reduce']['operand_bytes'] / 2 ** 20:.0f} | {r['compile_seconds']:.0f} |"))
    header = ("| model | slice | attention | batch/chip | memory/chip GiB (of HBM) | fits up to (extrapolated) "
              "| roofline step ms | roofline MFU % | MFU % by our HBM-traffic estimate | compiled/model FLOPs | gathers "
              "| all-reduce MiB/chip | compile s |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    return header + "\n" + "\n".join(row for _, _, row in sorted(rows, key=lambda x: (x[0], x[1])))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", default=[], help="RECIPE:TOPOLOGY:ATTENTION_IMPL")
    parser.add_argument("--start", type=int, default=8, help="rows per chip of the first compile")
    parser.add_argument("--max-compiles", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], help="further recipe overrides for every case")
    parser.add_argument("--tag", default="", help="a name for the compiler flags in LIBTPU_INIT_ARGS or in --set "
                        "compiler.tpu.OPTION=VALUE, put in the JSON's name and the table (required when either is set)")
    parser.add_argument("--table", action="store_true", help="print the markdown table of the JSONs here")
    args = parser.parse_args(argv)
    if os.environ.get("LIBTPU_INIT_ARGS") and not args.tag and not args.table:
        parser.error("LIBTPU_INIT_ARGS is set: name those flags with --tag, so that the JSONs of default flags stay")
    if any(s.startswith("compiler.") for s in args.set) and not args.tag and not args.table:
        parser.error("--set compiler.* sets compiler options: name them with --tag, so that the JSONs of default "
                     "flags stay")
    if args.table:
        print(table())
        return 0
    for case in args.case:
        recipe, topology, impl = case.split(":")
        search(recipe, topology, impl, args.start, args.max_compiles, args.set, args.tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
