"""Tool models of the Conductor agent."""

from __future__ import annotations

from pydantic import Field

from protocol._base import ToolModel

__all__ = ["DescribeDomainInput", "DomainInfo", "ListDomainsInput", "ListDomainsOutput"]


class ListDomainsInput(ToolModel):
    """Arguments of ``conductor.list_domains``."""

    category: str | None = Field(default=None, max_length=64)
    """Only domains of this category; all 62 when absent."""


class DomainInfo(ToolModel):
    """One domain of the catalogue."""

    name: str
    """Domain name, as used in jobs and file names."""
    category: str
    """The category it belongs to."""
    description: str
    """What conversations in this domain are about."""
    scope: str
    """The subjects it covers."""
    quality_target: float
    """Minimum model-QA score (percent) for deployment."""
    crisis_safety: bool
    """Whether data and models must handle crisis messages by pointing to real help."""


class ListDomainsOutput(ToolModel):
    """Result of ``conductor.list_domains``."""

    domains: list[DomainInfo]
    """Matching domains, grouped by category in catalogue order."""
    categories: list[str]
    """Every category name."""


class DescribeDomainInput(ToolModel):
    """Arguments of ``conductor.describe_domain``."""

    name: str = Field(min_length=1, max_length=64)
    """Domain name; unknown names get an error with close matches."""
