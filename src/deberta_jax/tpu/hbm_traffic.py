"""Our own estimate of a compiled TPU program's HBM traffic per step, read from its optimized HLO text, and where
it goes by source (the JAX op and module scope that XLA keeps in each instruction's metadata).

XLA's `cost_analysis()["bytes accessed"]` has two biases for TPU programs, in opposite directions:
  - it counts a while loop's body once, however many times the loop runs (the FSDP collective-matmul loops, a
    scan over layers, gradient accumulation), so loops are undercounted;
  - it counts every operand and result, also those that memory-space assignment placed in the chip's on-core
    memory (layouts tagged `S(1)`, VMEM on v5e), and both halves of the asynchronous copies that move them there.
This estimate multiplies each loop body by its trip count (from the loop condition's `compare(i, N)` and the step
the body adds to i, or from `known_trip_count`) and counts HBM-resident bytes only: each top-level instruction's HBM operands plus its HBM
results; slices, gathers and fusions only what they read of an operand; an in-place dynamic-update-slice only its
update; each asynchronous copy or slice once.
It is an estimate from the program text, like XLA's, not a measurement.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

from deberta_jax.tpu import hlo

_HEADER = re.compile(r"^(?P<entry>ENTRY\s+)?%?(?P<name>[^\s(]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_CALLED = re.compile(r"\b(calls|body|condition|to_apply)=%?([^\s,}]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONSTANT = re.compile(r"constant\((-?\d+)\)")
_PARAMETER = re.compile(r"parameter\((\d+)\)")
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9][a-z]*)?)\[([0-9,]*)\](\{(?:[^{}()]|\([^()]*\))*\})?")
_CONTRACTING = re.compile(r"\blhs_contracting_dims=\{([0-9,]*)\}")
_CONV_LABELS = re.compile(r"\bdim_labels=([0-9a-z]+)_[0-9a-z]+->([0-9a-z]+)")
_WINDOW = re.compile(r"\bwindow=\{([^}]*)\}")
_GROUPS = re.compile(r"\bfeature_group_count=(\d+)")
_KERNEL_FLOPS = re.compile(r'"cost_estimate":\{"flops":"(\d+)"')  # a Pallas (Mosaic) kernel's own estimate
_ON_CORE = re.compile(r"S\([1-9]")  # a memory-space tag other than 0 (HBM): on-core memory or semaphores
# Ops that move no data of their own: tuples, views, control flow (its bodies are walked), the "-done" halves.
_NO_TRAFFIC = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "while", "call", "conditional",
               "after-all", "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain"}
_READS_RESULT = ("slice", "dynamic-slice", "gather")
_MOVES = ("copy-start", "slice-start")  # asynchronous HBM <-> on-core moves: the data moved counts once
# scopes JAX itself adds around a loop's body (jax 0.12 adds eval_jaxpr); they say nothing about the model
_JAX_SCOPES = ("while", "body", "cond", "closed_call", "eval_jaxpr")
_WRAPPERS = re.compile(r"^(?:jit|jvp|transpose|checkpoint|remat|vmap|pjit|shard_map|closed_call)\(|\)$")


def hbm_bytes(shape: str) -> int:
    """Bytes of the arrays in an HLO shape that live in HBM: every array but those whose layout carries a
    memory-space tag S(n), n > 0."""
    return sum(hlo.shape_bytes(f"{dtype}[{dims}]") for dtype, dims, layout in _ARRAY.findall(shape)
               if not _ON_CORE.search(layout or ""))


@dataclasses.dataclass(frozen=True)
class _Line:
    text: str
    ins: hlo.Instruction


def _computations(hlo_text: str) -> tuple[dict[str, list[_Line]], str]:
    """{computation name: its instruction lines}, and the entry computation's name."""
    found, current, entry = {}, None, None
    for text in hlo_text.splitlines():
        header = _HEADER.match(text)
        if header:
            current = header["name"]
            found[current] = []
            entry = current if header["entry"] else entry
        elif text.startswith("}"):
            current = None
        elif current is not None:
            parsed = hlo.instructions(text)
            if parsed:
                found[current].append(_Line(text, parsed[0]))
    if entry is None:
        raise ValueError("HLO text has no ENTRY computation")
    return found, entry


def _name(operand: str) -> str:
    return operand.split()[-1].lstrip("%")


def _trip_count(loop: _Line, condition: list[_Line], body: list[_Line], defined: dict[str, _Line]) -> int | None:
    """The loop's trip count: XLA's known_trip_count; else, for a condition `compare(i, N), direction=LT` on tuple
    element k, ceil((N - start) / step) with step the constant the body adds to element k (XLA's unrolled
    windowed-einsum loops add 2) and start the constant the loop starts it at (0 when not a constant). None when
    the bound or the step cannot be read."""
    known = _TRIP_COUNT.search(loop.text)
    if known:
        return int(known.group(1))
    for line in condition:
        if line.ins.op != "compare" or "direction=LT" not in line.text or len(line.ins.operands) != 2:
            continue
        counter, bound = (_through_copies(defined.get(_name(o)), defined) for o in line.ins.operands)
        index = _tuple_index(counter)
        if bound is None or bound.ins.op != "constant" or index is None:
            continue
        step = _step(body, index, defined)
        if not step:
            return None
        start = _constant(_tuple_operand(defined.get(_name(loop.ins.operands[0])), index), defined)
        return max(0, -(-(_constant(bound, defined) - (start or 0)) // step))
    return None


def _through_copies(line: _Line | None, defined: dict[str, _Line]) -> _Line | None:
    """The instruction a chain of copies and bitcasts starts from (TPU programs copy a loop's counter to another
    memory space before adding to it)."""
    while line is not None and line.ins.op in ("copy", "bitcast") and len(line.ins.operands) == 1:
        line = defined.get(_name(line.ins.operands[0]))
    return line


def _tuple_index(line: _Line | None) -> int | None:
    """k for `get-tuple-element(param), index=k`; None otherwise."""
    if line is None or line.ins.op != "get-tuple-element":
        return None
    return int(re.search(r"\bindex=(\d+)", line.text).group(1))


def _tuple_operand(line: _Line | None, index: int) -> str | None:
    if line is None or line.ins.op != "tuple" or index >= len(line.ins.operands):
        return None
    return line.ins.operands[index]


def _constant(item, defined: dict[str, _Line]) -> int | None:
    """The integer value of a constant instruction (or of the operand naming one); None for anything else."""
    line = defined.get(_name(item)) if isinstance(item, str) else item
    if line is None or line.ins.op != "constant":
        return None
    value = _CONSTANT.search(line.text)
    return int(value.group(1)) if value else None


def _step(body: list[_Line], index: int, defined: dict[str, _Line]) -> int | None:
    """The constant that `body` adds to element `index` of the loop state; None when it does something else."""
    root = next((line for line in body if line.text.lstrip().startswith("ROOT")), None)
    update = defined.get(_name(_tuple_operand(root, index) or ""))
    if update is None or update.ins.op != "add" or len(update.ins.operands) != 2:
        return None
    first, second = (_through_copies(defined.get(_name(o)), defined) for o in update.ins.operands)
    for counter, increment in ((first, second), (second, first)):
        if _tuple_index(counter) == index and _constant(increment, defined) is not None:
            return _constant(increment, defined)
    return None


def _fusion_bytes(line: _Line, computations: dict[str, list[_Line]], shapes: dict[str, str]) -> int:
    """HBM bytes of a fusion: its HBM operands, each only as much as the fused code reads of it when every use is a
    slice (also inside a nested fusion, as a scanned layer's slice of a stacked array is), plus its HBM results
    (only the update when the result is an in-place dynamic-update-slice)."""
    operands = [_operand_hbm(operand, shapes) for operand in line.ins.operands]
    result = hbm_bytes(line.ins.shape)
    fused = computations.get(dict(_CALLED.findall(line.text)).get("calls"))
    if fused is None:
        return sum(operands) + result
    local = {item.ins.name: item.ins.shape for item in fused}
    for index, item in _parameters(fused):
        if operands[index] == 0:
            continue
        sliced = _sliced_bytes(item.ins.name, fused, computations)
        if sliced is not None:
            operands[index] = sliced
            continue
        uses = [use.ins for use in _uses(item.ins.name, fused)]
        if uses and all(u.op == "dynamic-update-slice" and _name(u.operands[0]) == item.ins.name for u in uses):
            update = sum(hlo.shape_bytes(hlo._LAYOUT.sub("", local[_name(u.operands[1])])) for u in uses)
            operands[index], result = update, min(result, update)
    return sum(operands) + result


def _parameters(fused: list[_Line]):
    """(index, instruction) of each parameter of a fused computation."""
    return [(int(_PARAMETER.search(item.text).group(1)), item) for item in fused if item.ins.op == "parameter"]


def _uses(name: str, fused: list[_Line]) -> list[_Line]:
    return [item for item in fused if any(_name(operand) == name for operand in item.ins.operands)]


def _sliced_bytes(name: str, fused: list[_Line], computations: dict[str, list[_Line]]) -> int | None:
    """Bytes the fused code reads of the array `name` when it only slices it, directly or through nested fusions;
    None when some use reads it whole (or there is no use)."""
    uses, total = _uses(name, fused), 0
    if not uses:
        return None
    for line in uses:
        use = line.ins
        if use.op in ("slice", "dynamic-slice") and _name(use.operands[0]) == name:
            total += hlo.shape_bytes(hlo._LAYOUT.sub("", use.shape))
            continue
        nested = computations.get(dict(_CALLED.findall(line.text)).get("calls")) if use.op == "fusion" else None
        if nested is None:
            return None
        for index, parameter in _parameters(nested):
            if _name(use.operands[index]) != name:
                continue
            read = _sliced_bytes(parameter.ins.name, nested, computations)
            if read is None:
                return None
            total += read
    return total


def _operand_hbm(operand: str, shapes: dict[str, str]) -> int:
    typed = operand.rsplit("%", 1)[0]
    if hlo._ARRAY.search(typed):
        return hbm_bytes(typed)
    name = _name(operand)
    if name not in shapes:
        raise ValueError(f"HLO operand {operand!r} has no type and no defining instruction")
    return hbm_bytes(shapes[name])


def _dims(shape: str) -> list[int]:
    return [int(d) for d in hlo._ARRAY.search(shape).group(2).split(",") if d]


def _window(text: str) -> dict:
    """A convolution's window attributes, one entry per spatial dimension: size, stride, pad (low), lhs_dilate,
    rhs_dilate (1, 1, 0, 1, 1 where absent)."""
    found = _WINDOW.search(text)
    fields = dict(item.split("=", 1) for item in found.group(1).split()) if found else {}
    sizes = [int(v) for v in fields["size"].split("x")] if "size" in fields else []

    def each(key, default):
        return [int(v) for v in fields[key].split("x")] if key in fields else [default] * len(sizes)

    pads = [int(p.split("_")[0]) for p in fields["pad"].split("x")] if "pad" in fields else [0] * len(sizes)
    return {"size": sizes, "stride": each("stride", 1), "pad": pads, "lhs_dilate": each("lhs_dilate", 1),
            "rhs_dilate": each("rhs_dilate", 1)}


def _valid_taps(outputs: int, size: int, extent: int, stride: int, low: int, lhs_dilate: int,
                rhs_dilate: int) -> int:
    """Over all `outputs` positions of one spatial dimension, the window taps that land on an input element: not
    on padding, nor on a hole of the dilated input (XLA writes batched attention products as convolutions whose
    lhs_dilate and stride leave one real tap per output)."""
    last = (extent - 1) * lhs_dilate  # the dilated input spans positions 0 .. last; inputs sit on multiples of it
    return sum(1 for o in range(outputs) for k in range(size)
               if 0 <= (p := o * stride + k * rhs_dilate - low) <= last and p % lhs_dilate == 0)


def _matmul_flops(line: _Line, computations: dict[str, list[_Line]], shapes: dict[str, str]) -> int:
    """FLOPs of the matrix products in one instruction: a dot's 2 x result elements x contracted size; a
    convolution's (how TPU programs express most dots) 2 x result elements x input features per group x the
    window's taps that fall on input (not padding); a fusion's through its fused computation; a Pallas kernel's
    from its cost estimate; 0 otherwise."""
    op = line.ins.op
    if op in ("dot", "convolution"):
        lhs = line.ins.operands[0]
        typed = lhs.rsplit("%", 1)[0]
        lhs_dims = _dims(typed if hlo._ARRAY.search(typed) else shapes[_name(lhs)])
        out_dims = _dims(line.ins.shape)
        results = 2 * math.prod(out_dims)
        if op == "dot":
            contracting = _CONTRACTING.search(line.text)
            indices = [int(i) for i in (contracting.group(1) if contracting else "").split(",") if i]
            return results * math.prod(lhs_dims[i] for i in indices)
        labels, groups = _CONV_LABELS.search(line.text), _GROUPS.search(line.text)
        lhs_labels, out_labels = labels.group(1), labels.group(2)
        per_output = lhs_dims[lhs_labels.index("f")] / (int(groups.group(1)) if groups else 1)
        window = _window(line.text)
        for d, size in enumerate(window["size"]):
            extent, outputs = lhs_dims[lhs_labels.index(str(d))], out_dims[out_labels.index(str(d))]
            per_output *= _valid_taps(outputs, size, extent, window["stride"][d], window["pad"][d],
                                      window["lhs_dilate"][d], window["rhs_dilate"][d]) / outputs
        return int(results * per_output)
    if op == "custom-call":
        kernel = _KERNEL_FLOPS.search(line.text)
        return int(kernel.group(1)) if kernel else 0
    if op == "fusion":
        fused = computations.get(dict(_CALLED.findall(line.text)).get("calls"), [])
        return sum(_matmul_flops(item, computations, shapes) for item in fused)
    return 0


def source(text: str, depth: int = 6) -> str:
    """Where an instruction comes from: "forward" or "backward", then its op_name's scopes with the JAX
    transformation wrappers dropped and layer numbers folded ("layer_*"), cut to `depth` scopes."""
    found = _OP_NAME.search(text)
    if not found:
        return "(no source)"
    direction = "backward" if "transpose(" in found.group(1) else "forward"
    parts = found.group(1).split("/")
    parts = parts[1:] if parts[0].startswith("jit(") else parts  # the jitted step's own name says nothing
    scopes = [_WRAPPERS.sub("", _WRAPPERS.sub("", part)) for part in parts]
    scopes = [re.sub(r"layer_\d+", "layer_*", s) for s in scopes if s and s not in _JAX_SCOPES]
    return " ".join([direction, "/".join(scopes[:depth])])


def hbm_traffic(hlo_text: str, depth: int = 6, largest: int = 12) -> dict:
    """Our estimate for one device's program `hlo_text`, a dict:
      bytes: HBM bytes per step (loops x trip counts);
      matmul_flops: the FLOPs of its matrix products and Pallas kernels, loops x trip counts as well (XLA's FLOP
        count has the same loop undercount);
      by_source: the `largest` sources, [{"source", "bytes"}]; by_op: {opcode or "fusion:kind": bytes};
      loops: {"count", "unknown_trip_counts"};
      results: {"on_core", "hbm"}, the bytes its instructions write (asynchronous moves aside), x trip counts, by
        where memory-space assignment put them; loop_results: the same for the loop bodies' instructions alone.
    A loop whose trip count cannot be read counts once (as XLA's analysis does)."""
    computations, entry = _computations(hlo_text)
    defined = {line.ins.name: line for lines in computations.values() for line in lines}
    shapes = {name: line.ins.shape for name, line in defined.items()}
    by_source, by_op = collections.Counter(), collections.Counter()
    loops = {"count": 0, "unknown_trip_counts": 0}
    results, loop_results = {"on_core": 0, "hbm": 0}, {"on_core": 0, "hbm": 0}
    flops = 0
    pending = [(entry, 1, False)]
    while pending:
        name, times, in_loop = pending.pop()
        for line in computations[name]:
            op, called = line.ins.op, dict(_CALLED.findall(line.text))
            if op == "while":
                trips = _trip_count(line, computations[called["condition"]], computations[called["body"]], defined)
                loops["count"] += 1
                loops["unknown_trip_counts"] += trips is None
                pending.append((called["body"], times * (trips or 1), True))
                continue
            if op in ("call", "conditional") or (op.startswith("async") and op.endswith("-start")):
                branches = _BRANCHES.search(line.text)
                targets = ([_name(b) for b in branches.group(1).split(",")] if branches else [])
                # a call names its callee with to_apply= (XLA:CPU wraps loops in one since jax 0.12)
                callees = targets + [called.get("calls"), called.get("to_apply") if op == "call" else None]
                pending.extend((target, times, in_loop) for target in callees if target)
                continue
            flops += _matmul_flops(line, computations, shapes) * times
            if op in _NO_TRAFFIC or op.endswith("-done"):
                continue
            if op not in _MOVES:
                # an in-place dynamic-update-slice writes its update, not the whole buffer it returns
                written = (shapes.get(_name(line.ins.operands[1]), "") if op == "dynamic-update-slice"
                           else line.ins.shape)
                for dtype, dims, layout in _ARRAY.findall(written):
                    space = "on_core" if _ON_CORE.search(layout or "") else "hbm"
                    results[space] += hlo.shape_bytes(f"{dtype}[{dims}]") * times
                    loop_results[space] += hlo.shape_bytes(f"{dtype}[{dims}]") * times * in_loop
            if op in _MOVES:  # slice-start: ((source), slice, context); copy-start: (destination, source, context)
                arrays = _ARRAY.findall(line.ins.shape)
                dtype, dims, _ = arrays[-2] if op == "slice-start" else arrays[0]
                moved = hlo.shape_bytes(f"{dtype}[{dims}]")
            elif op == "fusion":
                moved = _fusion_bytes(line, computations, shapes)
                kind = re.search(r"\bkind=(\w+)", line.text)
                op = f"fusion:{kind.group(1) if kind else '?'}"
            elif op in _READS_RESULT:  # reads what it returns (plus indices), not its whole first operand
                moved = 2 * hbm_bytes(line.ins.shape) + sum(_operand_hbm(o, shapes) for o in line.ins.operands[1:])
            elif op == "dynamic-update-slice":  # in place: reads and writes the update only
                moved = 2 * _operand_hbm(line.ins.operands[1], shapes)
            else:
                moved = sum(_operand_hbm(operand, shapes) for operand in line.ins.operands) + hbm_bytes(line.ins.shape)
            label = f"{line.ins.op} (memory-space assignment)" if line.ins.op in _MOVES else source(line.text, depth)
            by_source[label] += moved * times
            by_op[op] += moved * times
    return {"bytes": int(sum(by_op.values())), "matmul_flops": int(flops),
            "by_source": [{"source": s, "bytes": int(b)} for s, b in by_source.most_common(largest)],
            "by_op": {op: int(b) for op, b in by_op.most_common()}, "loops": loops,
            "results": {space: int(b) for space, b in results.items()},
            "loop_results": {space: int(b) for space, b in loop_results.items()}}
