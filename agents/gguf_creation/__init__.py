"""GGUF Creation: adapter GGUF, merged and quantized GGUF, metadata, versioned deployment."""

from agents.gguf_creation.agent import GgufCreationAgent

__all__ = ["GgufCreationAgent"]
