"""Redis-only faults: a consumer process SIGKILLed mid-handler, credentials, an unreachable server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from bus import Bus, open_transport
from bus._redis._connection import redact_url
from protocol import CallToolParams, CallToolRequest, ResponseMessage, ResultResponse, Unavailable
from runtime.testing import RedisServer, fast_options, free_port, make_tls

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

ROOT = Path(__file__).resolve().parents[2]


def spawn_replica(url: str, namespace: str, consumer: str, markers: Path, sleep: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.bus.replica", url, namespace, consumer, str(markers), str(sleep)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_for(path: Path, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while not path.exists():
            await anyio.sleep(0.02)


async def test_sigkilled_consumer_mid_handler_is_finished_by_another_replica_exactly_once(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    victim = spawn_replica(redis_url, namespace, "victim", tmp_path, sleep=3600)
    survivor: subprocess.Popen[bytes] | None = None
    try:
        await wait_for(tmp_path / "victim.ready")
        async with Bus(open_transport(redis_url), options=fast_options(namespace), sender="caller") as bus:
            result: list[ResponseMessage] = []

            async def ask() -> None:
                request = CallToolRequest(params=CallToolParams(name="work", arguments={}))
                result.append(await bus.request("worker", request, timeout=30))

            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                await wait_for(tmp_path / "victim.1.started")
                victim.send_signal(signal.SIGKILL)
                victim.wait(10)
                survivor = spawn_replica(redis_url, namespace, "survivor", tmp_path, sleep=0.1)
            reply_stream = bus.keys.stream(bus._replies.logical_stream)
            replies = await bus.transport.length(reply_stream)
            pending = await bus.transport.pending_count(bus.keys.inbox("worker"), "worker")
    finally:
        for proc in (victim, survivor):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert isinstance(result[0], ResultResponse)
    assert result[0].result == {"consumer": "survivor"}
    assert replies == 1, "exactly one result must come back"
    assert pending == 0
    assert not (tmp_path / "victim.1.done").exists()
    assert (tmp_path / "survivor.1.started").read_text() == "2"  # second delivery
    assert not (tmp_path / "survivor.2.started").exists()  # and it ran there once


async def test_password_protected_redis(tmp_path: Path, namespace: str) -> None:
    server = RedisServer(tmp_path / "auth", password="s3cret")
    try:
        async with Bus(open_transport(server.url), options=fast_options(namespace)) as bus:
            await bus.put_presence("x", b"1", ttl_ms=1000)
            assert await bus.presence() == {"x": b"1"}
        wrong = f"redis://:nope@127.0.0.1:{server.port}/0"
        with pytest.raises(Unavailable) as info:
            async with Bus(open_transport(wrong), options=fast_options(namespace)):
                pass
        assert "nope" not in info.value.message
        assert f"redis://:***@127.0.0.1:{server.port}/0" in info.value.message
    finally:
        server.stop()


async def test_tls_with_an_acl_user(tmp_path: Path, namespace: str) -> None:
    server = RedisServer(tmp_path / "tls-redis", user=("meetara", "s3cret"), tls=make_tls(tmp_path / "tls"))
    try:
        async with Bus(open_transport(server.url), options=fast_options(namespace)) as bus:
            await bus.put_presence("x", b"1", ttl_ms=1000)
            assert await bus.presence() == {"x": b"1"}
        plain = f"redis://meetara:s3cret@127.0.0.1:{server.port}/0"  # TLS port, plain client: refused
        with pytest.raises(Unavailable, match="cannot reach Redis"):
            async with Bus(open_transport(plain), options=fast_options(namespace)):
                pass
    finally:
        server.stop()


async def test_unreachable_redis_is_one_clear_error_naming_the_url(namespace: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(Unavailable, match=f"cannot reach Redis at {url}"):
        async with Bus(open_transport(url), options=fast_options(namespace)):
            pass


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://:pw@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("rediss://user:pw@cache.example:6380/1", "rediss://user:***@cache.example:6380/1"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted


def test_tls_url_gives_a_tls_connection() -> None:
    from bus._redis._connection import open_client

    client = open_client("rediss://user:pw@cache.example:6380/1?ssl_cert_reqs=required")
    kwargs = client.connection_pool.connection_kwargs
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert kwargs["username"] == "user" and kwargs["password"] == "pw" and kwargs["db"] == 1
