"""Settings of a benchmark's embedded swarm: bus, artifacts, data and models under one scratch folder."""

from __future__ import annotations

import uuid
from pathlib import Path

from runtime import Settings

DAY_S = 24 * 3600.0
"""Benchmarks wait for long calls (a whole training run) rather than time out."""


def embedded_settings(root: Path, name: str) -> Settings:
    return Settings(
        bus_url=f"memory://{name}-{uuid.uuid4().hex}",
        artifact_url=str(root / "artifacts"),
        data_dir=root / "data",
        models_dir=root / "models",
        model_cache_dir=root / "model-cache",
        request_timeout_s=DAY_S,
    )
