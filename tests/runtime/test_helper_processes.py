"""Test helper processes (the CPU hog, chaos agents) never outlive the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from runtime.testing import PARENT_PID_ENV, START_DELAY_ENV

HOLDER = """
import time
from runtime.testing import CpuHog
with CpuHog(2) as hog:
    print(*hog.pids, flush=True)
    time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of ours stays a zombie until reaped; a zombie spins nothing.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_the_busy_loops_end_when_their_parent_is_killed_outright() -> None:
    with subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        pids = [int(pid) for pid in holder.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(pid) for pid in pids)
        holder.send_signal(signal.SIGKILL)  # no __exit__ runs: as a crashed pytest worker
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"busy loops {pids} outlived their parent"
        time.sleep(0.1)


AGENT_HOLDER = f"""
import os, subprocess, sys, time
# As ProcessSwarm starts it; the start delay keeps it alive without a broker.
env = {{**os.environ, "{START_DELAY_ENV}": "600", "{PARENT_PID_ENV}": str(os.getpid())}}
agent = subprocess.Popen([sys.executable, "-m", "runtime.testing.agent_process", "conductor", sys.argv[1]], env=env)
print(agent.pid, flush=True)
time.sleep(600)
"""


def test_a_chaos_agent_process_exits_when_the_test_that_started_it_is_killed(tmp_path: Path) -> None:
    command = [sys.executable, "-c", AGENT_HOLDER, str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        (pid,) = [int(pid) for pid in holder.stdout.readline().split()]
        assert _alive(pid)
        holder.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 120
    while _alive(pid):
        assert time.monotonic() < deadline, f"agent process {pid} outlived the test process that started it"
        time.sleep(0.1)
