"""`key=value` overrides of frozen-dataclass configs (the `--set` flags of the command line)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence


def _coerce(field: dataclasses.Field, text: str) -> Any:
    """Parses a value by the field's type: JSON for numbers, booleans and containers, plain text for strings."""
    hint = str(field.type)
    if hint.startswith("str") and not text.startswith(("[", "{", '"')) and text != "null":
        return text
    if hint == "bool":
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {field.name}={text}: expected true or false")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--set {field.name}={text}: not a valid {hint} value") from e


def apply_overrides(cls, values: dict, overrides: Sequence[str]) -> dict:
    """`values` updated with each `key=value` of `overrides`, keys checked against the fields of dataclass `cls`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = dict(values)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected key=value with key among {sorted(fields)}")
        values[key] = _coerce(fields[key], text)
    return values
