"""Fixtures of the agent tests: fresh scripts for the fake agents, and embedded-swarm settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime import Settings
from tests.agents.fake_agents import Fake, Script


@pytest.fixture
def script() -> Iterator[Script]:
    """What the fake agents answer (a fresh one per test); training is released at the end."""
    Fake.script = Script()
    yield Fake.script
    Fake.script.hold_training = False


@pytest.fixture
def settings(settings_factory, memory_url: str) -> Settings:  # type: ignore[no-untyped-def]
    return settings_factory(memory_url)  # type: ignore[no-any-return]
