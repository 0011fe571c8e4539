"""Records in a SQLite file: the embedded swarm's memory across processes.

Every write is one ``BEGIN IMMEDIATE`` transaction: it takes the file's write lock before it
reads, so a compare-and-set is atomic across every process sharing the file, and a crash leaves
the old value or the new one. WAL journal mode lets readers go on while one process writes.
Calls run in a worker thread, one at a time per store, so the event loop never waits on disk.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import anyio

from bus import Keys
from runtime._records import RecordError

__all__ = ["SqliteRecords"]

T = TypeVar("T")

_BUSY_TIMEOUT_S = 30.0
"""How long a write waits for another process's transaction before it fails."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    namespace TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    value BLOB NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, kind, id)
) WITHOUT ROWID
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_GET_CHUNK = 500
"""Ids per query: under SQLite's limit on bound parameters."""


class SqliteRecords:
    """Records of one namespace in the SQLite file at ``path`` (created with its folder if missing)."""

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self._namespace = Keys(namespace).namespace  # the bus's rule for namespaces
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            # Two connections switching a new file to WAL at once deadlock on its lock upgrade, and
            # SQLite answers one "database is locked" at once instead of waiting: set-up is serialised
            # across processes by an advisory lock on a file beside the database.
            with open(self.path.with_name(self.path.name + "-setup.lock"), "a") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute(_SCHEMA)
            # In WAL mode NORMAL never corrupts the file; a power cut may lose the last commits.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("DELETE FROM records WHERE expires_at <= ?", (time.time(),))
        except BaseException:
            db.close()
            raise
        return db

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                if self._db is None:
                    self._db = self._connect()
                return work(self._db)
            except (sqlite3.Error, OSError) as exc:
                raise RecordError(f"state database {self.path}: {exc}") from exc

    async def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(self._run, work)

    async def _write(self, work: Callable[[sqlite3.Connection, float], T]) -> T:
        """``work(db, now)`` in one immediate transaction, rolled back if it raises."""

        def transaction(db: sqlite3.Connection) -> T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db, time.time())
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._call(transaction)

    def _live(self, db: sqlite3.Connection, kind: str, record_id: str, now: float) -> bytes | None:
        row = db.execute(
            f"SELECT value FROM records WHERE namespace = ? AND kind = ? AND id = ? AND {_LIVE}",
            (self._namespace, kind, record_id, now),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def _store(
        self, db: sqlite3.Connection, kind: str, record_id: str, value: bytes, ttl_ms: int | None, now: float
    ) -> None:
        expires = now + ttl_ms / 1000 if ttl_ms is not None else None
        db.execute(
            "INSERT INTO records (namespace, kind, id, value, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (namespace, kind, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            (self._namespace, kind, record_id, value, expires),
        )

    def _remove(self, db: sqlite3.Connection, kind: str, record_id: str) -> None:
        db.execute(
            "DELETE FROM records WHERE namespace = ? AND kind = ? AND id = ?", (self._namespace, kind, record_id)
        )

    # -- RecordBackend ----------------------------------------------------------------------
    async def open(self) -> None:
        await self._call(lambda db: None)

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                db, self._db = self._db, None
                if db is not None:
                    db.close()

        await anyio.to_thread.run_sync(close)

    async def get_many(self, kind: str, ids: Sequence[str]) -> list[bytes | None]:
        def read(db: sqlite3.Connection) -> dict[str, bytes]:
            found: dict[str, bytes] = {}
            now = time.time()
            for start in range(0, len(ids), _GET_CHUNK):
                chunk = list(ids[start : start + _GET_CHUNK])
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT id, value FROM records WHERE namespace = ? AND kind = ? AND id IN ({marks}) AND {_LIVE}",
                    (self._namespace, kind, *chunk, now),
                )
                found.update((str(i), bytes(v)) for i, v in rows)
            return found

        found = await self._call(read) if ids else {}
        return [found.get(i) for i in ids]

    async def put(self, kind: str, record_id: str, value: bytes, *, ttl_ms: int | None, only_new: bool) -> bool:
        def put(db: sqlite3.Connection, now: float) -> bool:
            if only_new and self._live(db, kind, record_id, now) is not None:
                return False
            self._store(db, kind, record_id, value, ttl_ms, now)
            return True

        return await self._write(put)

    async def compare_and_set(
        self, kind: str, record_id: str, expected: bytes | None, value: bytes | None, *, ttl_ms: int | None
    ) -> bool:
        def swap(db: sqlite3.Connection, now: float) -> bool:
            if self._live(db, kind, record_id, now) != expected:
                return False
            if value is None:
                self._remove(db, kind, record_id)
            else:
                self._store(db, kind, record_id, value, ttl_ms, now)
            return True

        return await self._write(swap)

    async def delete(self, kind: str, record_id: str) -> bool:
        def delete(db: sqlite3.Connection, now: float) -> bool:
            existed = self._live(db, kind, record_id, now) is not None
            self._remove(db, kind, record_id)
            return existed

        return await self._write(delete)

    async def scan(self, kind: str, prefix: str) -> list[tuple[str, bytes]]:
        # Ids and prefixes hold no glob characters (runtime._records checks them): GLOB is a prefix match.
        def scan(db: sqlite3.Connection) -> list[tuple[str, bytes]]:
            rows = db.execute(
                f"SELECT id, value FROM records WHERE namespace = ? AND kind = ? AND id GLOB ? AND {_LIVE} ORDER BY id",
                (self._namespace, kind, f"{prefix}*", time.time()),
            )
            return [(str(i), bytes(v)) for i, v in rows]

        return await self._call(scan)
