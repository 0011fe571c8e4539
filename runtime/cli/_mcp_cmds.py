"""``meetara mcp``: the agents as MCP tools, over stdio (desktop clients) or streamable HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from runtime.cli._app import app, run_async, state
from runtime.cli._session import client_session, http_option_errors, serve_until_signal
from runtime.mcp_gateway import (
    Gateway,
    GatewayOptions,
    HttpGateway,
    check_http_binding,
    parse_host_port,
    serve_stdio,
)


@app.command("mcp")
@run_async
async def mcp_command(
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            metavar="HOST:PORT",
            help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio "
            "(a bearer token, $MEETARA_MCP_TOKEN, is required off loopback).",
        ),
    ] = None,
) -> None:
    """Serve the agents' tools, job reports and the models manifest to MCP clients.

    Over stdio by default (add it to a desktop client's configuration); with --http over
    streamable HTTP for remote clients. In front of the Redis swarm, or an embedded one on
    memory://. Stdout carries only the MCP stream; logs go to stderr.
    """
    settings = state.settings
    options = GatewayOptions.from_settings(settings)
    with http_option_errors():
        # Checked before the swarm starts: a refusal should cost nothing.
        binding = parse_host_port(http) if http is not None else None
        if binding is not None:
            check_http_binding(binding[0], options)
    async with client_session(settings) as client:
        gateway = Gateway(client, options)
        if binding is None:
            await serve_stdio(gateway.server)
            return
        with http_option_errors():
            server = HttpGateway(gateway.server, host=binding[0], port=binding[1], options=options)
        await serve_until_signal(server)
