"""Reading and writing `.safetensors` files with NumPy alone (no torch), bfloat16 included.

The format is an 8-byte little-endian header length, a JSON header mapping names to dtype, shape and byte
offsets, then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}


def load_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file, as NumPy arrays (memory-mapped, read-only).

    A file shorter than its header promises (a copy or download cut short) raises ValueError naming both sizes.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ValueError(f"{path} is truncated: {size} bytes, too short for the 8-byte header length of a "
                             "safetensors file")
        (header_len,) = struct.unpack("<Q", prefix)
        if 8 + header_len > size:
            raise ValueError(f"{path} is truncated or not a safetensors file: {size} bytes, but its header "
                             f"alone takes {8 + header_len}")
        header = _parse_header(f.read(header_len), path)
    tensors = {name: info for name, info in header.items() if name != "__metadata__"}
    promised = 8 + header_len + max((_data_end(name, info, path) for name, info in tensors.items()), default=0)
    if size < promised:
        raise ValueError(f"{path} is truncated: {size} bytes, but its header promises {promised}")
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    arrays = {}
    for name, info in tensors.items():
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which deberta-jax cannot read")
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - start != count * dtype.itemsize:
            raise ValueError(f"{path}: tensor {name!r} spans {end - start} bytes, expected {count * dtype.itemsize}")
        arrays[name] = np.frombuffer(data, dtype=dtype, count=count, offset=start).reshape(info["shape"])
    return arrays


def _parse_header(blob: bytes, path: str) -> dict:
    try:
        header = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: the safetensors header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: the safetensors header is not a JSON object")
    return header


def _data_end(name: str, info, path: str) -> int:
    """Where tensor `name`'s bytes end in the data section, from its header entry `info` (checked to be whole)."""
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(x) is int for x in offsets)
            and 0 <= offsets[0] <= offsets[1] and {"dtype", "shape"} <= info.keys()):
        raise ValueError(f"{path}: tensor {name!r} has a malformed header entry {info!r}")
    return offsets[1]


def save_file(tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str] | None = None):
    """Writes tensors (C-contiguous, little-endian) to `path` through a temporary file, so a crash never leaves a
    truncated checkpoint behind."""
    header: dict[str, dict] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    arrays = []
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        if arr.dtype not in _NAMES:
            raise ValueError(f"tensor {name!r} has dtype {arr.dtype}, which safetensors cannot store")
        header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        arrays.append(arr)
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for arr in arrays:
            f.write(arr.tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
