"""``meetara dashboard``: the read-only web page over the swarm."""

from __future__ import annotations

from typing import Annotated

import typer

from runtime.cli._app import app, console, run_async, state
from runtime.cli._session import client_session, http_option_errors, serve_until_signal
from runtime.dashboard import dashboard_server
from runtime.mcp_gateway import GatewayOptions, check_http_binding, parse_host_port

DEFAULT_ADDRESS = "127.0.0.1:8780"


@app.command("dashboard")
@run_async
async def dashboard_command(
    http: Annotated[
        str,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Where to serve the page (a bearer token, $MEETARA_MCP_TOKEN, is required off loopback).",
        ),
    ] = DEFAULT_ADDRESS,
) -> None:
    """Serve a live, read-only web page over the swarm: jobs, loss curves, costs, models, agents.

    It follows the MCP gateway's access rules ($MEETARA_MCP_TOKEN, $MEETARA_MCP_ALLOWED_HOSTS,
    $MEETARA_MCP_ALLOWED_ORIGINS). With a token, open it once as http://HOST:PORT/?token=TOKEN;
    the browser keeps it in a cookie. On memory:// the whole swarm runs in this process.
    """
    settings = state.settings
    options = GatewayOptions.from_settings(settings)
    with http_option_errors():
        host, port = parse_host_port(http)
        check_http_binding(host, options)
    async with client_session(settings) as client:
        with http_option_errors():
            server = dashboard_server(client, host=host, port=port, options=options)
        hint = "/?token=<MEETARA_MCP_TOKEN>" if options.token else "/"
        console.print(f"dashboard: {server.url}{hint}  (Ctrl-C stops it)", highlight=False)
        await serve_until_signal(server)
