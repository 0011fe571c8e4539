"""A GGUF file's key/values and tensor list, read in milliseconds.

gguf-py's ``GGUFReader`` makes a numpy view of every element of every array: a 49k-token
vocabulary with its merges takes two seconds to open (six on a busy machine; Qwen's 151k tokens
three times that), and a job opens its base and its models several times. This reads the same
header with one ``struct`` call per string and one numpy call per numeric array; values come out
as ``GGUFReader``'s ``contents()`` gives them (a nested array stays nested, where gguf-py flattens
it), types as gguf-py's enums (what ``GGUFWriter`` takes). Tensor data is not read, but a file too
short to hold it is refused, as gguf-py refuses it.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from agents.llm.tokenizer_gguf import MetadataValue

__all__ = ["GgufContents", "GgufTensorInfo", "read_gguf"]

_MAGIC = b"GGUF"
_SCALARS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_DEFAULT_ALIGNMENT = 32
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class GgufTensorInfo:
    name: str
    shape: tuple[int, ...]
    """As stored: innermost dimension first."""
    ggml_type: int


@dataclass(frozen=True, slots=True)
class GgufContents:
    version: int
    fields: dict[str, MetadataValue]
    tensors: list[GgufTensorInfo]

    def value(self, key: str) -> Any:
        """The value of ``key``, ``None`` when the file has no such key."""
        field = self.fields.get(key)
        return field.value if field is not None else None


class _Cursor:
    def __init__(self, data: memoryview) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> int:
        start = self.at
        if start + size > len(self.data):
            raise ValueError(f"the file ends inside its header (at byte {start}, {size} more needed)")
        self.at = start + size
        return start

    def u32(self) -> int:
        return int(_U32.unpack_from(self.data, self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack_from(self.data, self.take(8))[0])

    def string(self) -> str:
        size = self.u64()
        start = self.take(size)
        return str(self.data[start : start + size], "utf-8")

    def value_type(self) -> GGUFValueType:
        raw = self.u32()
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise ValueError(f"unknown GGUF value type {raw} at byte {self.at - 4}") from None

    def value(self, kind: GGUFValueType) -> tuple[Any, GGUFValueType | None]:
        """(value, element type when an array)."""
        if kind == GGUFValueType.STRING:
            return self.string(), None
        if kind == GGUFValueType.ARRAY:
            item = self.value_type()
            count = self.u64()
            fmt = _SCALARS.get(item)
            if fmt is not None:  # one numpy call for the whole array
                dtype = np.dtype(fmt).newbyteorder("<")
                start = self.take(count * dtype.itemsize)
                return np.frombuffer(self.data, dtype=dtype, count=count, offset=start).tolist(), item
            return [self.value(item)[0] for _ in range(count)], item
        fmt = _SCALARS[kind]
        size = struct.calcsize(fmt)
        return struct.unpack_from("<" + fmt, self.data, self.take(size))[0], None


def read_gguf(path: Path) -> GgufContents:
    """The key/values and tensor infos of the GGUF file at ``path``.

    Raises:
        ValueError: not a (little-endian, version 2+) GGUF file, or cut short inside its header.
        OSError: it cannot be read.
    """
    with open(path, "rb") as f:
        if f.seek(0, 2) < 24:
            raise ValueError(f"{path.name} is too short to be a GGUF file")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            data = memoryview(mapped)
            try:
                return _parse(path, _Cursor(data))
            finally:
                data.release()


def _parse(path: Path, cursor: _Cursor) -> GgufContents:
    if bytes(cursor.data[:4]) != _MAGIC:
        raise ValueError(f"{path.name} is not a GGUF file (no GGUF magic)")
    cursor.take(4)
    version = cursor.u32()
    if version & 0xFFFF == 0:
        raise ValueError(f"{path.name} is a big-endian GGUF file; only little-endian files are read")
    if version not in (2, 3):
        raise ValueError(f"{path.name} is GGUF version {version}; versions 2 and 3 are read")
    n_tensors, n_fields = cursor.u64(), cursor.u64()
    fields: dict[str, MetadataValue] = {}
    for _ in range(n_fields):
        name = cursor.string()
        kind = cursor.value_type()
        value, item = cursor.value(kind)
        if name in fields:
            raise ValueError(f"{path.name} has the key {name!r} twice")
        fields[name] = MetadataValue(name, value, kind, item)
    tensors = []
    ends: list[tuple[str, int]] = []
    for _ in range(n_tensors):
        name = cursor.string()
        dims = tuple(cursor.u64() for _ in range(cursor.u32()))
        ggml_type = cursor.u32()
        offset = cursor.u64()  # into the data section
        tensors.append(GgufTensorInfo(name, dims, ggml_type))
        ends.append((name, offset + _tensor_bytes(path, name, dims, ggml_type)))
    if len({t.name for t in tensors}) != len(tensors):
        raise ValueError(f"{path.name} names a tensor twice")
    # The data section starts at the next multiple of the alignment after the header; a file cut
    # short (a partial download, a full disk) ends before its last tensor does.
    alignment = fields["general.alignment"].value if "general.alignment" in fields else _DEFAULT_ALIGNMENT
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"{path.name}: general.alignment {alignment!r} is not a power of two")
    data_start = -(-cursor.at // alignment) * alignment
    for name, end in ends:
        if data_start + end > len(cursor.data):
            raise ValueError(f"{path.name} is cut short: tensor {name} ends past the end of the file")
    return GgufContents(version, fields, tensors)


def _tensor_bytes(path: Path, name: str, dims: tuple[int, ...], ggml_type: int) -> int:
    try:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"{path.name}: tensor {name} has an unknown ggml type {ggml_type}") from None
    return math.prod(dims) // block * size
