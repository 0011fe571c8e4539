"""Redis behind Sentinel: ``redis+sentinel://`` URLs, and a failover that loses nothing a writer was told is written."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bus import Bus, Delivery, open_transport
from bus._redis._connection import SentinelTarget, redact_url
from protocol import CallToolParams, CallToolRequest, Envelope, ResponseMessage, ResultResponse
from runtime import Settings
from runtime.testing import RedisSentinels, RedisServer, fast_options

FAILOVER_S = 60.0
"""Horizon for the Sentinels to agree the primary is gone and promote its replica (busy machine)."""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://s1:26379,s2:26380,s3/meetara",
            SentinelTarget((("s1", 26379), ("s2", 26380), ("s3", 26379)), "meetara"),
        ),
        (
            "rediss+sentinel://app:p%40ss@s1:5000/primary/2?ssl_ca_certs=/ca.pem",
            SentinelTarget((("s1", 5000),), "primary", 2, "app", "p@ss", tls=True, ssl_ca_certs="/ca.pem"),
        ),
        (
            "redis+sentinel://[::1]:5000,10.0.0.2/meetara",
            SentinelTarget((("::1", 5000), ("10.0.0.2", 26379)), "meetara"),
        ),
    ],
)
def test_a_sentinel_url_names_its_sentinels_service_db_and_credentials(url: str, expected: SentinelTarget) -> None:
    assert SentinelTarget.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://s1:26379",
        "redis+sentinel://s1:26379/a/b",
        "redis+sentinel://s1:port/meetara",
        "redis+sentinel://s1:99999/meetara",
        "redis+sentinel://s1/meetara?ssl_ca_cert=/ca.pem",  # a typo is not silently ignored
    ],
)
def test_a_sentinel_url_without_a_service_with_a_bad_address_or_an_unknown_option_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match=r"Sentinel|unknown option"):
        SentinelTarget.parse(url)


def test_a_sentinel_url_s_password_is_redacted_even_when_it_breaks_the_url() -> None:
    url = "redis+sentinel://app:secret@s1:26379,s2:26379/meetara/0"
    assert redact_url(url) == "redis+sentinel://app:***@s1:26379,s2:26379/meetara/0"
    broken = "redis+sentinel://app:s3cr/et@s1/meetara"  # an unescaped / ends the host part early
    assert redact_url(broken) == "redis+sentinel://***"
    with pytest.raises(ValueError) as info:
        SentinelTarget.parse(broken)
    assert "s3cr" not in str(info.value)


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, RedisSentinels]]:
    """A primary, its replica (caught up) and three Sentinels watching them."""
    primary = RedisServer(tmp_path / "primary")
    replica = RedisServer(tmp_path / "replica", replica_of=primary.port)
    sentinels: RedisSentinels | None = None
    try:
        replica.wait_replicating()
        sentinels = RedisSentinels(tmp_path, primary.port)
        yield primary, replica, sentinels
    finally:
        for server in (primary, replica):
            server.stop()
        if sentinels is not None:
            sentinels.stop()


async def wait_for_failover(sentinels: RedisSentinels, replica: RedisServer) -> None:
    with anyio.fail_after(FAILOVER_S):
        while sentinels.primary_port() != replica.port:
            await anyio.sleep(0.1)


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.timeout(300)
async def test_requests_written_before_the_primary_dies_are_served_once_after_failover(
    sentinel_group: tuple[RedisServer, RedisServer, RedisSentinels], namespace: str
) -> None:
    """Requests queued on the primary, which is then SIGKILLed: the promoted replica has every one."""
    primary, replica, sentinels = sentinel_group
    served: list[int] = []

    async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        assert isinstance(envelope.message, CallToolRequest)
        served.append(envelope.message.params.arguments["n"])
        return ResultResponse(id=envelope.message.id, result={"n": envelope.message.params.arguments["n"]})

    def request(n: int) -> CallToolRequest:
        return CallToolRequest(params=CallToolParams(name="work", arguments={"n": n}))

    options = fast_options(namespace)
    async with Bus(open_transport(sentinels.url()), options=options, sender="caller") as bus:
        with capture_logs() as logs:
            for n in range(20):  # nobody consumes yet: they wait in the worker's inbox
                await bus.send("worker", request(n))
        assert not [e for e in logs if e["log_level"] == "warning"]  # a replica acknowledged each write
        primary.kill()
        await wait_for_failover(sentinels, replica)

        async with Bus(open_transport(sentinels.url()), options=options, sender="worker") as worker:
            subscription = worker.subscribe("worker", handler, consumer="w1")
            async with anyio.create_task_group() as tg:
                await tg.start(subscription.run)
                with anyio.fail_after(FAILOVER_S):
                    while len(served) < 20:
                        await anyio.sleep(0.05)
                # The caller's own client follows the failover too: a new request gets its answer.
                reply = await bus.request("worker", request(20), timeout=FAILOVER_S)
                tg.cancel_scope.cancel()

    assert sorted(served) == list(range(21))  # every request once: none lost, none twice
    assert isinstance(reply, ResultResponse) and reply.result == {"n": 20}


@pytest.mark.anyio
@pytest.mark.redis
@pytest.mark.timeout(300)
@pytest.mark.parametrize("write", ["message", "completion"])
async def test_a_write_the_replica_does_not_acknowledge_is_reported_and_kept(
    sentinel_group: tuple[RedisServer, RedisServer, RedisSentinels], namespace: str, write: str
) -> None:
    """WAIT runs on the writer's own connection: a frozen replica leaves the write unacknowledged.

    A completion (result, reply, ack) waits too: lost in a failover, its request would run again."""
    _, replica, sentinels = sentinel_group
    transport = open_transport(sentinels.url())
    inbox, results = f"{namespace}:inbox", f"{namespace}:result"
    try:
        await transport.ensure_group(inbox, "g")
        entry = await transport.add(inbox, {b"n": b"1"}, maxlen=100)
        await transport.read_group(inbox, "g", "c", pending=False, count=1, block_ms=0)
        os.kill(replica.pid, signal.SIGSTOP)
        try:
            with capture_logs() as logs:
                if write == "message":
                    await transport.add(inbox, {b"n": b"2"}, maxlen=100)
                else:
                    await transport.complete(
                        inbox, "g", entry, result_key=results, result=b"done", result_ttl_ms=60_000,
                        reply_stream=f"{namespace}:replies", reply={b"r": b"1"}, reply_maxlen=100, reply_ttl_ms=60_000,
                    )  # fmt: skip
        finally:
            os.kill(replica.pid, signal.SIGCONT)
        # The primary has it all the same.
        if write == "message":
            assert await transport.length(inbox) == 2
        else:
            assert await transport.get(results) == b"done" and await transport.pending_count(inbox, "g") == 0
    finally:
        await transport.close()
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["write not acknowledged by a replica"]


def test_settings_refuse_a_malformed_sentinel_url_at_load_without_echoing_its_password() -> None:
    with pytest.raises(ValidationError) as info:
        Settings.load(bus_url="redis+sentinel://app:s3cret@s1:26379/")
    assert "names its service" in str(info.value) and "s3cret" not in str(info.value)
