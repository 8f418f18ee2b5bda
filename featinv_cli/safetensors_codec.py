"""The safetensors format, read and written by featinv's own checked code: headers without torch
(for `featinv info` and header-only reads), tensors as views of the bytes, writes from tensor memory."""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import FeatinvError

if TYPE_CHECKING:
    import torch


def safetensors_header(data: bytes, name: str, total: int | None = None) -> tuple[dict, dict[str, str], int]:
    """(tensor entries, metadata, header length) of safetensors bytes, every length checked. ``data``
    may hold only the first 8 + header-length bytes when ``total`` gives the file's length."""
    bad = f"{name}: not a valid safetensors file"
    total = len(data) if total is None else total
    if total < 8 or len(data) < 8:
        raise FeatinvError(f"{bad} (only {total} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > total - 8 or header_len > len(data) - 8:
        raise FeatinvError(f"{bad} (truncated: header says {header_len} bytes, file has {total - 8})")
    try:
        header = json.loads(bytes(data[8:8 + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FeatinvError(f"{bad} (header is not JSON)") from None
    if not isinstance(header, dict):
        raise FeatinvError(f"{bad} (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise FeatinvError(f"{bad} (metadata must map strings to strings)")
    body = total - 8 - header_len
    for key, info in header.items():
        try:
            start, end = info["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise FeatinvError(f"{bad} (entry {key!r} has no data offsets)") from None
        if not (_whole(start) and _whole(end)):
            raise FeatinvError(f"{bad} (entry {key!r}: data offsets must be whole numbers)")
        if not (0 <= start <= end <= body):
            raise FeatinvError(f"{bad} (truncated: tensor {key!r} ends past the end of the file)")
        _check_shape(info, key, end - start, bad)
    return header, metadata, header_len


def _check_shape(info: dict, key: str, nbytes: int, bad: str) -> None:
    """An entry's shape fills its bytes exactly, so a header read alone (`info`) believes no more rows
    than a whole read finds. A dtype featinv does not know is left to the reader that needs it."""
    shape = info.get("shape")
    if not isinstance(shape, list) or not all(_whole(v) and v >= 0 for v in shape):
        raise FeatinvError(f"{bad} (entry {key!r}: bad shape)")
    dtype = info.get("dtype")
    size = ITEMSIZE.get(dtype) if isinstance(dtype, str) else None
    if size is not None and math.prod(shape) * size != nbytes:
        start, end = info["data_offsets"]
        raise FeatinvError(f"{bad} (entry {key!r}: shape {shape} does not fill bytes {start}..{end})")


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a safetensors file, reading only its header (checked like a whole read)."""
    return read_header(path)[1]


def read_header(path: str | Path) -> tuple[dict, dict[str, str], int]:
    """(tensor entries, metadata, header length) of a safetensors file, reading only its header."""
    try:
        with open(path, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            head += f.read(min(n, max(total - 8, 0)))
    except OSError as e:
        raise FeatinvError(f"{path}: cannot read ({e.strerror})") from None
    return safetensors_header(head, str(path), total)


def parse_safetensors(data: bytes, name: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of safetensors bytes, with every length checked first.

    A truncated or tampered file becomes a FeatinvError, not a crash deep inside the library.
    """
    import torch

    bad = f"{name}: not a valid safetensors file"
    header, metadata, header_len = safetensors_header(data, name)
    if isinstance(data, bytes):
        data = bytearray(data)  # torch.frombuffer wants a writable buffer (a bytearray or map_file's map)
    tensors = {}
    for key, info in header.items():  # shapes and lengths checked by safetensors_header
        if not isinstance(info.get("dtype"), str) or info["dtype"] not in DTYPES:
            raise FeatinvError(f"{bad} (entry {key!r}: unknown dtype {info.get('dtype')!r})")
        dtype, shape = getattr(torch, DTYPES[info["dtype"]]), info["shape"]
        start, _ = info["data_offsets"]
        count = math.prod(shape)
        # A view of the file's bytes, not a copy: a 1.2 GB SIFT file stays 1.2 GB in memory.
        flat = torch.frombuffer(data, dtype=dtype, count=count, offset=8 + header_len + start) if count \
            else torch.empty(0, dtype=dtype)
        tensors[key] = flat.view(shape)
    return tensors, metadata


# safetensors' dtype names -> torch's (by name: reading a header needs no torch)
DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64",
          "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def safetensors_chunks(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> list:
    """The safetensors file of ``tensors`` as buffers to write in order: the header (JSON, padded with
    spaces to 8 bytes), then each tensor's own memory, in name order (no copy of the data)."""
    import torch

    names = {v: k for k, v in DTYPES.items()}
    arrays = {k: tensors[k].detach().cpu().contiguous() for k in sorted(tensors)}
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for k, t in arrays.items():
        size = t.numel() * t.element_size()
        header[k] = {"dtype": names[str(t.dtype).removeprefix("torch.")], "shape": list(t.shape),
                     "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    # uint8 views: numpy has no bfloat16, and a byte view is all a file write needs
    return [struct.pack("<Q", len(text)) + text] + [memoryview(t.view(-1).view(torch.uint8).numpy())
                                                    for t in arrays.values() if t.numel()]


def encode_safetensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    return b"".join(safetensors_chunks(tensors, metadata))


def json_field(metadata: dict[str, str], key: str, name: str, default=None):
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise FeatinvError(f"{name}: metadata field {key!r} is not valid JSON") from None
