"""Logs: one JSON object per line off a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import structlog

from runtime import configure_logging
from runtime.testing import log_events

ROOT = Path(__file__).resolve().parents[2]


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


_WRITER = """
import pathlib, time
import structlog
from runtime import configure_logging
configure_logging(format="json")
log = structlog.get_logger("w")
pathlib.Path({ready!r}).touch()
while not pathlib.Path({go!r}).exists():  # every writer begins at once, after its imports
    time.sleep(0.001)
for i in range(3000):
    log.info("line", writer={w}, i=i)
"""


def test_processes_sharing_one_stderr_write_whole_lines(tmp_path: Path) -> None:
    """`meetara up`'s agents share its stderr; unbuffered (containers set PYTHONUNBUFFERED), a line
    written as message then newline would interleave with another process's line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "shared.log"
    go = tmp_path / "go"
    with open(log, "w") as sink:
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER.format(w=w, ready=str(tmp_path / f"ready{w}"), go=str(go))],
                stderr=sink,
                env=env,
                cwd=ROOT,
            )
            for w in range(3)
        ]
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{w}").exists() for w in range(3)):
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.05)
        go.touch()
        for writer in writers:
            assert writer.wait(120) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((e["writer"], e["i"]) for e in lines) == [(w, i) for w in range(3) for i in range(3000)]


def test_log_events_are_found_after_other_output_on_their_line() -> None:
    text = '┃ table ┃\n....{"event": "a", "n": 1}{"event": "b"}\n{"not": "an event"}\n{"event": "c", broken\n'
    assert log_events(text) == [{"event": "a", "n": 1}, {"event": "b"}]
