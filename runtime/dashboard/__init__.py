"""The dashboard: a read-only web page over the swarm, updated live from its events stream.

Jobs with their steps, live progress and loss curves; costs against budgets; deployed models with
their QA reports; agents and dead letters. ``dashboard_server`` serves it under the same token and
Host/Origin rules as the MCP HTTP gateway.
"""

from runtime._client import SwarmClient
from runtime.dashboard._app import build_dashboard_app, token_cookie
from runtime.dashboard._view import DashboardView, JobView, ModelView, ViewSource
from runtime.mcp_gateway import GatewayOptions, HttpServer

__all__ = [
    "DashboardView",
    "JobView",
    "ModelView",
    "ViewSource",
    "build_dashboard_app",
    "dashboard_server",
    "token_cookie",
]


def dashboard_server(client: SwarmClient, *, host: str, port: int, options: GatewayOptions) -> HttpServer:
    """The dashboard bound to ``host:port`` (port 0: a free one), ready to ``serve()``."""
    source = ViewSource(client, timeout=min(options.call_timeout_s, 10.0))
    return HttpServer(
        lambda bound: build_dashboard_app(source, client.bus, host=host, port=bound, options=options),
        host=host,
        port=port,
    )
