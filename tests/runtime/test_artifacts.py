"""The content-addressed artifact store."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from protocol import ArtifactRef
from runtime import ArtifactCorrupt, ArtifactMissing, ArtifactStore, Settings

pytestmark = pytest.mark.anyio


async def test_put_and_fetch_round_trip(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    source = tmp_path / "data.jsonl"
    source.write_bytes(b'{"a": 1}\n' * 100_000)
    ref = await store.put_file(source, media_type="application/jsonl")
    assert ref.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert ref.size == source.stat().st_size and ref.name == "data.jsonl"
    assert ref.uri.startswith("file://") and ref.uri.endswith(ref.sha256)
    out = await store.fetch(ref, tmp_path / "out" / "copy.jsonl")
    assert out.read_bytes() == source.read_bytes()
    assert await store.exists(ref)
    assert await store.read_bytes(await store.put_bytes(b"small")) == b"small"


async def test_identical_content_is_stored_once(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    a = await store.put_bytes(b"same", name="a")
    b = await store.put_bytes(b"same", name="b")
    assert a.sha256 == b.sha256 and a.uri == b.uri
    blobs = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert len(blobs) == 1  # no temporary files left behind either


async def test_corruption_is_detected_and_nothing_is_written(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    ref = await store.put_bytes(b"original content")
    Path(ref.uri.removeprefix("file://")).write_bytes(b"tampered content")
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(ArtifactCorrupt, match="is corrupt"):
        await store.fetch(ref, dest)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # the partial download was removed


async def test_missing_artifact(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    ghost = ArtifactRef(uri=(tmp_path / "nowhere").as_uri(), sha256="0" * 64, size=1)
    with pytest.raises(ArtifactMissing, match="not found"):
        await store.fetch(ghost, tmp_path / "x")


async def test_any_fsspec_url_works(tmp_path: Path) -> None:
    store = ArtifactStore("memory://meetara-test-store")
    ref = await store.put_bytes(b"in memory fs")
    assert ref.uri.startswith("memory://")
    assert await store.read_bytes(ref) == b"in memory fs"


@pytest.mark.parametrize("target", ["/dev/zero", "folder", "bigger"])
async def test_a_reference_to_anything_but_a_file_of_its_size_is_refused_unread(tmp_path: Path, target: str) -> None:
    store = ArtifactStore(str(tmp_path / "store"))
    (tmp_path / "folder").mkdir()
    (tmp_path / "bigger").write_bytes(b"x" * 100)
    path = Path(target) if target.startswith("/") else tmp_path / target
    ref = ArtifactRef(uri=path.as_uri(), sha256="0" * 64, size=10)
    with pytest.raises(ArtifactCorrupt, match="its reference says 10"):
        await store.read_bytes(ref)
    with pytest.raises(ArtifactCorrupt, match="its reference says 10"):
        await store.fetch(ref, tmp_path / "out" / "x")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("url", ["nosuch://bucket/prefix", "ftp-ish://x"])
def test_a_store_url_whose_filesystem_is_unknown_is_refused_when_settings_load(url: str) -> None:
    with pytest.raises(ValidationError, match="is not usable"):
        Settings.load(artifact_url=url)


@pytest.mark.parametrize("url", ["simplecache::memory://meetara/x", "file:///srv/meetara", "relative/folder"])
def test_folders_and_chained_fsspec_urls_are_accepted(url: str) -> None:
    assert Settings.load(artifact_url=url).artifact_url == url
