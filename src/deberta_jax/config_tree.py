"""Run configs as trees of frozen dataclass sections: one validation idiom, typed values, dotted overrides.

A section is a frozen dataclass deriving from `Section`. Building one checks every field against its type hint
(so `--set batch_size=16.5` fails before any model is built), turns nested dicts into their sections and lists
into tuples, then runs the section's own `checks()`. Every failure is a `ConfigError` whose message starts with
the dotted key:

    PretrainConfig.optimizer.learning_rate=-1.0: must be > 0

Overrides address leaves by dotted keys (`optimizer.learning_rate=3e-4`, `rtd.sharing=es`), the `--set` flags of
the command line; a recipe is a JSON file of the same tree.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
import typing
from typing import Any, Iterable, Sequence

from deberta_jax.data.text_files import not_utf8_error


class ConfigError(ValueError):
    """A config value, key or file is wrong; the message names it."""


Check = tuple[bool, str, str]  # (holds, field name, what the field must be)


class Section:
    """Base of config sections (frozen dataclasses). Subclasses override `checks()`."""

    def checks(self) -> Iterable[Check]:
        return ()

    def __post_init__(self):
        name = type(self).__name__
        defaults = {f.name: f for f in dataclasses.fields(self)}
        for field, hint in _hints(type(self)).items():
            value = getattr(self, field)
            if isinstance(value, dict) and _is_section(hint):  # a partial section: the rest from the default one
                value = _deep_merge(_default(defaults[field]), value)
            object.__setattr__(self, field, _coerce(value, hint, f"{name}.{field}"))
        for holds, field, requirement in self.checks():
            if not holds:
                value = functools.reduce(getattr, field.split("."), self)  # a check may name a nested key
                raise ConfigError(f"{name}.{field}={_show(repr(value))}: {requirement}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@functools.cache
def _hints(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _default(field: dataclasses.Field) -> dict:
    """A section field's default as a dict ({} when it has none)."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        value = None if field.default is dataclasses.MISSING else field.default
    return value.to_dict() if isinstance(value, Section) else {}


def _deep_merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _deep_merge(base[key], value) if isinstance(value, dict) and isinstance(
            base.get(key), dict) else value
    return merged


def _is_section(hint) -> bool:
    return isinstance(hint, type) and issubclass(hint, Section)


def _options(hint) -> tuple:
    """The alternatives of a union hint (`int | None` -> (int, NoneType)); (hint,) otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _coerce(value, hint, key: str):
    """`value` checked against `hint` (int, float, bool, str, tuple or tuple[X, ...], dict, a Section, or a union
    with None)."""
    options = _options(hint)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key}=None: expected {_describe(hint)}")
    for option in options:
        origin = typing.get_origin(option) or option
        if _is_section(option) and isinstance(value, option):
            return value
        if _is_section(option) and isinstance(value, dict):
            return from_dict(option, value, key)
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 2 ** 1024 else math.inf  # a float cannot hold larger ints
            if not math.isfinite(number):
                raise ConfigError(f"{key}={_show(repr(value))}: expected a finite number")
            return number
        if origin is str and isinstance(value, str):
            return value
        if origin is tuple and isinstance(value, (list, tuple)):
            item = typing.get_args(option)[:1]  # tuple[int, ...]: each item checked as an int
            return tuple(_coerce(v, item[0], f"{key}[{i}]") for i, v in enumerate(value)) if item else tuple(value)
        if origin is dict and isinstance(value, dict):
            return dict(value)
    raise ConfigError(f"{key}={_show(repr(value))}: expected {_describe(hint)}, got {type(value).__name__}")


def _show(text: str, limit: int = 80) -> str:
    """`text` as an error message quotes it: escaped (as a repr) if it holds line breaks or other unprintable
    characters, and cut to `limit` characters, so that the message stays one readable line."""
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def _describe(hint) -> str:
    names = []
    for option in _options(hint):
        if option is type(None):
            names.append("null")
        elif _is_section(option):
            names.append(f"a {option.__name__} section")
        else:
            names.append(getattr(typing.get_origin(option) or option, "__name__", str(option)))
    return " or ".join(names)


def from_dict(cls, values: dict, where: str | None = None):
    """Builds section `cls` from a (nested) dict, naming unknown keys by their dotted path."""
    where = where or cls.__name__
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected an object of {cls.__name__} keys, got {type(values).__name__}")
    hints = _hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(hints)}")
    try:
        return cls(**values)
    except ConfigError as e:  # a nested section's own check names it by class: name it by its dotted key instead
        message, name = str(e), cls.__name__
        if where == name or not message.startswith(name + "."):
            raise
        raise ConfigError(where + message[len(name):]) from None


def _parse_leaf(text: str, hint, key: str):
    """A `--set` value as the leaf's type: plain text for strings, JSON for the rest."""
    options = _options(hint)
    if hint is typing.Any:  # a value inside a free-form dict: JSON where it parses, else the text itself
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text
    if text == "null" and type(None) in options:
        return None
    if str in options and not text.startswith(("[", "{", '"')):
        return text
    if bool in options:
        lowered = text.lower()
        if lowered in ("true", "yes", "1", "false", "no", "0"):
            return lowered in ("true", "yes", "1")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, an int of over 4300 digits, nesting too deep
        raise ConfigError(f"--set {_show(key)}={_show(text)}: expected {_describe(hint)}") from None


def apply_overrides(cls, values: dict, overrides: Sequence[str]) -> dict:
    """`values` (a nested dict of section `cls`) with each dotted `key=value` of `overrides` applied."""
    values = json.loads(json.dumps(values))  # a deep copy that the overrides may change
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {_show(repr(item))}: expected key=value, e.g. optimizer.learning_rate=3e-4")
        name = _show(key)
        section, node = cls, values
        parts = key.split(".")
        for depth, part in enumerate(parts):
            hints = _hints(section)
            if part not in hints:
                prefix = ".".join(parts[:depth])
                raise ConfigError(f"--set {name}: {cls.__name__}{'.' + prefix if prefix else ''} has no key "
                                  f"{_show(repr(part))}; known: {sorted(hints)}")
            hint = hints[part]
            last = depth == len(parts) - 1
            if last and _is_section(hint):
                fields = sorted(_hints(hint))
                raise ConfigError(f"--set {name}: {name} is a section; set one of its keys, e.g. {name}.{fields[0]}")
            if last:
                node[part] = _parse_leaf(text, hint, key)
                break
            if not ((typing.get_origin(hint) or hint) is dict or _is_section(hint)):
                raise ConfigError(f"--set {name}: {'.'.join(parts[:depth + 1])} is not a section")
            current = node.get(part)
            current = current.to_dict() if isinstance(current, Section) else {} if current is None else current
            if not isinstance(current, dict):
                raise ConfigError(f"--set {name}: {cls.__name__}.{'.'.join(parts[:depth + 1])} is "
                                  f"{_show(repr(current))}, not an object to set {parts[depth + 1]!r} in")
            if _is_section(hint):
                node[part] = current
                section, node = hint, current
            else:  # model.overrides.hidden_size=64: one key of a free-form dict
                node[part] = {**current, ".".join(parts[depth + 1:]): _parse_leaf(text, typing.Any, key)}
                break
    return values


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a syntax error names the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(not_utf8_error(path))) from None
    except (ValueError, RecursionError) as e:  # an int of over 4300 digits, nesting too deep
        raise ConfigError(f"{path}: invalid JSON ({e})") from None


def strip_comments(values: dict) -> dict:
    """A recipe without its "_comment"-style keys (any key starting with "_"), at every level."""
    return {k: strip_comments(v) if isinstance(v, dict) else v for k, v in values.items() if not k.startswith("_")}
