"""The Conductor's typed tool surface."""

from __future__ import annotations

from protocol.agents.conductor import (
    DescribeDomainInput,
    DomainInfo,
    ListDomainsInput,
    ListDomainsOutput,
)
from runtime import Agent, Domain, tool


def _info(domain: Domain) -> DomainInfo:
    return DomainInfo(
        name=domain.name,
        category=domain.category,
        description=domain.description,
        scope=domain.scope,
        quality_target=domain.quality_target,
        crisis_safety=domain.crisis_safety,
    )


class ConductorAgent(Agent):
    """Validates what users ask for against the catalogue and drives jobs through the agents."""

    name = "conductor"
    description = "Job intake: the domain catalogue and (later) the job state machine."

    @tool(read_only=True)
    async def list_domains(self, params: ListDomainsInput) -> ListDomainsOutput:
        """List the trainable domains, optionally of one category, with their quality targets."""
        if params.category is None:
            domains = list(self.ctx.catalog.domains.values())
        else:
            category = self.ctx.catalog.category(params.category)
            domains = [self.ctx.catalog.domains[d] for d in category.domains]
        return ListDomainsOutput(domains=[_info(d) for d in domains], categories=list(self.ctx.catalog.categories))

    @tool(read_only=True)
    async def describe_domain(self, params: DescribeDomainInput) -> DomainInfo:
        """Describe one domain; an unknown name fails with the closest valid names."""
        return _info(self.ctx.catalog.domain(params.name))
