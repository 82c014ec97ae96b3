"""Run records (config.json, summary.json, metrics.json) written as strict JSON, atomically."""

from __future__ import annotations

import json
import os
from typing import Any


def write_json(path: str, value: Any) -> None:
    """Writes `value` to `path` through a temporary file and a rename, so a crash never leaves half a file; NaN
    and infinities are refused (they are not JSON)."""
    text = json.dumps(value, indent=2, allow_nan=False)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text + "\n")
    os.replace(path + ".tmp", path)
