"""Run records (config.json, summary.json, metrics.json) written as strict JSON, atomically."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def write_json(path: str, value: Any) -> None:
    """Writes `value` to `path` through a temporary file and a rename, so a crash never leaves half a file; NaN
    and infinities are refused (they are not JSON)."""
    text = json.dumps(value, indent=2, allow_nan=False)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)


def _leaves(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_leaves(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def write_config(path: str, config: dict) -> None:
    """Writes a run's config; when it replaces another (a resumed run with overrides), logs the keys that
    changed, dotted, with both values."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            before = _leaves(json.load(f))
        after = _leaves(json.loads(json.dumps(config)))
        changed = {k: (before.get(k), after.get(k)) for k in sorted(set(before) | set(after))
                   if before.get(k) != after.get(k)}
        if changed:
            log.warning("%s: this run changes %s", path,
                        ", ".join(f"{k} from {a!r} to {b!r}" for k, (a, b) in changed.items()))
    write_json(path, config)
