"""The bus contract: every test runs on the memory and the Redis backend."""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio
import pytest

from bus import Bus, Delivery, Subscription, encode_fields, open_transport
from protocol import (
    DEAD_LETTERED,
    INVALID_REQUEST,
    REQUEST_TIMEOUT,
    BusMeta,
    CallToolParams,
    CallToolRequest,
    Envelope,
    ErrorResponse,
    JobEvent,
    JobEventNotification,
    MessageTooLarge,
    RequestTimeout,
    ResponseMessage,
    ResultResponse,
    RetryLater,
)
from runtime.testing import fast_options

pytestmark = pytest.mark.anyio


def call(n: int = 0, name: str = "work") -> CallToolRequest:
    return CallToolRequest(params=CallToolParams(name=name, arguments={"n": n}))


@dataclass
class Worker:
    """A handler that records what it saw; behaviour is set per test."""

    fail_first: int = 0
    always_fail: bool = False
    sleep: float = 0.0
    retry_first: int = 0
    calls: list[Delivery] = field(default_factory=list)
    started: anyio.Event = field(default_factory=anyio.Event)

    async def __call__(self, envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        self.calls.append(delivery)
        self.started.set()
        if self.sleep:
            await anyio.sleep(self.sleep)
        if self.always_fail or len(self.calls) <= self.fail_first:
            raise RuntimeError("boom")
        if len(self.calls) <= self.retry_first:
            raise RetryLater()
        message = envelope.message
        if not isinstance(message, CallToolRequest):
            return None
        return ResultResponse(
            id=message.id,
            result={
                "n": message.params.arguments["n"],
                "consumer": delivery.consumer,
                "deliveries": delivery.deliveries,
            },
        )


async def start(
    tg: anyio.abc.TaskGroup,
    bus: Bus,
    handler: Callable[..., Awaitable[ResponseMessage | None]],
    consumer: str,
    agent: str = "worker",
    **kw: object,
) -> Subscription:
    sub = bus.subscribe(agent, handler, consumer=consumer, **kw)  # type: ignore[arg-type]
    await tg.start(sub.run)
    return sub


async def replies_in_stream(bus: Bus) -> int:
    return await bus.transport.length(bus.keys.stream(bus._replies.logical_stream))


async def test_request_reply_round_trip(bus: Bus) -> None:
    worker = Worker()
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        response = await bus.request("worker", call(7), timeout=5)
        tg.cancel_scope.cancel()
    assert isinstance(response, ResultResponse)
    assert response.result["n"] == 7
    assert response.result["deliveries"] == 1


async def test_concurrent_callers_each_get_their_own_reply(bus: Bus, bus_url: str, namespace: str) -> None:
    worker = Worker(sleep=0.01)
    results: dict[int, int] = {}
    async with (
        Bus(open_transport(bus_url), options=fast_options(namespace), sender="other") as other,
        anyio.create_task_group() as tg,
    ):
        await start(tg, bus, worker, "c1", concurrency=8)

        async def ask(b: Bus, n: int) -> None:
            r = await b.request("worker", call(n), timeout=5)
            assert isinstance(r, ResultResponse)
            results[n] = r.result["n"]

        async with anyio.create_task_group() as callers:
            for n in range(20):
                callers.start_soon(ask, bus if n % 2 else other, n)
        tg.cancel_scope.cancel()
    assert results == {n: n for n in range(20)}


async def test_replicas_share_the_work_and_each_message_runs_once(bus: Bus) -> None:
    worker = Worker(sleep=0.02)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "a", concurrency=1)
        await start(tg, bus, worker, "b", concurrency=1)
        async with anyio.create_task_group() as callers:
            for n in range(16):
                callers.start_soon(functools.partial(bus.request, "worker", call(n), timeout=10))
        tg.cancel_scope.cancel()
    assert len(worker.calls) == 16
    per_consumer = Counter(d.consumer for d in worker.calls)
    assert set(per_consumer) == {"a", "b"}


async def test_failed_handler_is_redelivered_then_succeeds(bus: Bus) -> None:
    worker = Worker(fail_first=1)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        response = await bus.request("worker", call(1), timeout=10)
        tg.cancel_scope.cancel()
    assert isinstance(response, ResultResponse)
    assert [d.deliveries for d in worker.calls] == [1, 2]


async def test_retry_later_redelivers(bus: Bus) -> None:
    worker = Worker(retry_first=1)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        response = await bus.request("worker", call(1), timeout=10)
        tg.cancel_scope.cancel()
    assert isinstance(response, ResultResponse)
    assert len(worker.calls) == 2


async def test_poison_message_is_dead_lettered_and_caller_gets_an_error(bus: Bus) -> None:
    worker = Worker(always_fail=True)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        response = await bus.request("worker", call(3), timeout=10)
        follow_up = Worker()
        await start(tg, bus, follow_up, "c2", agent="other")
        assert isinstance(await bus.request("other", call(4), timeout=5), ResultResponse)
        tg.cancel_scope.cancel()
    assert isinstance(response, ErrorResponse)
    assert response.error.code == DEAD_LETTERED
    assert "boom" in response.error.message
    assert len(worker.calls) == bus.options.max_deliveries
    letters = await bus.dead_letters()
    assert len(letters) == 1
    assert letters[0].deliveries == bus.options.max_deliveries
    assert letters[0].stream == bus.keys.inbox("worker")
    assert b"body" in letters[0].raw


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"hello": b"world"}, "not a MeeTARA message"),
        ({b"magic": b"meetara", b"v": b"9", b"body": b"{}"}, "layout version"),
        ({b"magic": b"meetara", b"v": b"1", b"body": b"{not json"}, "not valid JSON"),
        ({b"magic": b"meetara", b"v": b"1", b"body": b'{"meta":{},"message":{}}'}, "invalid envelope"),
        ({b"magic": b"meetara", b"v": b"1"}, "no body"),
    ],
)
async def test_malformed_entries_go_to_dead_letters_and_consumer_keeps_going(
    bus: Bus, fields: dict[bytes, bytes], reason: str
) -> None:
    worker = Worker()
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        await bus.transport.add(bus.keys.inbox("worker"), fields, maxlen=1000)
        assert isinstance(await bus.request("worker", call(5), timeout=5), ResultResponse)
        tg.cancel_scope.cancel()
    letters = await bus.dead_letters()
    assert len(letters) == 1
    assert reason in letters[0].error.message
    assert letters[0].raw == fields
    assert len(worker.calls) == 1  # the handler never saw the bad entry


async def test_malformed_request_with_readable_meta_gets_an_error_reply(bus: Bus) -> None:
    await bus._ensure_replies()
    meta = BusMeta(sender="test", reply_to=bus._replies.logical_stream, correlation_id=None)
    body = (
        '{"meta":'
        + meta.model_dump_json(exclude_none=True)
        + ',"message":{"jsonrpc":"2.0","id":"r1","method":"tools/explode","params":{}}}'
    ).encode()
    slot = bus._replies.expect(meta.message_id)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, Worker(), "c1")
        await bus.transport.add(bus.keys.inbox("worker"), {b"magic": b"meetara", b"v": b"1", b"body": body}, maxlen=100)
        with anyio.fail_after(5):
            await slot.done.wait()
        tg.cancel_scope.cancel()
    assert isinstance(slot.response, ErrorResponse)
    assert slot.response.id == "r1"
    assert slot.response.error.code == INVALID_REQUEST


async def test_dead_consumers_work_is_reclaimed_by_a_live_replica(bus: Bus) -> None:
    stuck = Worker(sleep=3600)
    healthy = Worker()
    result: list[ResponseMessage] = []

    async def ask() -> None:
        result.append(await bus.request("worker", call(9), timeout=10))

    async with anyio.create_task_group() as tg:
        # Consumer "dead" takes the message, then dies: its task is cancelled with no release.
        async with anyio.create_task_group() as doomed:
            await start(doomed, bus, stuck, "dead")
            tg.start_soon(ask)
            with anyio.fail_after(5):
                await stuck.started.wait()
            doomed.cancel_scope.cancel()
        await start(tg, bus, healthy, "alive")
        with anyio.fail_after(5):
            while not result:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert isinstance(result[0], ResultResponse)
    assert result[0].result["consumer"] == "alive"
    assert result[0].result["deliveries"] == 2
    assert len(healthy.calls) == 1
    assert await replies_in_stream(bus) == 1


async def test_heartbeat_keeps_a_slow_live_handler_from_being_reclaimed(bus: Bus) -> None:
    slow = Worker(sleep=3 * bus.options.reclaim_idle_ms / 1000)
    thief = Worker()
    async with anyio.create_task_group() as tg:
        await start(tg, bus, slow, "slow")
        await start(tg, bus, thief, "thief")
        # Only "slow" can take it first: thief reads too, so address the race by retrying.
        response = await bus.request("worker", call(2), timeout=10)
        tg.cancel_scope.cancel()
    assert isinstance(response, ResultResponse)
    handled = len(slow.calls) + len(thief.calls)
    assert handled == 1, f"message ran {handled} times"
    assert await replies_in_stream(bus) == 1


async def test_graceful_stop_releases_unfinished_work_to_a_replica(bus: Bus) -> None:
    stuck = Worker(sleep=3600)
    healthy = Worker()
    async with anyio.create_task_group() as tg:
        sub = await start(tg, bus, stuck, "leaving")
        result: list[ResponseMessage] = []

        async def ask() -> None:
            result.append(await bus.request("worker", call(1), timeout=10))

        tg.start_soon(ask)
        with anyio.fail_after(5):
            await stuck.started.wait()
        sub.stop(grace=0.05)
        await sub.wait_stopped()
        began = time.monotonic()
        await start(tg, bus, healthy, "staying")
        while not result:
            await anyio.sleep(0.01)
        elapsed = time.monotonic() - began
        tg.cancel_scope.cancel()
    assert isinstance(result[0], ResultResponse)
    assert result[0].result["consumer"] == "staying"
    # Released entries are due at once: picked up by the first reclaim pass, not after the idle time.
    assert elapsed < bus.options.reclaim_idle_ms / 1000 * 2


async def test_restarted_consumer_drains_its_own_pending_first(bus_url: str, namespace: str) -> None:
    # Reclaim is far away, so only the drain of its own pending list can finish the message.
    options = fast_options(namespace, reclaim_idle_ms=60_000, heartbeat_ms=50)
    async with Bus(open_transport(bus_url), options=options, sender="t") as bus:
        stuck, again = Worker(sleep=3600), Worker()
        result: list[ResponseMessage] = []
        async with anyio.create_task_group() as tg:
            async with anyio.create_task_group() as first_life:
                await start(first_life, bus, stuck, "same-name")

                async def ask() -> None:
                    result.append(await bus.request("worker", call(4), timeout=10))

                tg.start_soon(ask)
                with anyio.fail_after(5):
                    await stuck.started.wait()
                first_life.cancel_scope.cancel()
            await start(tg, bus, again, "same-name")
            with anyio.fail_after(5):
                while not result:
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert isinstance(result[0], ResultResponse)
    assert again.calls[0].deliveries == 2


async def test_same_idempotency_key_runs_once_and_both_callers_get_the_result(bus: Bus) -> None:
    worker = Worker()
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        first = await bus.request("worker", call(1), timeout=5, idempotency_key="job-1:train")
        second = await bus.request("worker", call(1), timeout=5, idempotency_key="job-1:train")
        tg.cancel_scope.cancel()
    assert len(worker.calls) == 1
    assert isinstance(first, ResultResponse) and isinstance(second, ResultResponse)
    assert first.result == second.result
    assert first.id != second.id  # each answer is addressed to its own request


async def test_a_request_re_sent_while_its_twin_still_runs_waits_for_the_twin(bus: Bus) -> None:
    """A caller that crashed and re-sends (same key, new message) must not start the work twice."""
    worker = Worker(sleep=1.0)
    results: list[ResponseMessage] = []
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        await start(tg, bus, worker, "c2")

        async def ask() -> None:
            results.append(await bus.request("worker", call(7), timeout=10, idempotency_key="job-2:train:1"))

        tg.start_soon(ask)
        with anyio.fail_after(5):
            await worker.started.wait()
        await ask()
        with anyio.fail_after(5):
            while len(results) < 2:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert len(worker.calls) == 1
    assert all(isinstance(r, ResultResponse) for r in results)
    assert results[0].result == results[1].result  # type: ignore[union-attr]


async def test_a_starved_consumer_never_lets_a_twin_take_the_key_its_own_handler_holds(bus: Bus) -> None:
    """The twin waits in the same consumer as the running copy, whose handler blocks the event loop
    past the claim's lifetime (a busy host): when the loop wakes, the twin must not find the claim
    lapsed and start the work a second time."""
    calls: list[Delivery] = []

    async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        assert isinstance(envelope.message, CallToolRequest)
        calls.append(delivery)
        for _ in range(4):
            time.sleep(bus.options.reclaim_idle_ms / 1000 * 2)  # noqa: ASYNC251 - the starvation itself
            await anyio.sleep(0.6)  # past the twin's poll interval: it looks at the claim each time
        return ResultResponse(id=envelope.message.id, result={"run": len(calls)})

    results: list[ResponseMessage] = []

    async def ask() -> None:
        results.append(await bus.request("worker", call(7), timeout=60, idempotency_key="job-3:data:1"))

    async with anyio.create_task_group() as tg:
        await start(tg, bus, handler, "only")
        tg.start_soon(ask)
        tg.start_soon(ask)
        with anyio.fail_after(60):
            while len(results) < 2:
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert len(calls) == 1, calls
    assert [r.result for r in results] == [{"run": 1}, {"run": 1}]  # type: ignore[union-attr]


async def test_duplicate_delivery_of_an_answered_request_does_not_run_twice(bus: Bus) -> None:
    worker = Worker()
    await bus._ensure_replies()
    request = call(3)
    envelope = Envelope(
        meta=BusMeta(sender="test", reply_to=bus._replies.logical_stream, deadline=time.time() + 30),
        message=request,
    )
    slot = bus._replies.expect(envelope.meta.message_id)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        await bus.send_envelope("worker", envelope)
        with anyio.fail_after(5):
            await slot.done.wait()
        await bus.send_envelope("worker", envelope)  # a producer retry: same message id again
        with anyio.fail_after(5):
            while await bus.transport.pending_count(bus.keys.inbox("worker"), "worker") or (
                await bus.transport.length(bus.keys.inbox("worker")) < 2
            ):
                await anyio.sleep(0.01)
        await anyio.sleep(0.1)
        tg.cancel_scope.cancel()
    assert len(worker.calls) == 1
    assert await replies_in_stream(bus) == 1


async def test_expired_request_is_not_run(bus: Bus) -> None:
    worker = Worker()
    await bus._ensure_replies()
    envelope = Envelope(
        meta=BusMeta(sender="test", reply_to=bus._replies.logical_stream, deadline=time.time() - 1),
        message=call(1),
    )
    slot = bus._replies.expect(envelope.meta.message_id)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, worker, "c1")
        await bus.send_envelope("worker", envelope)
        with anyio.fail_after(5):
            await slot.done.wait()
        tg.cancel_scope.cancel()
    assert worker.calls == []
    assert isinstance(slot.response, ErrorResponse)
    assert slot.response.error.code == REQUEST_TIMEOUT


async def test_request_without_consumer_times_out_instead_of_hanging(bus: Bus) -> None:
    began = time.monotonic()
    with pytest.raises(RequestTimeout, match="no response from agent 'nobody'"):
        await bus.request("nobody", call(1), timeout=0.3)
    assert time.monotonic() - began < 3


async def test_oversize_message_is_refused_at_the_sender(bus: Bus) -> None:
    big = CallToolRequest(params=CallToolParams(name="work", arguments={"blob": "x" * 2_000_000}))
    with pytest.raises(MessageTooLarge, match="artifact references"):
        await bus.send("worker", big)
    assert await bus.transport.length(bus.keys.inbox("worker")) == 0


async def test_oversize_entry_on_the_stream_is_dead_lettered(bus: Bus) -> None:
    envelope = Envelope(meta=BusMeta(sender="x"), message=call(1))
    fields = encode_fields(envelope)
    fields[b"body"] = fields[b"body"][:-1] + b" " * (bus.options.max_message_bytes + 10) + b"}"
    async with anyio.create_task_group() as tg:
        await start(tg, bus, Worker(), "c1")
        await bus.transport.add(bus.keys.inbox("worker"), fields, maxlen=100)
        with anyio.fail_after(5):
            while not await bus.dead_letters():
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert "over the" in (await bus.dead_letters())[0].error.message


async def test_events_are_tailed_by_many_watchers_from_any_point(bus: Bus) -> None:
    ids = []
    for i in range(5):
        event = JobEvent(job_id="j1", kind="progress", step="train", progress=i, total=5)
        ids.append(await bus.publish_event(JobEventNotification(params=event)))

    async def collect(since: str, n: int) -> list[float]:
        seen: list[float] = []
        with anyio.fail_after(5):
            async for record in bus.events(since=since):
                message = record.envelope.message
                assert isinstance(message, JobEventNotification)
                seen.append(message.params.progress or 0)
                if len(seen) == n:
                    return seen
        return seen

    assert await collect("0", 5) == [0, 1, 2, 3, 4]
    assert await collect("0", 5) == [0, 1, 2, 3, 4]
    assert await collect(ids[2], 2) == [3, 4]

    new_only: list[float] = []
    async with anyio.create_task_group() as tg:

        async def watch_new() -> None:
            new_only.extend(await collect("$", 1))

        tg.start_soon(watch_new)
        await anyio.sleep(0.2)
        await bus.publish_event(JobEventNotification(params=JobEvent(job_id="j1", kind="progress", progress=99)))
    assert new_only == [99]


async def test_streams_are_bounded(bus_url: str, namespace: str) -> None:
    options = fast_options(namespace, inbox_maxlen=50, events_maxlen=50)
    async with Bus(open_transport(bus_url), options=options, sender="t") as bus:
        for i in range(600):
            await bus.send("worker", call(i))
            await bus.publish_event(JobEventNotification(params=JobEvent(job_id="j", kind="log")))
        # Redis trims approximately (whole macro nodes of 100 entries); memory trims exactly.
        assert await bus.transport.length(bus.keys.inbox("worker")) <= 50 + 100
        assert await bus.transport.length(bus.keys.events) <= 50 + 100


async def test_trimmed_pending_entry_is_dropped_without_crashing_the_consumer(bus: Bus) -> None:
    stuck, healthy = Worker(sleep=3600), Worker()
    async with anyio.create_task_group() as tg:
        async with anyio.create_task_group() as doomed:
            await start(doomed, bus, stuck, "dead")
            await bus.send("worker", call(1))
            with anyio.fail_after(5):
                await stuck.started.wait()
            doomed.cancel_scope.cancel()
        pending = stuck.calls[0].entry_id
        await bus.transport.delete_entries(bus.keys.inbox("worker"), [pending])
        await start(tg, bus, healthy, "alive")
        with anyio.fail_after(5):
            while await bus.transport.pending_count(bus.keys.inbox("worker"), "worker"):
                await anyio.sleep(0.02)
        assert isinstance(await bus.request("worker", call(2), timeout=5), ResultResponse)
        tg.cancel_scope.cancel()
    assert len(healthy.calls) == 1


async def test_namespaces_do_not_see_each_other(bus_url: str) -> None:
    async with (
        Bus(open_transport(bus_url), options=fast_options("ns-a-" + str(time.time_ns())), sender="a") as a,
        Bus(open_transport(bus_url), options=fast_options("ns-b-" + str(time.time_ns())), sender="b") as b,
    ):
        await a.send("worker", call(1))
        await a.put_presence("x", b"1", ttl_ms=5000)
        assert await b.transport.length(b.keys.inbox("worker")) == 0
        assert await b.presence() == {}
        assert await a.presence() == {"x": b"1"}


async def test_dead_letter_replay_and_purge(bus: Bus) -> None:
    broken = Worker(always_fail=True)
    async with anyio.create_task_group() as tg:
        sub = await start(tg, bus, broken, "c1")
        response = await bus.request("worker", call(8), timeout=10)
        assert isinstance(response, ErrorResponse)
        sub.stop(grace=1)
        await sub.wait_stopped()
        (letter,) = await bus.dead_letters()
        fixed = Worker()
        await start(tg, bus, fixed, "c2")
        await bus.replay_dead_letter(letter.id)
        with anyio.fail_after(5):
            while not fixed.calls:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    assert await bus.dead_letters() == []
    assert fixed.calls[0].deliveries == 1
    with pytest.raises(LookupError):
        await bus.replay_dead_letter(letter.id)

    await bus.transport.add(bus.keys.inbox("worker"), {b"junk": b"1"}, maxlen=10)
    async with anyio.create_task_group() as tg:
        await start(tg, bus, Worker(), "c3", burst=True)
    assert len(await bus.dead_letters()) == 1
    assert await bus.purge_dead_letters() == 1
    assert await bus.dead_letters() == []


async def test_presence_expires_after_its_ttl(bus: Bus) -> None:
    await bus.put_presence("agent.one", b"payload", ttl_ms=300)
    assert await bus.presence() == {"agent.one": b"payload"}
    await anyio.sleep(0.5)
    assert await bus.presence() == {}


async def test_burst_mode_returns_once_everything_is_settled(bus: Bus) -> None:
    worker = Worker(fail_first=1)
    for i in range(5):
        await bus.send("worker", call(i))
    sub = bus.subscribe("worker", worker, consumer="burst", burst=True)
    with anyio.fail_after(10):
        await sub.run()
    assert len(worker.calls) == 6  # five messages, the first one twice
    assert await bus.transport.pending_count(bus.keys.inbox("worker"), "worker") == 0


async def test_a_starved_consumer_never_reclaims_its_own_running_entries(bus: Bus) -> None:
    """A handler that blocks the event loop past ``reclaim_idle_ms`` (a busy host, a GIL-bound step).

    Heartbeats and reclaim passes resume together: the entry must stay at one delivery, not climb
    towards the dead-letter limit while its handler still runs.
    """
    counts: list[dict[str, int]] = []

    async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        assert isinstance(envelope.message, CallToolRequest)
        for _ in range(2 * bus.options.max_deliveries):
            time.sleep(bus.options.reclaim_idle_ms / 1000 * 1.5)  # noqa: ASYNC251 - the starvation itself
            await anyio.sleep(bus.options.block_ms / 1000 * 2)  # let the consumer's loops run
            counts.append(await bus.transport.delivery_counts(delivery.stream, "worker", [delivery.entry_id]))
        return ResultResponse(id=envelope.message.id, result={})

    async with anyio.create_task_group() as tg:
        await start(tg, bus, handler, "slow")
        response = await bus.request("worker", call(1), timeout=60)
        tg.cancel_scope.cancel()
    assert isinstance(response, ResultResponse)
    assert all(set(c.values()) == {1} for c in counts), counts
    assert await bus.dead_letters() == []


async def test_a_reclaim_pass_never_claims_the_entries_its_consumer_keeps(bus: Bus) -> None:
    """The atomic step under the starved-consumer guarantee: kept entries are fresh before the claim."""
    transport, stream = bus.transport, bus.keys.stream("reclaim-keep")
    await transport.ensure_group(stream, "g")
    ids = [await transport.add(stream, {b"n": str(n).encode()}, maxlen=100) for n in range(3)]
    assert [e.id for e in await transport.read_group(stream, "g", "a", pending=False, count=3, block_ms=0)] == ids
    assert await transport.touch(stream, "g", "a", ids, idle_ms=60_000) == ids  # all three long idle
    claim = await transport.autoclaim(stream, "g", "a", min_idle_ms=30_000, start="0-0", count=10, keep=ids[:2])
    assert [(e.id, e.fields) for e in claim.entries] == [(ids[2], {b"n": b"2"})]
    assert await transport.delivery_counts(stream, "g", ids) == {ids[0]: 1, ids[1]: 1, ids[2]: 2}
    # A kept entry another consumer owns is not refreshed for it: it is claimed like any other.
    await transport.touch(stream, "g", "a", ids[:1], idle_ms=60_000)
    claim = await transport.autoclaim(stream, "g", "b", min_idle_ms=30_000, start="0-0", count=10, keep=ids[:1])
    assert [e.id for e in claim.entries] == ids[:1]


async def test_a_request_left_in_an_inbox_runs_once_by_its_key_unless_it_expired_first(bus: Bus) -> None:
    """Work nobody waits on, sent while no consumer runs: the inbox holds it for the agent."""
    await bus.send("worker", call(1), idempotency_key="usage:1", expires_in_s=60)
    await bus.send("worker", call(1), idempotency_key="usage:1", expires_in_s=60)  # a re-send: no second run
    await bus.send("worker", call(2), idempotency_key="usage:2", expires_in_s=0.01)
    await anyio.sleep(0.05)  # the consumer comes back after the second request's expiry
    ran: list[object] = []

    async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        assert isinstance(envelope.message, CallToolRequest)
        ran.append(envelope.message.params.arguments["n"])
        return ResultResponse(id=envelope.message.id, result={})

    with anyio.fail_after(10):
        await bus.subscribe("worker", handler, consumer="back", burst=True).run()
    assert ran == [1]
    assert await bus.dead_letters() == []


async def test_compare_and_set_changes_a_key_only_from_the_expected_value(bus: Bus) -> None:
    transport, key = bus.transport, bus.keys.stream("lease:cas")
    assert await transport.compare_and_set(key, None, b"a", ttl_ms=60_000)  # absent -> taken
    assert not await transport.compare_and_set(key, None, b"b", ttl_ms=60_000)  # held: not taken
    assert not await transport.compare_and_set(key, b"b", b"b", ttl_ms=60_000)  # not b's to renew
    assert await transport.compare_and_set(key, b"a", b"a", ttl_ms=60_000) and await transport.get(key) == b"a"
    assert not await transport.compare_and_set(key, b"b", None)  # not b's to release
    assert await transport.compare_and_set(key, b"a", None) and await transport.get(key) is None
    assert await transport.compare_and_set(key, None, b"c", ttl_ms=50)
    await anyio.sleep(0.2)
    assert await transport.get(key) is None  # the time-to-live applies
    assert await transport.compare_and_set(key, None, b"d") and await transport.get(key) == b"d"
