"""Helpers shared by the test modules."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from bus import BusOptions


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process of the tests' own, on a free port."""

    def __init__(self, workdir: Path, *extra: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed; the redis tests need it (apt install redis-server)")
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *extra,
        ]
        self._proc: subprocess.Popen[bytes] | None = None
        self.password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._proc = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, password=self.password)
        for _ in range(200):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None


def fast_options(namespace: str, **overrides: object) -> BusOptions:
    """Timings short enough for tests, keeping the production ratios (heartbeat << reclaim)."""
    values: dict[str, object] = {
        "namespace": namespace,
        "reclaim_idle_ms": 400,
        "heartbeat_ms": 50,
        "block_ms": 100,
        "retry_base_ms": 50,
        "max_deliveries": 3,
    }
    values.update(overrides)
    return BusOptions.model_validate(values)
