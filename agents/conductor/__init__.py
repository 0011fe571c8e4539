"""Conductor: job intake and the job state machine."""

from agents.conductor.agent import ConductorAgent

__all__ = ["ConductorAgent"]
