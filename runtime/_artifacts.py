"""Content-addressed artifact store on any fsspec filesystem (a local folder by default).

Files are stored under ``sha256/ab/<hash>``; writes go to a temporary name and are renamed
into place, so a reader never sees half a file. Messages carry ``ArtifactRef``s, never bytes.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path
from typing import BinaryIO

import anyio
import fsspec
from fsspec.implementations.local import LocalFileSystem

from protocol import ArtifactRef
from runtime._errors import ToolError
from runtime._files import atomic_path

__all__ = ["ArtifactCorrupt", "ArtifactMissing", "ArtifactStore"]

_CHUNK = 1 << 20


class ArtifactMissing(ToolError):
    """The referenced content is not in the store."""


class ArtifactCorrupt(ToolError):
    """The stored content does not match its reference's hash or size (or is not a file at all)."""


class ArtifactStore:
    """Put files in, get verified files out. Blocking I/O runs in worker threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        fs, root = fsspec.core.url_to_fs(url)
        self._fs: fsspec.AbstractFileSystem = fs
        self._root = root.rstrip("/")
        self._local = isinstance(fs, LocalFileSystem)

    def _path(self, sha256: str) -> str:
        return f"{self._root}/sha256/{sha256[:2]}/{sha256}"

    def _uri(self, path: str) -> str:
        if self._local:
            return Path(path).resolve().as_uri()
        return str(self._fs.unstrip_protocol(path))

    async def put_file(self, source: Path, *, media_type: str | None = None) -> ArtifactRef:
        """Copy a file into the store; returns its reference."""
        return await anyio.to_thread.run_sync(self._put_stream_from_path, source, media_type)

    async def put_bytes(self, data: bytes, *, name: str | None = None, media_type: str | None = None) -> ArtifactRef:
        def put() -> ArtifactRef:
            return self._put_stream(io.BytesIO(data), name, media_type)

        return await anyio.to_thread.run_sync(put)

    def _put_stream_from_path(self, source: Path, media_type: str | None) -> ArtifactRef:
        with open(source, "rb") as src:
            return self._put_stream(src, source.name, media_type)

    def _put_stream(self, src: BinaryIO, name: str | None, media_type: str | None) -> ArtifactRef:
        tmp = f"{self._root}/tmp/{uuid.uuid4().hex}"
        self._fs.makedirs(f"{self._root}/tmp", exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        try:
            with self._fs.open(tmp, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
            sha = digest.hexdigest()
            final = self._path(sha)
            if self._fs.exists(final):
                self._fs.rm(tmp)
            else:
                self._fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self._fs.mv(tmp, final)
        except BaseException:
            if self._fs.exists(tmp):
                self._fs.rm(tmp)
            raise
        return ArtifactRef(uri=self._uri(final), sha256=sha, size=size, name=name, media_type=media_type)

    async def fetch(self, ref: ArtifactRef, dest: Path) -> Path:
        """Copy the referenced content to ``dest`` (atomically), verifying hash and size."""
        return await anyio.to_thread.run_sync(self._fetch, ref, dest)

    def _open_ref(self, ref: ArtifactRef) -> BinaryIO:
        """Our copy, else the content at ``ref.uri``: only a regular file of exactly ``ref.size`` bytes.

        The size is checked before reading, so a reference to a device (``/dev/zero``), a folder or
        an oversized file is refused instead of read without end.
        """
        local = self._path(ref.sha256)
        fs, path = (self._fs, local) if self._fs.exists(local) else fsspec.core.url_to_fs(ref.uri)
        try:
            info = fs.info(path)
            if info.get("type") != "file" or info.get("size") != ref.size:
                kind = "a file" if info.get("type") == "file" else f"a {info.get('type')}, not a file"
                raise ArtifactCorrupt(
                    f"artifact at {ref.uri} is {kind} of {info.get('size')} bytes; its reference says {ref.size}"
                )
            return fs.open(path, "rb")  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise ArtifactMissing(f"artifact {ref.sha256[:12]} not found at {ref.uri}") from None

    def _fetch(self, ref: ArtifactRef, dest: Path) -> Path:
        digest = hashlib.sha256()
        size = 0
        # atomic_path: a mismatch or a failed write leaves no partial file, and the error names ``dest``.
        with atomic_path(dest) as tmp, self._open_ref(ref) as src, open(tmp, "wb") as dst:
            while size <= ref.size and (chunk := src.read(_CHUNK)):  # a file that grows is cut off
                digest.update(chunk)
                size += len(chunk)
                dst.write(chunk)
            if digest.hexdigest() != ref.sha256 or size != ref.size:
                raise ArtifactCorrupt(
                    f"artifact at {ref.uri} is corrupt: expected sha256 {ref.sha256[:12]}… "
                    f"and {ref.size} bytes, got {digest.hexdigest()[:12]}… and {size} bytes"
                )
        return dest

    async def read_bytes(self, ref: ArtifactRef) -> bytes:
        """The referenced content, verified (for small artifacts such as reports)."""

        def read() -> bytes:
            with self._open_ref(ref) as src:
                data = src.read(ref.size + 1)
            if hashlib.sha256(data).hexdigest() != ref.sha256:
                raise ArtifactCorrupt(f"artifact at {ref.uri} does not match its sha256")
            return data

        return await anyio.to_thread.run_sync(read)

    async def exists(self, ref: ArtifactRef) -> bool:
        return await anyio.to_thread.run_sync(self._fs.exists, self._path(ref.sha256))
