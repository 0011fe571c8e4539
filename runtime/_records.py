"""Typed, namespaced records by kind and id: jobs, ledger entries, index entries, leases.

Agents read and write pydantic models through a ``RecordStore``; a backend keeps the bytes. On
a Redis swarm the backend is the bus's transport, with the key layout ``{namespace}:{kind}:{id}``
that the stores had before there was a record store (a swarm upgraded in place keeps its jobs);
the embedded swarm keeps them in a SQLite file, so a second ``meetara run`` remembers the first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from bus import Keys, Transport
from protocol import MeetaraError

__all__ = [
    "Collection",
    "LeaseKind",
    "Leases",
    "RecordBackend",
    "RecordError",
    "RecordKind",
    "RecordStore",
    "TransportRecords",
]

M = TypeVar("M", bound=BaseModel)

_KIND = re.compile(r"[a-z][a-z0-9-]*(?::[a-z][a-z0-9-]*)*")
# Ids and prefixes hold no glob characters, so backends can scan with ``prefix*`` patterns.
_ID = re.compile(r"[A-Za-z0-9_.+-]+(?::[A-Za-z0-9_.+-]+)*")
_PREFIX = re.compile(r"[A-Za-z0-9_.:+-]*")
_MAX_ID = 512


class RecordError(MeetaraError):
    """A record or the database holding it cannot be read or written."""


def _check_id(kind: str, record_id: str, *, prefix: bool = False) -> str:
    """``record_id`` if it is a valid id (or id prefix) of ``kind``; ``ValueError`` otherwise."""
    pattern = _PREFIX if prefix else _ID
    if len(record_id) > _MAX_ID or not pattern.fullmatch(record_id):
        what = "id prefix" if prefix else "id"
        raise ValueError(
            f"invalid record {what} {record_id!r} of kind {kind!r}: use letters, digits, '_', '.', '+' and '-' "
            f"in ':'-separated parts, at most {_MAX_ID} characters"
        )
    return record_id


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str
    _defined: ClassVar[dict[str, _Kind]] = {}
    """Every kind defined in this process, so two whose keys would collide are refused."""

    def __post_init__(self) -> None:
        if not _KIND.fullmatch(self.name):
            raise ValueError(f"invalid record kind {self.name!r}: use lower-case words separated by ':'")
        # On Redis, kind "cost" with id "entry:x" and kind "cost:entry" with id "x" are one key.
        for other in self._defined:
            if other.startswith(f"{self.name}:") or self.name.startswith(f"{other}:"):
                raise ValueError(f"record kind {self.name!r} overlaps kind {other!r}: their keys would collide")
        same = self._defined.setdefault(self.name, self)
        if same != self:
            raise ValueError(f"record kind {self.name!r} is already defined as {same!r}")


@dataclass(frozen=True, slots=True)
class RecordKind(_Kind, Generic[M]):
    """A kind of record (``"job"``) and the model its values are; define one per kind, at module level."""

    model: type[M]


@dataclass(frozen=True, slots=True)
class LeaseKind(_Kind):
    """A kind of lease (``"job-lease"``): the value is the holder's name, kept until its time-to-live ends."""


class RecordBackend(Protocol):
    """Bytes by (kind, id) in one namespace. Every method is atomic; expired records are absent."""

    async def open(self) -> None:
        """Connect and check the storage; raise ``RecordError`` naming what is wrong."""

    async def close(self) -> None:
        """Release connections (a later call connects again)."""

    async def get_many(self, kind: str, ids: Sequence[str]) -> list[bytes | None]:
        """The values of ``ids``, ``None`` for absent ones."""

    async def put(self, kind: str, record_id: str, value: bytes, *, ttl_ms: int | None, only_new: bool) -> bool:
        """Store ``value`` (with ``only_new``: only if absent); returns whether it was stored."""

    async def compare_and_set(
        self, kind: str, record_id: str, expected: bytes | None, value: bytes | None, *, ttl_ms: int | None
    ) -> bool:
        """If the record holds ``expected`` (``None``: absent), set it to ``value`` (``None``: delete)."""

    async def delete(self, kind: str, record_id: str) -> bool:
        """Remove the record; returns whether it existed."""

    async def scan(self, kind: str, prefix: str) -> list[tuple[str, bytes]]:
        """Every record of ``kind`` whose id starts with ``prefix``, in id order."""


def _check_ttl(ttl_ms: int | None) -> int | None:
    if ttl_ms is not None and ttl_ms <= 0:
        raise ValueError(f"a record's time-to-live must be positive, not {ttl_ms} ms")
    return ttl_ms


class Collection(Generic[M]):
    """The records of one kind: models in, models out."""

    def __init__(self, backend: RecordBackend, kind: RecordKind[M]) -> None:
        self._backend = backend
        self.kind = kind

    def _id(self, record_id: str) -> str:
        return _check_id(self.kind.name, record_id)

    def _decode(self, record_id: str, raw: bytes) -> M:
        try:
            return self.kind.model.model_validate_json(raw)
        except ValidationError as exc:
            raise RecordError(
                f"record {self.kind.name}:{record_id} is not a valid {self.kind.model.__name__}: "
                f"{exc.error_count()} error(s), first: {exc.errors()[0]['msg']}"
            ) from None

    @staticmethod
    def _encode(value: BaseModel) -> bytes:
        return value.model_dump_json().encode()

    async def get(self, record_id: str) -> M | None:
        (raw,) = await self._backend.get_many(self.kind.name, [self._id(record_id)])
        return None if raw is None else self._decode(record_id, raw)

    async def get_many(self, record_ids: Sequence[str]) -> list[M | None]:
        """Values in the order of ``record_ids``, ``None`` where absent."""
        raws = await self._backend.get_many(self.kind.name, [self._id(i) for i in record_ids])
        return [None if raw is None else self._decode(i, raw) for i, raw in zip(record_ids, raws, strict=True)]

    async def put(self, record_id: str, value: M, *, ttl_ms: int | None = None) -> None:
        """Store ``value``, replacing what was there; with ``ttl_ms`` it disappears after that long."""
        await self._backend.put(
            self.kind.name, self._id(record_id), self._encode(value), ttl_ms=_check_ttl(ttl_ms), only_new=False
        )

    async def create(self, record_id: str, value: M, *, ttl_ms: int | None = None) -> bool:
        """Store ``value`` only if the id is free; returns whether it was stored."""
        return await self._backend.put(
            self.kind.name, self._id(record_id), self._encode(value), ttl_ms=_check_ttl(ttl_ms), only_new=True
        )

    async def compare_and_set(
        self, record_id: str, expected: M | None, value: M | None, *, ttl_ms: int | None = None
    ) -> bool:
        """Atomically replace ``expected`` (``None``: absent) by ``value`` (``None``: delete).

        Values compare as stored JSON, so ``expected`` must serialize as the stored one did.
        """
        return await self._backend.compare_and_set(
            self.kind.name,
            self._id(record_id),
            None if expected is None else self._encode(expected),
            None if value is None else self._encode(value),
            ttl_ms=_check_ttl(ttl_ms),
        )

    async def delete(self, record_id: str) -> bool:
        return await self._backend.delete(self.kind.name, self._id(record_id))

    async def scan(self, prefix: str = "") -> dict[str, M]:
        """Every record (whose id starts with ``prefix``), by id in id order."""
        rows = await self._backend.scan(self.kind.name, _check_id(self.kind.name, prefix, prefix=True))
        return {record_id: self._decode(record_id, raw) for record_id, raw in rows}


class Leases:
    """Leases of one kind: a holder's name with a time-to-live, taken and kept only by compare-and-set."""

    def __init__(self, backend: RecordBackend, kind: LeaseKind) -> None:
        self._backend = backend
        self.kind = kind

    async def _swap(self, lease_id: str, expected: str | None, holder: str | None, ttl_ms: int | None) -> bool:
        return await self._backend.compare_and_set(
            self.kind.name,
            _check_id(self.kind.name, lease_id),
            None if expected is None else _holder(expected),
            None if holder is None else _holder(holder),
            ttl_ms=_check_ttl(ttl_ms),
        )

    async def holder(self, lease_id: str) -> str | None:
        (raw,) = await self._backend.get_many(self.kind.name, [_check_id(self.kind.name, lease_id)])
        return None if raw is None else raw.decode()

    async def acquire(self, lease_id: str, holder: str, *, ttl_ms: int) -> bool:
        """Take the lease if it is free or already ``holder``'s, for ``ttl_ms`` from now."""
        return await self._swap(lease_id, holder, holder, ttl_ms) or await self._swap(lease_id, None, holder, ttl_ms)

    async def renew(self, lease_id: str, holder: str, *, ttl_ms: int) -> bool:
        """Extend the lease only while ``holder`` still holds it."""
        return await self._swap(lease_id, holder, holder, ttl_ms)

    async def take_over(self, lease_id: str, previous: str, holder: str, *, ttl_ms: int) -> bool:
        """Move the lease from ``previous`` (e.g. a dead process of the caller's) to ``holder``."""
        return await self._swap(lease_id, previous, holder, ttl_ms)

    async def release(self, lease_id: str, holder: str) -> bool:
        """Give the lease up if ``holder`` holds it."""
        return await self._swap(lease_id, holder, None, None)


def _holder(name: str) -> bytes:
    if not name:
        raise ValueError("a lease holder needs a name")
    return name.encode()


class RecordStore:
    """Collections and leases on one backend (one namespace)."""

    def __init__(self, backend: RecordBackend) -> None:
        self.backend = backend

    def collection(self, kind: RecordKind[M]) -> Collection[M]:
        return Collection(self.backend, kind)

    def leases(self, kind: LeaseKind) -> Leases:
        return Leases(self.backend, kind)

    async def open(self) -> None:
        await self.backend.open()

    async def close(self) -> None:
        await self.backend.close()


class TransportRecords:
    """Records as keys of the bus's transport (Redis or memory), at ``{namespace}:{kind}:{id}``."""

    def __init__(self, transport: Transport, namespace: str) -> None:
        self._transport = transport
        self._keys = Keys(namespace)

    def _key(self, kind: str, record_id: str) -> str:
        return self._keys.stream(f"{kind}:{record_id}")

    async def open(self) -> None:
        """The bus opened the transport and owns it."""

    async def close(self) -> None:
        """The bus closes the transport."""

    async def get_many(self, kind: str, ids: Sequence[str]) -> list[bytes | None]:
        return await self._transport.get_many([self._key(kind, i) for i in ids])

    async def put(self, kind: str, record_id: str, value: bytes, *, ttl_ms: int | None, only_new: bool) -> bool:
        return await self._transport.set(self._key(kind, record_id), value, ttl_ms=ttl_ms, nx=only_new)

    async def compare_and_set(
        self, kind: str, record_id: str, expected: bytes | None, value: bytes | None, *, ttl_ms: int | None
    ) -> bool:
        return await self._transport.compare_and_set(self._key(kind, record_id), expected, value, ttl_ms=ttl_ms)

    async def delete(self, kind: str, record_id: str) -> bool:
        return await self._transport.delete([self._key(kind, record_id)]) > 0

    async def scan(self, kind: str, prefix: str) -> list[tuple[str, bytes]]:
        keys = await self._transport.scan(self._key(kind, prefix) + "*")
        start = len(self._key(kind, ""))
        values = await self._transport.get_many(keys)
        # A record that expired between the scan and the read is left out.
        return [(key[start:], value) for key, value in zip(keys, values, strict=True) if value is not None]
