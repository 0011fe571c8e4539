"""Shared fixtures: a private redis-server per session, per-test namespaces, buses on both backends."""

from __future__ import annotations

import os

# Before anything loads torch (libgomp reads it once): the pytest workers and the processes they
# start share two cores, and OpenMP threads that spin while idle take a core the other worker's
# torch needs. Measured on 2 cores, MiniLM in two processes at once: 35 -> 47 texts/s together.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from xdist.scheduler import LoadScopeScheduling

from agents.testing import build_tiny_gguf
from agents.text.crisis import default_detector
from bus import Bus, MemoryBroker, open_transport
from runtime import Settings
from runtime.testing import RedisServer, fast_options


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def bus_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh broker URL on each backend."""
    if request.param == "memory":
        name = uuid.uuid4().hex
        yield f"memory://{name}"
        MemoryBroker.drop(name)
    else:
        yield request.getfixturevalue("redis_url")


@pytest.fixture
async def bus(bus_url: str, namespace: str) -> AsyncIterator[Bus]:
    async with Bus(open_transport(bus_url), options=fast_options(namespace), sender="test") as b:
        yield b


@pytest.fixture
def memory_url() -> Iterator[str]:
    name = uuid.uuid4().hex
    yield f"memory://{name}"
    MemoryBroker.drop(name)


@pytest.fixture
def settings_factory(tmp_path: Path, namespace: str):  # type: ignore[no-untyped-def]
    """Settings for an in-test swarm on a given bus URL."""

    def make(bus_url: str, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "bus_url": bus_url,
            "bus": fast_options(namespace),
            "artifact_url": str(tmp_path / "artifacts"),
            "data_dir": tmp_path / "data",
            "models_dir": tmp_path / "models",
            # Refreshed every 2 s: the event loop of a loaded 2-core machine (CPU hogs of the chaos
            # tests, torch threads) can stall for seconds, and a 2 s TTL then let a live agent lapse.
            "liveness_ttl_s": 6.0,
            "shutdown_grace_s": 2.0,
            # A horizon, not a speed test: loading MiniLM or torch takes seconds on a busy machine.
            "request_timeout_s": 120.0,
        }
        values.update(overrides)
        return Settings.load(**values)

    return make


@pytest.fixture
def child_env(redis_url: str, namespace: str, tmp_path: Path) -> dict[str, str]:
    """Environment for `meetara` subprocesses talking to the test Redis."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    env.update(
        MEETARA_BUS_URL=redis_url,
        MEETARA_BUS__NAMESPACE=namespace,
        MEETARA_BUS__RECLAIM_IDLE_MS="400",
        MEETARA_BUS__HEARTBEAT_MS="50",
        MEETARA_BUS__BLOCK_MS="100",
        MEETARA_LIVENESS_TTL_S="2",
        MEETARA_SHUTDOWN_GRACE_S="3",
        MEETARA_ARTIFACT_URL=str(tmp_path / "artifacts"),
        MEETARA_LOG_FORMAT="json",
    )
    return env


class _ChaosOnOneWorker(LoadScopeScheduling):
    """pytest-xdist's load scheduling, except that the chaos tests form one unit of work: each spins
    a CPU hog on every core, so they run one after another on one worker while the others take the
    rest of the suite (which is then as busy as they are)."""

    def _split_scope(self, nodeid: str) -> str:
        return "tests/chaos" if nodeid.startswith("tests/chaos/") else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LoadScopeScheduling | None:
    return _ChaosOnOneWorker(config, log) if config.getvalue("dist") == "load" else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The long tests first (the order is stable otherwise): under pytest-xdist, a worker that is
    # free picks up short tests at the end instead of waiting on one that started last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@contextmanager
def _shared(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder of this run that every pytest-xdist worker shares, held under a lock while the caller
    fills it: what one worker built, the others reuse."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield tmp_path_factory.mktemp(name)
        return
    folder = tmp_path_factory.getbasetemp().parent / name  # the run's folder, above each worker's own
    with FileLock(f"{folder}.lock"):
        folder.mkdir(exist_ok=True)
        yield folder


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer llama with random weights as GGUF: the model of every model test."""
    with _shared(tmp_path_factory, "tiny") as folder:
        path = folder / "tiny-llama.gguf"
        if not path.exists():
            build_tiny_gguf(path)
    return path


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One conversion cache for the run: the tiny base is converted once (agents share it safely)."""
    with _shared(tmp_path_factory, "model-cache") as folder:
        return folder


@pytest.fixture(scope="session")
def crisis_cache(model_cache: Path) -> Path:
    """The crisis detector's embeddings and threshold, computed once for the session's agents.

    A deployment keeps them in its model cache across restarts. Without it every agent process that
    filters data or checks a model embeds a few thousand training texts and cross-validates a
    threshold first: 30 s on an idle 2-core machine, minutes inside a chaos test's hog.
    """
    with FileLock(f"{model_cache}.crisis.lock"):  # one worker computes, the others read its cache
        default_detector(cache_dir=model_cache)
    return model_cache
