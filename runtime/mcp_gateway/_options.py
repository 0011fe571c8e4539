"""What the gateway is allowed to do, resolved once from ``Settings``."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import MeetaraError
from runtime._settings import Settings

__all__ = ["GatewayConfigError", "GatewayOptions"]


class GatewayConfigError(MeetaraError):
    """The gateway refuses to start with this configuration (e.g. HTTP off loopback without a token)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class GatewayOptions:
    """Gateway configuration; ``from_settings`` reads the ``MEETARA_MCP_*`` settings."""

    token: str | None = None
    """Bearer token HTTP clients must send; ``None``: no authentication (loopback only)."""
    allowed_hosts: tuple[str, ...] = ()
    """``Host`` headers accepted besides the gateway's own address."""
    allowed_origins: tuple[str, ...] = ()
    """Browser ``Origin`` headers accepted."""
    allow_destructive: bool = True
    """False hides and refuses every tool whose annotations say it is destructive."""
    disabled_tools: frozenset[str] = field(default_factory=frozenset)
    """MCP tool names hidden and refused."""
    call_timeout_s: float = 60.0
    """How long one agent tool call may take before the client gets an error result."""
    list_timeout_s: float = 10.0
    """How long one agent may take to list its tools; a slower agent is left out of the listing."""
    watch_interval_s: float = 5.0
    """How often a call following a job checks that a Conductor still drives it."""

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayOptions:
        token = settings.mcp_token.get_secret_value() if settings.mcp_token is not None else None
        return cls(
            token=token or None,
            allowed_hosts=tuple(settings.mcp_allowed_hosts),
            allowed_origins=tuple(settings.mcp_allowed_origins),
            allow_destructive=settings.mcp_allow_destructive,
            disabled_tools=frozenset(settings.mcp_disabled_tools),
            call_timeout_s=settings.request_timeout_s,
            list_timeout_s=min(settings.request_timeout_s, 10.0),
            watch_interval_s=settings.liveness_ttl_s / 3,
        )
