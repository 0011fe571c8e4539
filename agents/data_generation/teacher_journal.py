"""Teacher completions already paid for, kept on disk: an interrupted generation never asks twice.

One JSONL file per domain and teacher, one line per answered request, keyed by a hash of the whole
request (messages, sampling settings, seed, schema). Each line is appended with one ``write`` on
an ``O_APPEND`` descriptor and synced, so a crash loses at most the line being written; a torn
last line is cut off when the journal is opened again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from agents.data_generation.teacher_client import Completion

__all__ = ["TeacherJournal", "request_key"]


def request_key(identity: str, request: dict[str, Any]) -> str:
    """A stable hash of one request to one teacher (``identity``: its URL and model, or its file)."""
    blob = json.dumps({"teacher": identity, **request}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class TeacherJournal:
    """Answered requests by key, read at start and appended to as answers arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, Completion] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            self._load()
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a crash mid-append: drop the torn line so the next append starts clean
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
                self._entries[record["key"]] = Completion(
                    record["text"], int(record["prompt_tokens"]), int(record["completion_tokens"])
                )
            except (ValueError, KeyError, TypeError):
                continue

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Completion | None:
        return self._entries.get(key)

    def add(self, key: str, completion: Completion) -> None:
        record = {
            "key": key,
            "text": completion.text,
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
        }
        os.write(self._fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        os.fsync(self._fd)
        self._entries[key] = completion

    def close(self) -> None:
        os.close(self._fd)
