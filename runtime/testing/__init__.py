"""Support for tests and benchmarks of a swarm: a throwaway redis-server, fast bus timings, and a
swarm of agent processes with fault hooks that can be killed, restarted and inspected, and a CPU
hog that makes the machine busy while they run.

Shipped with the runtime (as web frameworks ship a test client) so that the test suite and the
benchmarks share one harness.
"""

from runtime.testing._cpu_hog import CpuHog
from runtime.testing._log_events import log_events
from runtime.testing._process_swarm import AGENTS, PARENT_PID_ENV, START_DELAY_ENV, ProcessSwarm
from runtime.testing._redis_server import RedisSentinels, RedisServer, TlsFiles, fast_options, free_port, make_tls

__all__ = [
    "AGENTS",
    "CpuHog",
    "PARENT_PID_ENV",
    "ProcessSwarm",
    "RedisSentinels",
    "RedisServer",
    "START_DELAY_ENV",
    "TlsFiles",
    "fast_options",
    "free_port",
    "log_events",
    "make_tls",
]
