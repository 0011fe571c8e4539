"""Logs: one JSON object per line off a terminal."""

from __future__ import annotations

import io
import json
import logging

import structlog

from runtime import configure_logging


def test_json_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging(format="auto", level="info", stream=stream)
    structlog.get_logger("t").info("hello", job_id="j1")
    structlog.get_logger("t").debug("hidden")
    logging.getLogger("third.party").warning("from stdlib")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["event"] == "hello" and lines[0]["job_id"] == "j1" and lines[0]["level"] == "info"
    assert "timestamp" in lines[0]
    assert lines[1]["event"] == "from stdlib" and lines[1]["level"] == "warning"
    assert len(lines) == 2


def test_console_format_is_human_readable() -> None:
    stream = io.StringIO()
    configure_logging(format="console", level="debug", stream=stream)
    structlog.get_logger("t").debug("hello", n=1)
    text = stream.getvalue()
    assert "hello" in text and "n=1" in text and not text.startswith("{")
