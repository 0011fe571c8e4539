"""The Conductor's job settings (``configs/jobs.yaml``, or the same file in the catalogue folder)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from protocol.agents.data_generation import GeneratorName, TeacherSettings
from runtime import load_config

__all__ = ["CpuDefault", "DataDefaults", "JobSettings", "load_job_settings"]


class DataDefaults(BaseModel):
    """Who writes a job's training data unless the job says otherwise."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    generator: GeneratorName = "compositional"
    teacher: TeacherSettings = Field(default_factory=TeacherSettings)
    """Teacher settings a job's own ``teacher`` fields override (an endpoint, its model, prices)."""


class CpuDefault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    samples: int = Field(gt=0)
    """Conversations of a one-domain job; a job over several domains shares them out."""
    min_samples_per_domain: int = Field(gt=0)
    max_steps: int = Field(gt=0)
    effective_batch: int = Field(gt=0)
    learning_rate: float = Field(gt=0)
    crisis_weight: int = Field(ge=1, le=20)
    opening_weight: float = Field(ge=1, le=100)
    decision_weight: float = Field(ge=0, le=100)
    decision_prompts: int = Field(ge=2, le=4096)
    crisis_fraction: float = Field(ge=0, le=0.5)


class JobSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    retries: int = Field(ge=1, le=20)
    backoff_s: float = Field(ge=0)
    step_timeout_s: dict[str, float]
    agent_wait_s: dict[str, float]
    """Per step: how long it waits for a live instance of its agent before the job fails (``default``: the rest)."""
    min_data_pass_rate: float = Field(ge=0, le=1)
    budget_check_s: float = Field(gt=0)
    cpu_default: CpuDefault
    data: DataDefaults = Field(default_factory=DataDefaults)
    batch_jobs_per_gpu: int = Field(default=2, ge=1, le=64)
    """Jobs of one batch running at once per live GPU Optimization instance (one trains while the
    next generates its data); the rest wait as ``queued``."""

    def wait_for_agent_s(self, step: str | None = None) -> float:
        """How long ``step`` (or a call outside any step) waits for its agent to be live or back."""
        default = self.agent_wait_s.get("default", 900.0)
        return self.agent_wait_s.get(step, default) if step else default


def load_job_settings(directory: Path | None = None) -> JobSettings:
    return load_config(JobSettings, directory, "jobs.yaml")
