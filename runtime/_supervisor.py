"""``meetara up``: every agent as a local subprocess, restarted if it dies, stopped together."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

import anyio
import anyio.abc
import structlog

from protocol import AgentInstance, Unavailable
from runtime._liveness import LivenessRegistry
from runtime._settings import Settings
from runtime._swarm import connect

__all__ = ["Supervisor"]

log = structlog.get_logger("runtime.supervisor")


class Supervisor:
    """Runs ``counts[name]`` processes of each agent until SIGINT/SIGTERM."""

    def __init__(self, settings: Settings, counts: dict[str, int], *, env: dict[str, str], python: str) -> None:
        self._settings = settings
        self._counts = counts
        self._env = env
        self._python = python
        self._procs: dict[tuple[str, int], anyio.abc.Process] = {}
        self._stopping = False

    async def run(self, *, ready_timeout: float, on_ready: Callable[[list[AgentInstance]], None]) -> None:
        async with anyio.create_task_group() as tg:
            for name, n in self._counts.items():
                for i in range(n):
                    tg.start_soon(self._keep_running, name, i)
            on_ready(await self._wait_ready(ready_timeout))
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("stopping the swarm", signal=signal.Signals(signum).name)
                    break
            await self.stop()
            tg.cancel_scope.cancel()

    async def _wait_ready(self, timeout: float) -> list[AgentInstance]:
        async with connect(self._settings, sender="supervisor") as bus:
            registry = LivenessRegistry(bus)
            with anyio.move_on_after(timeout):
                while True:
                    live = await registry.instances()
                    have = {name: sum(i.name == name for i in live) for name in self._counts}
                    if all(have[n] >= c for n, c in self._counts.items()):
                        return live
                    await anyio.sleep(0.2)
            missing = sorted(n for n, c in self._counts.items() if have[n] < c)
            await self.stop()
            raise Unavailable(f"agents did not register within {timeout:g}s: {', '.join(missing)}")

    async def _keep_running(self, name: str, index: int) -> None:
        backoff = 1.0
        # Stable across restarts of this child, unique across supervisors: a restarted agent drains
        # its own pending messages at once and takes back its own leases, instead of waiting for
        # them to be reclaimed as a dead consumer's.
        env = {**self._env, "MEETARA_INSTANCE_ID": f"{socket.gethostname()}-{os.getpid()}-{name}-{index}"}
        # The agents share this host's cores: torch's OpenMP threads sleep when idle instead of
        # spinning on a core another agent needs (unless the caller chose otherwise).
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        while not self._stopping:
            proc = await anyio.open_process(
                [self._python, "-m", "runtime.cli", "agent", name], env=env, stdout=None, stderr=None
            )
            self._procs[(name, index)] = proc
            if self._stopping:  # a restart that raced stop(): stop() may not have seen this process
                proc.terminate()
            code = await proc.wait()
            if self._stopping:
                if code != 0:  # a graceful stop exits 0; anything else lost the agent's last words
                    log.warning("agent process ended badly while stopping", agent=name, code=code)
                return
            log.error("agent process exited; restarting", agent=name, code=code, in_s=backoff)
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        """SIGTERM every child, give them the shutdown grace, then SIGKILL what is left."""
        self._stopping = True
        for proc in self._procs.values():
            if proc.returncode is None:
                proc.terminate()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._settings.shutdown_grace_s + 10):
                for proc in list(self._procs.values()):
                    await proc.wait()
            # Read again: a child restarting when the stop began is registered only once it started.
            for proc in list(self._procs.values()):
                if proc.returncode is None:
                    log.warning("killing agent that did not stop", pid=proc.pid)
                    proc.kill()
                    await proc.wait()
