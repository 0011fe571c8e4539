"""Bus benchmark: this bus versus raw redis-py Streams on the same Redis, in the same run.

    python -m bench.bus [--redis-url URL] [--messages N] [--round-trips M]

Without ``--redis-url`` it starts a private redis-server on a free port. It reports one-way
throughput (producer XADD → consumer XREADGROUP/handler/XACK) and request/reply round-trip
latency (p50, p99) for both, and the ratios. Machines are noisy: compare ratios, not seconds.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import redis.asyncio as aioredis

from bus import Bus, BusOptions, Delivery, encode_fields, open_transport
from protocol import (
    BusMeta,
    CallToolParams,
    CallToolRequest,
    Envelope,
    JobEvent,
    JobEventNotification,
    ResponseMessage,
    ResultResponse,
)

BATCH = 64


def _event(i: int) -> JobEventNotification:
    return JobEventNotification(params=JobEvent(job_id="bench", kind="progress", step="train", progress=i))


@contextmanager
def private_redis() -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server not found; pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.3)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait()


async def raw_one_way(url: str, n: int, payload: dict[bytes, bytes]) -> float:
    """Messages/s with plain redis-py: XADD one by one; XREADGROUP COUNT 64 then one XACK per batch."""
    stream, group = f"bench:raw:{uuid.uuid4().hex}", "g"
    producer = aioredis.from_url(url)
    consumer = aioredis.from_url(url)
    await producer.xgroup_create(stream, group, id="0", mkstream=True)
    done = anyio.Event()

    async def consume() -> None:
        seen = 0
        while seen < n:
            reply = await consumer.xreadgroup(group, "c", {stream: ">"}, count=BATCH, block=100)
            for _, entries in reply or []:
                ids = [entry_id for entry_id, _ in entries]
                seen += len(ids)
                await consumer.xack(stream, group, *ids)
        done.set()

    began = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for _ in range(n):
            await producer.xadd(stream, payload)
        await done.wait()
    elapsed = time.perf_counter() - began
    await producer.delete(stream)
    await producer.aclose()
    await consumer.aclose()
    return n / elapsed


async def bus_one_way(url: str, n: int) -> float:
    """Messages/s through the bus: typed envelopes, decode, handler, ack."""
    options = BusOptions(namespace=f"bench-{uuid.uuid4().hex[:8]}", batch_size=BATCH)
    async with Bus(open_transport(url), options=options, sender="bench") as bus:
        handled = 0
        done = anyio.Event()

        async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
            nonlocal handled
            handled += 1
            if handled == n:
                done.set()
            return None

        sub = bus.subscribe("sink", handler, consumer="c", concurrency=BATCH)
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run)
            began = time.perf_counter()
            for i in range(n):
                await bus.send("sink", _event(i))
            await done.wait()
            while await bus.transport.pending_count(bus.keys.inbox("sink"), "sink"):
                await anyio.sleep(0.001)
            elapsed = time.perf_counter() - began
            tg.cancel_scope.cancel()
        await bus.transport.delete([bus.keys.inbox("sink")])
    return n / elapsed


async def raw_round_trips(url: str, m: int, payload: dict[bytes, bytes]) -> list[float]:
    """Request/reply by hand: XADD request; worker XREADGROUP, XADD reply, XACK; caller XREAD."""
    inbox, replies, group = f"bench:rq:{uuid.uuid4().hex}", f"bench:rp:{uuid.uuid4().hex}", "g"
    caller, worker, reader = (aioredis.from_url(url) for _ in range(3))
    await caller.xgroup_create(inbox, group, id="0", mkstream=True)
    stop = anyio.Event()

    async def serve() -> None:
        while not stop.is_set():
            reply = await worker.xreadgroup(group, "w", {inbox: ">"}, count=BATCH, block=100)
            for _, entries in reply or []:
                for entry_id, fields in entries:
                    await worker.xadd(replies, fields)
                    await worker.xack(inbox, group, entry_id)

    samples = []
    last = "0-0"
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        for _ in range(m):
            began = time.perf_counter()
            await caller.xadd(inbox, payload)
            while True:
                reply = await reader.xread({replies: last}, count=1, block=1000)
                if reply:
                    last = reply[0][1][0][0]
                    break
            samples.append(time.perf_counter() - began)
        stop.set()
    await caller.delete(inbox, replies)
    for client in (caller, worker, reader):
        await client.aclose()
    return samples


async def bus_round_trips(url: str, m: int) -> list[float]:
    options = BusOptions(namespace=f"bench-{uuid.uuid4().hex[:8]}")
    async with Bus(open_transport(url), options=options, sender="bench") as bus:

        async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
            assert isinstance(envelope.message, CallToolRequest)
            return ResultResponse(id=envelope.message.id, result={"ok": True})

        sub = bus.subscribe("echo", handler, consumer="w")
        samples = []
        async with anyio.create_task_group() as tg:
            await tg.start(sub.run)
            request = CallToolRequest(params=CallToolParams(name="echo", arguments={"n": 1}))
            await bus.request("echo", request, timeout=5)  # warm the reply reader
            for _ in range(m):
                began = time.perf_counter()
                await bus.request("echo", request, timeout=5)
                samples.append(time.perf_counter() - began)
            tg.cancel_scope.cancel()
    return samples


def _pct(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] * 1000


async def main(url: str, n: int, m: int) -> None:
    # The raw baseline sends a payload of the same size as the bus's encoded envelope.
    payload = encode_fields(Envelope(meta=BusMeta(sender="bench"), message=_event(0)))
    raw_tp = await raw_one_way(url, n, payload)
    bus_tp = await bus_one_way(url, n)
    raw_rt = await raw_round_trips(url, m, payload)
    bus_rt = await bus_round_trips(url, m)
    print(f"one-way throughput ({n} messages, {len(payload[b'body'])}-byte bodies)")
    print(f"  raw redis-py : {raw_tp:9.0f} msg/s")
    print(f"  meetara bus  : {bus_tp:9.0f} msg/s   ratio {bus_tp / raw_tp:.2f} (target >= 0.50)")
    print(f"request/reply round trip ({m} sequential requests)")
    print(f"  raw redis-py : p50 {_pct(raw_rt, 50):.3f} ms   p99 {_pct(raw_rt, 99):.3f} ms")
    print(
        f"  meetara bus  : p50 {_pct(bus_rt, 50):.3f} ms   p99 {_pct(bus_rt, 99):.3f} ms"
        f"   p99 ratio {_pct(bus_rt, 99) / _pct(raw_rt, 99):.2f} (target p99 < 5 ms)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--round-trips", type=int, default=2_000)
    args = parser.parse_args()
    if args.redis_url:
        anyio.run(main, args.redis_url, args.messages, args.round_trips)
    else:
        with private_redis() as url:
            anyio.run(main, url, args.messages, args.round_trips)
