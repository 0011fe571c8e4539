"""The fast GGUF header reader gives what gguf-py's GGUFReader gives, and refuses broken files clearly."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import pytest

from agents.llm.default_base import default_base_gguf
from agents.llm.gguf_fields import read_gguf

Fields = dict[str, tuple[Any, gguf.GGUFValueType, gguf.GGUFValueType | None]]
Tensors = list[tuple[str, tuple[int, ...], int]]


def _as_gguf_py_reads(path: Path) -> tuple[Fields, Tensors]:
    reader = gguf.GGUFReader(str(path))
    fields = {
        name: (f.contents(), f.types[0], f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None)
        for name, f in reader.fields.items()
        if not name.startswith("GGUF.")  # the reader's own pseudo-fields (version, counts)
    }
    tensors = [(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type)) for t in reader.tensors]
    return fields, tensors


@pytest.fixture(scope="module")
def every_value_type(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "types.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_uint8("t.u8", 200)
    writer.add_int8("t.i8", -5)
    writer.add_uint16("t.u16", 60_000)
    writer.add_int16("t.i16", -30_000)
    writer.add_uint32("t.u32", 4_000_000_000)
    writer.add_int32("t.i32", -2_000_000_000)
    writer.add_float32("t.f32", 1e-5)
    writer.add_bool("t.bool", True)
    writer.add_uint64("t.u64", 2**63 + 1)
    writer.add_int64("t.i64", -(2**62))
    writer.add_float64("t.f64", 0.1)
    writer.add_string("t.str", "héllo ▁ world")
    writer.add_array("t.ints", [1, -2, 3])
    writer.add_array("t.floats", [0.5, -1.25])
    writer.add_array("t.strs", ["a", "", "Ġthe", "<|im_end|>"])
    writer.add_array("t.bools", [True, False])
    writer.add_tensor("w", np.zeros((3, 5), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("which", ["every value type", "pip-shipped base"])
def test_fields_types_and_tensors_are_those_gguf_py_reads(which: str, every_value_type: Path) -> None:
    path = every_value_type if which == "every value type" else default_base_gguf()
    contents = read_gguf(path)
    fields, tensors = _as_gguf_py_reads(path)
    assert list(contents.fields) == list(fields)
    for name, (value, kind, item) in fields.items():
        field = contents.fields[name]
        assert (field.value, field.type, field.sub_type) == (value, kind, item), name
        assert type(field.value) is type(value), name
    assert [(t.name, t.shape, t.ggml_type) for t in contents.tensors] == tensors
    assert contents.value("no.such.key") is None


def test_broken_files_are_refused_with_a_reason(tmp_path: Path, every_value_type: Path) -> None:
    whole = every_value_type.read_bytes()
    cases = {
        "cut.gguf": (whole[:200], "ends inside its header"),
        "tiny.gguf": (whole[:10], "too short"),
        "magic.gguf": (b"GGML" + whole[4:], "not a GGUF file"),
        "big-endian.gguf": (whole[:4] + struct.pack(">I", 3) + whole[8:], "big-endian"),
        "v1.gguf": (whole[:4] + struct.pack("<I", 1) + whole[8:], "version 1"),
        "v9.gguf": (whole[:4] + struct.pack("<I", 9) + whole[8:], "version 9"),
        # Header whole, tensor data cut: a partial download or a write that ran out of disk.
        "half.gguf": (whole[: len(whole) - 8], "cut short: tensor w ends past the end of the file"),
    }
    # The first key's value type, replaced by one no GGUF version defines.
    key_len = struct.unpack_from("<Q", whole, 24)[0]
    type_at = 24 + 8 + key_len
    cases["type.gguf"] = (whole[:type_at] + struct.pack("<I", 99) + whole[type_at + 4 :], "unknown GGUF value type 99")
    for name, (data, reason) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=reason):
            read_gguf(path)
