"""Atomic file writes: readers see the old file or the complete new one, never a partial one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel

__all__ = ["atomic_path", "atomic_write", "utc_now_iso", "write_json"]

_FILE_MODE = 0o644
"""mkstemp creates files only their owner can read; published files (models, manifests) are for everyone."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (GGUF writers, llama.cpp).

    On success the file is fsynced and renamed over ``path``; on any error it is removed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # write() errors name no file; "No space left on device" alone does not say where.
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


@contextlib.contextmanager
def atomic_write(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """Write to a temporary file in the same folder, fsync it, then rename it over ``path``.

    If the block raises (disk full, a bug), the temporary file is removed and ``path`` is untouched.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") if binary else open(tmp, "w", encoding="utf-8") as f:
        yield f


def write_json(path: Path, model: BaseModel) -> None:
    """A pydantic model as indented JSON, atomically."""
    with atomic_write(path) as f:
        f.write(model.model_dump_json(indent=2))


def utc_now_iso() -> str:
    """Now, as ISO 8601 UTC with seconds (the timestamps in metadata and reports)."""
    return datetime.now(UTC).isoformat(timespec="seconds")
