"""A swarm of agent processes the chaos tests can kill, restart and inspect (see ``runtime.testing.agent_process``)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["AGENTS", "PARENT_PID_ENV", "START_DELAY_ENV", "ProcessSwarm"]

START_DELAY_ENV = "MEETARA_TEST_START_DELAY_S"
"""Seconds an agent process waits before it joins: a container restart that is slow (image pull, GPU reset)."""
PARENT_PID_ENV = "MEETARA_TEST_PARENT_PID"
"""The test process an agent process exits with (it may die before the child could ask for its parent)."""

AGENTS = (
    "conductor",
    "cost_monitor",
    "data_generation",
    "gguf_creation",
    "gpu_optimization",
    "knowledge_transfer",
    "quality_assurance",
)


class ProcessSwarm:
    """One process per agent, each with a stable instance id (as ``meetara up`` gives its children)."""

    def __init__(
        self,
        env: dict[str, str],
        folder: Path,
        agents: tuple[str, ...] = AGENTS,
        *,
        agent_env: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        self.env = env
        self.agent_env = agent_env or {}
        """Per agent, what its environment sets differently (e.g. its own data folder: another host)."""
        self.markers = folder / "markers"
        self.logs = folder / "logs"
        self.markers.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.agents = agents
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = dict.fromkeys(agents, 0)

    def __enter__(self) -> ProcessSwarm:
        for name in self.agents:
            self.start(name)
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(
        self, name: str, *, file_size_limit: int | None = None, start_delay_s: float = 0.0, container: bool = False
    ) -> None:
        """Start ``name``; ``file_size_limit`` makes every file it writes stop at that many bytes;
        ``start_delay_s`` holds the process that long before it joins (a slow container restart);
        ``container`` starts it as a Compose container does: ``meetara agent NAME`` under a new
        instance id each time, without fault hooks or a ready marker.

        The limit (RLIMIT_FSIZE, with SIGXFSZ ignored) fails writes past it with EFBIG, as a full
        disk fails them with ENOSPC: the same kind of refusal, without a real disk to fill.
        """

        def limit_file_size() -> None:
            if file_size_limit is not None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        self.starts[name] = self.starts.get(name, 0) + 1
        base = {**self.env, **self.agent_env.get(name, {})}
        if container:
            env = {k: v for k, v in base.items() if k != "MEETARA_INSTANCE_ID"}
            command = ["-m", "runtime.cli", "agent", name]
        else:
            env = {
                **base,
                "MEETARA_INSTANCE_ID": f"chaos-{name}",
                START_DELAY_ENV: str(start_delay_s),
                PARENT_PID_ENV: str(os.getpid()),
            }
            command = ["-m", "runtime.testing.agent_process", name, str(self.markers)]
        with open(self.logs / f"{name}.{self.starts[name]}.log", "wb") as log:  # a file: a full pipe would block it
            self.procs[name] = subprocess.Popen(
                [sys.executable, *command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=limit_file_size,
            )

    def wait_ready(self, *names: str, timeout: float = 300.0) -> None:
        """Each of ``names`` (default: every agent) is consuming and has announced its presence."""
        deadline = time.monotonic() + timeout
        for name in names or self.agents:
            while not (self.markers / f"ready.{name}.chaos-{name}").exists():
                code = self.procs[name].poll()
                if code is not None:
                    raise AssertionError(f"{name} exited with {code}:\n{self.log_tail(name)}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{name} did not start:\n{self.log_tail(name)}")
                time.sleep(0.05)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no release of in-flight work."""
        proc = self.procs[name]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        (self.markers / f"ready.{name}.chaos-{name}").unlink(missing_ok=True)

    def restart(self, name: str, *, file_size_limit: int | None = None, start_delay_s: float = 0.0) -> None:
        self.kill(name)
        self.start(name, file_size_limit=file_size_limit, start_delay_s=start_delay_s)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    # -- fault points -----------------------------------------------------------------------
    def hold(self, point: str, label: str, *, once: bool = False) -> None:
        """Calls of ``label`` (``agent.tool``) stop at ``point`` (before/after their work) until released.

        ``once``: only the next call stops (and hangs there); later calls run normally.
        """
        (self.markers / f"hold-{point}.{label}").write_text("once" if once else "")

    def held(self) -> list[str]:
        """Labels of calls waiting at a hold point now."""
        return sorted(p.name.removeprefix("held.") for p in self.markers.glob("held.*"))

    def release_hold(self, label: str) -> None:
        for path in self.markers.glob(f"hold-*.{label}"):
            path.unlink()
        (self.markers / f"held.{label}").unlink(missing_ok=True)

    def calls(self, label: str, what: str = "done") -> list[str]:
        """Idempotency keys of the calls of ``label`` that started / finished their work."""
        return [p.read_text() for p in self.markers.glob(f"{label}.{what}.*")]

    def log_text(self, name: str) -> str:
        """Everything every process of ``name`` logged, oldest first."""
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.logs.glob(f"{name}.*.log")))

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return self.log_text(name)[-chars:]
