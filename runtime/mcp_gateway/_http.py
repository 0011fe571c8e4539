"""HTTP serving for the swarm's faces: MCP over streamable HTTP, and the dashboard.

Both share one set of rules: a bearer token (required off loopback) and Host/Origin allow-lists.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

import anyio
import structlog
import uvicorn
from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.provider import AccessToken
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from runtime.mcp_gateway._options import GatewayConfigError, GatewayOptions

__all__ = [
    "HttpGateway",
    "HttpServer",
    "StaticTokenVerifier",
    "build_http_app",
    "check_http_binding",
    "parse_host_port",
    "transport_security",
]

log = structlog.get_logger("runtime.mcp_gateway")

MCP_PATH = "/mcp"
_LOOPBACK_HOSTS = ("127.0.0.1:*", "localhost:*", "[::1]:*")
_LOOPBACK_ORIGINS = ("http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8000`` for IPv6) → ``(host, port)``; raises ``GatewayConfigError``."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise GatewayConfigError(f"expected HOST:PORT (e.g. 127.0.0.1:8765), got {value!r}")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")


def check_http_binding(host: str, options: GatewayOptions) -> None:
    """Refuse what would expose the swarm: no token off loopback, or a wildcard bind with no host names."""
    if _is_loopback(host):
        if options.token is None:
            log.warning("serving HTTP without a bearer token (loopback only); set MEETARA_MCP_TOKEN")
        return
    if options.token is None:
        raise GatewayConfigError(
            f"refusing to serve on {host}, a non-loopback address, without a bearer token: set MEETARA_MCP_TOKEN"
        )
    if _is_wildcard(host) and not options.allowed_hosts:
        raise GatewayConfigError(
            f"{host} accepts connections for any name: list the host names clients use "
            "(name:port or name:*) in MEETARA_MCP_ALLOWED_HOSTS"
        )


def transport_security(host: str, port: int, options: GatewayOptions) -> TransportSecuritySettings:
    """Host and Origin allow-lists against DNS rebinding: the bound address, loopback names, configured ones."""
    hosts, origins = list(options.allowed_hosts), list(options.allowed_origins)
    if not _is_wildcard(host):
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    if _is_loopback(host):
        hosts += _LOOPBACK_HOSTS
        origins += _LOOPBACK_ORIGINS
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


class StaticTokenVerifier:
    """The SDK's ``TokenVerifier`` for one shared secret, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return AccessToken(token=token, client_id="meetara-mcp-client", scopes=[])


def build_http_app(server: Server[Any], *, host: str, port: int, options: GatewayOptions) -> Starlette:
    """The ASGI app serving ``server`` at ``/mcp``; with a token, requests without it get 401."""
    manager = StreamableHTTPSessionManager(app=server, security_settings=transport_security(host, port, options))
    endpoint: ASGIApp = StreamableHTTPASGIApp(manager)
    middleware: list[Middleware] = []
    if options.token is not None:
        endpoint = RequireAuthMiddleware(endpoint, required_scopes=[])
        middleware = [
            Middleware(AuthenticationMiddleware, backend=BearerAuthBackend(StaticTokenVerifier(options.token))),
            Middleware(AuthContextMiddleware),
        ]
    return Starlette(
        routes=[Route(MCP_PATH, endpoint=endpoint)],
        middleware=middleware,
        lifespan=lambda _: manager.run(),
    )


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.settled = anyio.Event()
        """Set once startup finished, well or not."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.settled.set()

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The caller owns signals: uvicorn would re-raise SIGTERM after shutting down and kill
        # the process before an embedded swarm could stop.
        yield


class HttpServer:
    """Serves an ASGI app with uvicorn until ``stop()``; the socket is bound on construction.

    ``make_app`` gets the bound port (the Host allow-list needs it when port 0 picked one).
    """

    path = ""
    """Appended to the server's address in ``url``."""

    def __init__(self, make_app: Callable[[int], ASGIApp], *, host: str, port: int) -> None:
        self.host = host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            # Bound here so a busy port is a clear error now, and port 0 picks a free one.
            self._socket = socket.create_server((host, port), family=family)
        except OSError as exc:
            raise GatewayConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            make_app(self.port), log_config=None, access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
        self._uvicorn = _Server(config)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def stop(self) -> None:
        self._uvicorn.should_exit = True

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until ``stop()``; ``task_status.started()`` once requests are answered."""

        async def run() -> None:
            try:
                await self._uvicorn.serve([self._socket])
            finally:
                self._uvicorn.settled.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await self._uvicorn.settled.wait()
            if self._uvicorn.started:
                log.info("listening", url=self.url)
                task_status.started()


class HttpGateway(HttpServer):
    """Serves an MCP server over streamable HTTP at ``/mcp``."""

    path = MCP_PATH

    def __init__(self, server: Server[Any], *, host: str, port: int, options: GatewayOptions) -> None:
        super().__init__(
            lambda bound: build_http_app(server, host=host, port=bound, options=options), host=host, port=port
        )
