"""A deliberately busy machine: processes that spin on every core for as long as a test runs."""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType

__all__ = ["CpuHog"]


class CpuHog:
    """``processes`` busy loops (default: one per core) at normal priority, as other work on a shared host.

    A test that passes beside them does not depend on an idle machine: every agent, the broker and
    the test itself get about half the CPU they would get alone on a 2-core host.
    """

    def __init__(self, processes: int | None = None) -> None:
        self.processes = (os.cpu_count() or 1) if processes is None else processes
        self._procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuHog:
        # A loop that ends once its parent is gone: a test process killed outright (a crashed
        # pytest worker, a CI timeout) must not leave cores spinning under the rest of the suite.
        loop = f"import os\nwhile os.getppid() == {os.getpid()}: pass"
        for _ in range(self.processes):
            self._procs.append(subprocess.Popen([sys.executable, "-S", "-c", loop]))
        return self

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for proc in self._procs:
            proc.kill()
        for proc in self._procs:
            proc.wait()
        self._procs.clear()
