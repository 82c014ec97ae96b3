"""What a compiled program communicates, read from its HLO text: collectives with their operand sizes, and gathers.

Counts are static: an instruction inside a while loop's body (a scan over layers or accumulation steps) is counted
once however many times the loop runs. Async collectives count once, by their `-start` half.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import re

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BITS = {"pred": 8, "s4": 4, "u4": 4, "s8": 8, "u8": 8, "s16": 16, "u16": 16, "s32": 32, "u32": 32, "s64": 64,
               "u64": 64, "f16": 16, "bf16": 16, "f32": 32, "f64": 64, "c64": 64, "c128": 128,
               "token": 0}  # token[]: orders side effects, holds no data (a v3-xsmall reference step on v5p-8 has one)
_ARRAY = re.compile(r"\b([a-z]+[0-9]*(?:e[0-9]m[0-9][a-z]*)?)\[([0-9,]*)\]")
# "%name = SHAPE opcode(" with SHAPE a type or a tuple of types; an instruction's opcode is the first lower-case word
# after the shape that an opening parenthesis follows (layouts like {1,0:T(8,128)} hold only upper-case tags).
_LAYOUT = re.compile(r"\{[^{}]*\}")
_COMMENT = re.compile(r"/\*.*?\*/")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?(?P<name>[^\s=]+)\s*=\s*(?P<shape>.*?)\s(?P<op>[a-z][a-z0-9\-]*)\(")


def shape_bytes(shape: str) -> int:
    """Bytes of an HLO shape string: one array ("bf16[8,128]{1,0}") or a tuple of them; fp8 types count 1 byte."""
    total = 0.0
    for dtype, dims in _ARRAY.findall(shape):
        bits = _DTYPE_BITS.get(dtype, 8 if dtype.startswith("f8") else None)
        if bits is None:
            raise ValueError(f"unknown HLO element type {dtype!r} in shape {shape!r}")
        total += math.prod(int(d) for d in dims.split(",") if d) * bits / 8
    return int(total)


def _operands(text: str) -> list[str]:
    """The top-level operands inside the parentheses that open `text`, up to the matching close."""
    depth, start, parts = 0, 1, []
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                parts.append(text[start:i])
                break
        elif ch == "," and depth == 1:
            parts.append(text[start:i])
            start = i + 1
    parts = (_COMMENT.sub("", p).strip() for p in parts)  # long operand lists carry /*index=5*/ markers
    return [p for p in parts if p]


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    op: str
    shape: str
    operands: tuple[str, ...]   # "%name" or, in CPU dumps, "TYPE %name"


def instructions(hlo_text: str) -> list[Instruction]:
    """Every instruction of every computation in `hlo_text` (fused computations included)."""
    found = []
    for line in hlo_text.splitlines():
        match = _INSTRUCTION.match(line)
        if match:
            found.append(Instruction(match["name"].lstrip("%"), match["op"], match["shape"],
                                     tuple(_operands(line[match.end() - 1:]))))
    return found


def _operand_bytes(operand: str, shapes: dict[str, str]) -> int:
    """Bytes of one operand: its own type when printed with one, else the defining instruction's shape."""
    if _ARRAY.search(operand.rsplit("%", 1)[0]):
        return shape_bytes(operand.rsplit("%", 1)[0])
    name = operand.split()[-1].lstrip("%")
    if name not in shapes:
        raise ValueError(f"HLO operand {operand!r} has no type and no defining instruction")
    return shape_bytes(shapes[name])


def _collective_kind(op: str) -> str | None:
    """The collective an opcode performs, or None ("-done" halves and everything else)."""
    base = op.removesuffix("-start")
    return base if base in COLLECTIVES else None


def collective_summary(hlo_text: str, largest: int = 8) -> dict:
    """{"by_kind": {kind: {"count", "operand_bytes"}}, "total_operand_bytes", "largest": the `largest` biggest
    collectives (kind, name, operand_bytes, result shape)} of `hlo_text`; operand bytes are per device."""
    program = instructions(hlo_text)
    shapes = {ins.name: ins.shape for ins in program}
    by_kind = collections.OrderedDict((kind, {"count": 0, "operand_bytes": 0}) for kind in COLLECTIVES)
    ops = []
    for ins in program:
        kind = _collective_kind(ins.op)
        if kind is None:
            continue
        size = sum(_operand_bytes(operand, shapes) for operand in ins.operands)
        by_kind[kind]["count"] += 1
        by_kind[kind]["operand_bytes"] += size
        ops.append({"kind": kind, "name": ins.name, "operand_bytes": size, "shape": _LAYOUT.sub("", ins.shape)[:160]})
    ops.sort(key=lambda op: -op["operand_bytes"])
    return {"by_kind": dict(by_kind), "total_operand_bytes": sum(k["operand_bytes"] for k in by_kind.values()),
            "largest": ops[:largest]}


def count_op(hlo_text: str, op: str) -> int:
    """Instructions of opcode `op` in the program, fused computations included: "gather" (the reference
    attention's take_along_axis, slow on TPU), "while" (loops, whose bodies XLA's cost analysis counts once)."""
    return sum(ins.op == op for ins in instructions(hlo_text))
