"""The record store's contract: every test runs on the memory, the Redis and the SQLite backend."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from bus import MemoryBroker, open_transport
from runtime import (
    Agent,
    Collection,
    LeaseKind,
    RecordBackend,
    RecordError,
    RecordKind,
    RecordStore,
    SqliteRecords,
    TransportRecords,
    open_swarm,
)

pytestmark = pytest.mark.anyio


class Thing(BaseModel):
    name: str
    n: int = 0


THINGS = RecordKind("test-thing", Thing)
OTHERS = RecordKind("test-other", Thing)
LOCKS = LeaseKind("test-lock")

StoreFactory = Callable[[str], RecordStore]
"""A store in the given namespace; every store of one factory shares the same backing storage."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis), "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[RecordStore] = []
    if request.param == "sqlite":
        path = tmp_path / "state.sqlite3"

        def backend(namespace: str) -> RecordBackend:
            return SqliteRecords(path, namespace)

        cleanup = None
    else:
        name = uuid.uuid4().hex
        url = f"memory://{name}" if request.param == "memory" else request.getfixturevalue("redis_url")
        transport = open_transport(url)

        def backend(namespace: str) -> RecordBackend:
            return TransportRecords(transport, namespace)

        async def cleanup() -> None:
            await transport.close()
            MemoryBroker.drop(name)

    def make(namespace: str) -> RecordStore:
        store = RecordStore(backend(namespace))
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
    if cleanup is not None:
        await cleanup()


@pytest.fixture
def store(stores: StoreFactory, namespace: str) -> RecordStore:
    return stores(namespace)


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until ``check`` holds (a time-to-live ran out), polling; fail after ``timeout``."""
    with anyio.fail_after(timeout):
        while not await check():
            await anyio.sleep(0.02)


async def test_put_get_delete_return_the_models(store: RecordStore) -> None:
    things = store.collection(THINGS)
    assert await things.get("a") is None
    await things.put("a", Thing(name="first"))
    await things.put("a", Thing(name="second", n=2))  # put replaces
    got = await things.get("a")
    assert isinstance(got, Thing) and got == Thing(name="second", n=2)
    await things.put("b:c", Thing(name="b"))
    assert await things.get_many(["b:c", "missing", "a"]) == [Thing(name="b"), None, got]
    assert await things.get_many([]) == []
    assert await things.delete("a") and not await things.delete("a")
    assert await things.get("a") is None


async def test_create_stores_only_when_the_id_is_free(store: RecordStore) -> None:
    things = store.collection(THINGS)
    assert await things.create("x", Thing(name="one"))
    assert not await things.create("x", Thing(name="two"))
    assert await things.get("x") == Thing(name="one")


async def test_scan_lists_one_kind_in_id_order_optionally_by_prefix(store: RecordStore) -> None:
    things, others = store.collection(THINGS), store.collection(OTHERS)
    for record_id in ("b:2", "a:1", "b:10", "ab:1"):
        await things.put(record_id, Thing(name=record_id))
    await others.put("a:1", Thing(name="other"))
    assert list(await things.scan()) == ["a:1", "ab:1", "b:10", "b:2"]
    assert await things.scan("b:") == {"b:10": Thing(name="b:10"), "b:2": Thing(name="b:2")}
    assert list(await things.scan("a")) == ["a:1", "ab:1"]
    assert await things.scan("zz") == {}
    assert await others.scan() == {"a:1": Thing(name="other")}


async def test_compare_and_set_changes_a_record_only_from_the_expected_value(store: RecordStore) -> None:
    things = store.collection(THINGS)
    a, b = Thing(name="a"), Thing(name="b")
    assert await things.compare_and_set("k", None, a)  # absent -> set
    assert not await things.compare_and_set("k", None, b)  # present: not absent
    assert not await things.compare_and_set("k", b, b)  # holds a, not b
    assert await things.compare_and_set("k", a, b) and await things.get("k") == b
    assert not await things.compare_and_set("k", a, None)
    assert await things.compare_and_set("k", b, None) and await things.get("k") is None


async def test_time_to_live_makes_a_record_absent_everywhere(store: RecordStore) -> None:
    things = store.collection(THINGS)
    await things.put("long", Thing(name="long"), ttl_ms=60_000)
    await things.put("short", Thing(name="short"), ttl_ms=100)
    assert await things.create("created", Thing(name="c"), ttl_ms=100)
    assert await things.compare_and_set("swapped", None, Thing(name="s"), ttl_ms=100)
    await eventually(lambda: _all_gone(things, ["short", "created", "swapped"]))
    assert await things.get("long") == Thing(name="long")
    assert list(await things.scan()) == ["long"]
    assert await things.create("short", Thing(name="again"))  # an expired id is free
    assert await things.compare_and_set("swapped", None, Thing(name="again"))
    assert not await things.delete("created")
    await things.put("long", Thing(name="forever"))  # a put without a time-to-live keeps the record
    assert await things.get("long") == Thing(name="forever")


async def _all_gone(things: Collection[Thing], ids: list[str]) -> bool:
    return await things.get_many(ids) == [None] * len(ids)


async def test_concurrent_compare_and_set_has_exactly_one_winner(stores: StoreFactory, namespace: str) -> None:
    # Three stores: on SQLite three connections to the one file, racing as processes would.
    collections = [stores(namespace).collection(THINGS) for _ in range(3)]
    wins: list[int] = []

    async def contend(i: int) -> None:
        if await collections[i % 3].compare_and_set("race", None, Thing(name=str(i))):
            wins.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(30):
            tg.start_soon(contend, i)
    (winner,) = wins
    assert await collections[0].get("race") == Thing(name=str(winner))


async def test_leases_are_held_renewed_taken_over_released_and_expire(store: RecordStore) -> None:
    locks = store.leases(LOCKS)
    assert await locks.holder("job1") is None
    assert await locks.acquire("job1", "a/1", ttl_ms=60_000)
    assert await locks.acquire("job1", "a/1", ttl_ms=60_000)  # ours: extended
    assert not await locks.acquire("job1", "b/1", ttl_ms=60_000)
    assert await locks.renew("job1", "a/1", ttl_ms=60_000) and not await locks.renew("job1", "b/1", ttl_ms=60_000)
    assert not await locks.take_over("job1", "b/1", "a/2", ttl_ms=60_000)  # only from the actual holder
    assert await locks.take_over("job1", "a/1", "a/2", ttl_ms=60_000) and await locks.holder("job1") == "a/2"
    assert not await locks.release("job1", "a/1") and await locks.release("job1", "a/2")
    assert await locks.holder("job1") is None
    assert await locks.acquire("job1", "c/1", ttl_ms=100)
    await eventually(lambda: locks.acquire("job1", "d/1", ttl_ms=60_000))  # the lapsed lease is free
    assert not await locks.renew("job1", "c/1", ttl_ms=60_000)


async def test_namespaces_do_not_see_each_other(stores: StoreFactory) -> None:
    one, two = stores("ns-one").collection(THINGS), stores("ns-two").collection(THINGS)
    await one.put("a", Thing(name="one"))
    assert await two.get("a") is None and await two.scan() == {}
    assert await two.create("a", Thing(name="two"))
    assert await one.get("a") == Thing(name="one") and await two.get("a") == Thing(name="two")
    assert await stores("ns-two").leases(LOCKS).acquire("a", "x", ttl_ms=60_000)
    assert await stores("ns-one").leases(LOCKS).holder("a") is None


@pytest.mark.parametrize("bad", ["", "a*", "a?b", "[a]", "a b", "a/b", "../a", "a:", ":a", "a::b", "é", "x" * 513])
async def test_bad_ids_are_refused(store: RecordStore, bad: str) -> None:
    things, locks = store.collection(THINGS), store.leases(LOCKS)
    attempts = [
        things.get(bad),
        things.put(bad, Thing(name="x")),
        things.create(bad, Thing(name="x")),
        things.get_many(["ok", bad]),
        things.compare_and_set(bad, None, Thing(name="x")),
        things.delete(bad),
        locks.acquire(bad, "me", ttl_ms=1000),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="invalid record id"):
            await attempt
    assert await things.scan() == {}


async def test_bad_prefixes_time_to_live_and_holders_are_refused(store: RecordStore) -> None:
    things, locks = store.collection(THINGS), store.leases(LOCKS)
    with pytest.raises(ValueError, match="invalid record id prefix"):
        await things.scan("a*")
    with pytest.raises(ValueError, match="time-to-live must be positive"):
        await things.put("a", Thing(name="x"), ttl_ms=0)
    with pytest.raises(ValueError, match="lease holder needs a name"):
        await locks.acquire("a", "", ttl_ms=1000)


async def test_a_record_that_is_not_its_model_is_a_clear_error(store: RecordStore) -> None:
    await store.backend.put("test-thing", "bad", b'{"n": "many"}', ttl_ms=None, only_new=False)
    with pytest.raises(RecordError, match=r"record test-thing:bad is not a valid Thing: 2 error\(s\)"):
        await store.collection(THINGS).get("bad")


def test_bad_and_overlapping_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid record kind"):
        RecordKind("Jobs", Thing)
    with pytest.raises(ValueError, match="invalid record kind"):
        LeaseKind("job*")
    with pytest.raises(ValueError, match="overlaps kind 'test-thing'"):
        RecordKind("test-thing:sub", Thing)  # its keys would be test-thing records on Redis
    with pytest.raises(ValueError, match="'test-lock' is already defined as LeaseKind"):
        RecordKind("test-lock", Thing)
    with pytest.raises(ValueError, match="'test-thing' is already defined as RecordKind"):
        RecordKind("test-thing", BaseModel)
    assert RecordKind("test-thing", Thing) == THINGS  # the same kind again is fine


# -- SQLite ------------------------------------------------------------------------------------

_COUNTER = """
import sys, anyio
from pathlib import Path
from pydantic import RootModel
from runtime import RecordKind, RecordStore, SqliteRecords

COUNTS = RecordKind("test-count", RootModel[int])

async def main() -> None:
    counts = RecordStore(SqliteRecords(Path(sys.argv[1]), "ns")).collection(COUNTS)
    for _ in range(int(sys.argv[2])):
        while True:
            now = await counts.get("c")
            if await counts.compare_and_set("c", now, RootModel[int]((now.root if now else 0) + 1)):
                break

anyio.run(main)
"""


async def test_sqlite_compare_and_set_is_atomic_across_processes(tmp_path: Path) -> None:
    path, per_process = tmp_path / "state.sqlite3", 25
    procs = [
        subprocess.Popen([sys.executable, "-c", _COUNTER, str(path), str(per_process)], stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for proc in procs:
        _, err = await anyio.to_thread.run_sync(proc.communicate)
        assert proc.returncode == 0, err.decode()[-2000:]
    db = sqlite3.connect(path)
    try:
        ((value,),) = db.execute("SELECT value FROM records WHERE kind = 'test-count'").fetchall()
        ((mode,),) = db.execute("PRAGMA journal_mode").fetchall()
    finally:
        db.close()
    assert int(value) == 3 * per_process  # no increment lost
    assert mode == "wal"


async def test_sqlite_keeps_records_across_stores_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "state.sqlite3"
    first = RecordStore(SqliteRecords(path, "ns"))
    await first.open()
    await first.collection(THINGS).put("a", Thing(name="kept"))
    await first.close()
    second = RecordStore(SqliteRecords(path, "ns"))
    assert await second.collection(THINGS).get("a") == Thing(name="kept")
    await second.close()


async def test_stores_opening_a_new_file_at_once_all_open_it(tmp_path: Path) -> None:
    # Connections switching a new file to WAL together used to fail one of them ("database is
    # locked") in about one race in thirty; two hundred races make a regression all but certain to show.
    for race in range(200):
        path = tmp_path / f"{race}.sqlite3"
        stores = [RecordStore(SqliteRecords(path, "ns")) for _ in range(4)]
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.open)
        for store in stores:
            await store.close()


async def test_an_unreadable_database_or_folder_is_an_error_naming_the_path(tmp_path: Path) -> None:
    garbage = tmp_path / "state.sqlite3"
    garbage.write_bytes(b"not a database, just bytes " * 100)
    with pytest.raises(RecordError, match=f"state database {garbage}: file is not a database"):
        await RecordStore(SqliteRecords(garbage, "ns")).open()
    (tmp_path / "file").write_text("a file where a folder should be")
    blocked = tmp_path / "file" / "state.sqlite3"
    with pytest.raises(RecordError, match=f"state database {blocked}: "):
        await RecordStore(SqliteRecords(blocked, "ns")).open()


# -- which store a host hands its agents ------------------------------------------------------


class Keeper(Agent):
    name = "keeper"


async def test_an_embedded_host_keeps_records_in_sqlite_under_the_data_dir(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path
) -> None:
    settings = settings_factory(memory_url)
    async with open_swarm(settings, [Keeper]) as swarm:
        backend = swarm.host.agents[0].ctx.records.backend
        assert isinstance(backend, SqliteRecords) and backend.path == tmp_path / "data" / "state.sqlite3"
        await swarm.host.records.collection(THINGS).put("a", Thing(name="kept"))
    elsewhere = settings_factory(f"memory://{uuid.uuid4().hex}", state_path=tmp_path / "elsewhere.sqlite3")
    async with open_swarm(elsewhere, [Keeper]) as swarm:
        assert await swarm.host.records.collection(THINGS).get("a") is None
    async with open_swarm(settings_factory(f"memory://{uuid.uuid4().hex}"), [Keeper]) as swarm:
        assert await swarm.host.records.collection(THINGS).get("a") == Thing(name="kept")  # a new process, same folder


@pytest.mark.redis
async def test_a_redis_host_keeps_records_in_redis(settings_factory, redis_url: str) -> None:  # type: ignore[no-untyped-def]
    async with open_swarm(settings_factory(redis_url), [Keeper]) as swarm:
        assert isinstance(swarm.host.records.backend, TransportRecords)


async def test_an_unreadable_state_database_stops_the_swarm_with_its_path(  # type: ignore[no-untyped-def]
    settings_factory, memory_url: str, tmp_path: Path
) -> None:
    state = tmp_path / "state.sqlite3"
    state.write_bytes(b"garbage " * 1000)
    with pytest.raises(RecordError, match=f"state database {state}: file is not a database"):
        async with open_swarm(settings_factory(memory_url, state_path=state), [Keeper]):
            pass
