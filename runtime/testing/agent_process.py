"""One agent as a process, with fault hooks: ``python -m runtime.testing.agent_process NAME MARKER_DIR``.

Runs like ``meetara agent NAME`` (settings from the environment), but every tool call of the agent
records what happened in MARKER_DIR, so a test can count side effects and stop a process at a
chosen point of a step:

- ``{agent}.{tool}.started.{uuid}`` before the tool runs, ``{agent}.{tool}.done.{uuid}`` after it
  returned (the file holds the call's idempotency key).
- If ``hold-before.{agent}.{tool}`` (or ``hold-after…``) exists, the call writes
  ``held.{agent}.{tool}`` at that point and waits there forever: the test SIGKILLs the process
  with the step half done (before its work, or after its work but before its reply). A hold
  file that says ``once`` holds one call only: the agent hangs on that call and serves the rest.
- ``MEETARA_TEST_START_DELAY_S`` in the environment holds the process that long before it joins.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio

from runtime import Agent, AgentHost, Settings, configure_logging, connect, load_agent_class, stop_on_signal
from runtime.testing._process_swarm import PARENT_PID_ENV, START_DELAY_ENV


def with_fault_hooks(klass: type[Agent], markers: Path) -> type[Agent]:
    """A subclass whose tools mark their start and end and can be held at either."""

    def hooked(tool: str, original: Any) -> Any:
        label = f"{klass.name}.{tool}"

        async def hold(point: str) -> None:
            request = markers / f"hold-{point}.{label}"
            if request.exists():
                if request.read_text() == "once":
                    request.unlink()
                (markers / f"held.{label}").write_text(point)
                await anyio.sleep_forever()

        async def method(self: Agent, *args: Any) -> Any:
            key = args[1].envelope.meta.idempotency_key if len(args) > 1 else None
            (markers / f"{label}.started.{uuid.uuid4().hex}").write_text(str(key))
            await hold("before")
            result = await original(self, *args)
            (markers / f"{label}.done.{uuid.uuid4().hex}").write_text(str(key))
            await hold("after")
            return result

        return method

    overrides = {t.method_name: hooked(t.name, getattr(klass, t.method_name)) for t in klass.tools}
    return type(f"Faulty{klass.__name__}", (klass,), overrides)


async def _exit_with_parent() -> None:
    """Exit once the test that started this process is gone (a crashed or killed pytest worker):
    an orphaned agent would go on taking work and CPU under the rest of the suite."""
    parent = int(os.environ.get(PARENT_PID_ENV) or os.getppid())
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells a process its parent died
        await anyio.sleep(1)
    os._exit(1)


async def main(name: str, markers: Path) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(_exit_with_parent)
        await _serve(name, markers)
        tg.cancel_scope.cancel()


async def _serve(name: str, markers: Path) -> None:
    await anyio.sleep(float(os.environ.get(START_DELAY_ENV) or 0))
    settings = Settings.load()
    configure_logging(format=settings.log_format, level=settings.log_level)
    klass = with_fault_hooks(load_agent_class(name), markers)
    async with connect(settings, sender=name) as bus:
        host = AgentHost(bus, [klass], settings=settings)
        await bus.start_task(stop_on_signal, host.stop)
        async with anyio.create_task_group() as tg:
            await tg.start(host.run)
            # Written once the agent consumes and its presence is announced: a test that waits for
            # it never mistakes a killed predecessor's unexpired presence for this process.
            (markers / f"ready.{name}.{settings.instance_id}").write_text("")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], Path(sys.argv[2]))
