"""Knowledge Transfer: which trained domain a new one should warm-start from."""

from agents.knowledge_transfer.agent import KnowledgeTransferAgent

__all__ = ["KnowledgeTransferAgent"]
