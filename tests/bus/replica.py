"""A bus consumer process for the kill tests: ``python -m tests.bus.replica URL NS CONSUMER DIR SLEEP``.

Its handler writes ``DIR/<consumer>.<n>.started``, sleeps SLEEP seconds, writes ``.done``, answers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from bus import Bus, Delivery, open_transport
from protocol import CallToolRequest, Envelope, ResponseMessage, ResultResponse
from runtime.testing import fast_options


async def main(url: str, namespace: str, consumer: str, marker_dir: str, sleep: float) -> None:
    markers = Path(marker_dir)
    calls = 0

    async def handler(envelope: Envelope, delivery: Delivery) -> ResponseMessage | None:
        nonlocal calls
        calls += 1
        stem = f"{consumer}.{calls}"
        (markers / f"{stem}.started").write_text(str(delivery.deliveries))
        await anyio.sleep(sleep)
        (markers / f"{stem}.done").write_text("")
        assert isinstance(envelope.message, CallToolRequest)
        return ResultResponse(id=envelope.message.id, result={"consumer": consumer})

    async with Bus(open_transport(url), options=fast_options(namespace), sender=consumer) as bus:
        sub = bus.subscribe("worker", handler, consumer=consumer)
        (markers / f"{consumer}.ready").write_text("")
        await sub.run()


if __name__ == "__main__":
    url, namespace, consumer, marker_dir, sleep = sys.argv[1:6]
    anyio.run(main, url, namespace, consumer, marker_dir, float(sleep))
