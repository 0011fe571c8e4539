"""Atomic writes: all or nothing, and published files readable by everyone."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import atomic_path, atomic_write


def test_atomic_write_replaces_whole_files_and_keeps_the_old_one_on_error(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "manifest.json"
    with atomic_write(target) as f:
        f.write("first")
    assert target.read_text() == "first" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half of the sec")
        raise RuntimeError("disk full")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["manifest.json"]


def test_atomic_path_for_writers_that_want_a_file_name(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    with atomic_path(target) as tmp:
        assert tmp != target and tmp.parent == target.parent
        tmp.write_bytes(b"GGUF")
    assert target.read_bytes() == b"GGUF" and target.stat().st_mode & 0o777 == 0o644
    with pytest.raises(OSError), atomic_path(tmp_path / "other.gguf") as tmp:
        tmp.write_bytes(b"partial")
        raise OSError(28, "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.gguf"]
