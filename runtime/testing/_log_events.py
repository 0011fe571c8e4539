"""The structured events in a process's log, which may also hold other output."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["log_events"]

_DECODER = json.JSONDecoder()


def log_events(text: str) -> list[dict[str, Any]]:
    """Every JSON log event in ``text``, in order.

    A log shared by several processes also carries tables and C libraries' prints, which can
    leave a partial line before an event: events are found where they start, not only at line starts.
    """
    events: list[dict[str, Any]] = []
    for line in text.splitlines():
        at = line.find('{"')
        while at != -1:
            try:
                event, end = _DECODER.raw_decode(line, at)
            except json.JSONDecodeError:
                end = at + 1
            else:
                if isinstance(event, dict) and "event" in event:
                    events.append(event)
            at = line.find('{"', end)
    return events
