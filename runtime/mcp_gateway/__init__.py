"""The MCP gateway: the swarm's agents as MCP tools and resources for LLM clients.

``Gateway`` wraps a ``SwarmClient`` in the MCP SDK's low-level server: its tool list is the live
agents' own typed tools (``{agent}_{tool}``) plus the gateway's ``swarm_*`` tools (whole jobs with
progress, live agents, dead letters); job reports and the models manifest are resources. Serve it
over stdio (``serve_stdio``) or streamable HTTP behind a bearer token (``HttpGateway``).
"""

from runtime.mcp_gateway._catalogue import Route, ToolCatalogue, mcp_tool
from runtime.mcp_gateway._http import (
    HttpGateway,
    HttpServer,
    StaticTokenVerifier,
    build_http_app,
    check_http_binding,
    parse_host_port,
    transport_security,
)
from runtime.mcp_gateway._options import GatewayConfigError, GatewayOptions
from runtime.mcp_gateway._progress import JobProgress
from runtime.mcp_gateway._resources import MANIFEST_URI, REPORT_TEMPLATE
from runtime.mcp_gateway._server import Gateway, serve_stdio
from runtime.mcp_gateway._swarm_tools import SWARM, SWARM_TOOLS, DeadLetterInfo, dead_letters

__all__ = [
    "MANIFEST_URI",
    "REPORT_TEMPLATE",
    "SWARM",
    "SWARM_TOOLS",
    "DeadLetterInfo",
    "Gateway",
    "GatewayConfigError",
    "GatewayOptions",
    "HttpGateway",
    "HttpServer",
    "JobProgress",
    "Route",
    "StaticTokenVerifier",
    "ToolCatalogue",
    "build_http_app",
    "check_http_binding",
    "dead_letters",
    "mcp_tool",
    "parse_host_port",
    "serve_stdio",
    "transport_security",
]
