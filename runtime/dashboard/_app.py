"""The dashboard's web app: one server-rendered page, its data as JSON, and live events over SSE.

Read-only by construction: it serves GET only and calls read-only tools, so nothing in it can
start, cancel or deploy. Access follows the MCP HTTP gateway's rules (same settings): the bearer
token, and the Host/Origin allow-lists against DNS rebinding. A browser cannot send a bearer
header, so ``/?token=…`` trades the token for an HttpOnly cookie once (as Jupyter does).
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

import jinja2
from markupsafe import Markup
from mcp.server.transport_security import TransportSecurityMiddleware
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bus import Bus
from protocol import AgentEventNotification, JobEventNotification
from runtime._loss_chart import loss_svg
from runtime.dashboard._view import ViewSource
from runtime.mcp_gateway import GatewayOptions, transport_security

__all__ = ["build_dashboard_app", "token_cookie"]


def token_cookie(port: int) -> str:
    """The cookie a browser holds the token in after ``/?token=…``: one per port, because cookies
    ignore ports and two dashboards on one host would otherwise overwrite each other's."""
    return f"meetara_token_{port}"


_EVENT_ID = re.compile(r"^\d+-\d+$")


def _clock(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def _chart(curve: list[tuple[int, float]], title: str) -> Markup:
    # loss_svg escapes the title and draws only numbers: its output is safe to inline.
    return Markup(loss_svg({"training loss": curve}, title))


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("runtime.dashboard", "templates"),
    autoescape=jinja2.select_autoescape(default=True),
    undefined=jinja2.StrictUndefined,
)
_templates.filters.update(clock=_clock, size=_size)
_templates.globals.update(chart=_chart)


class _Guard:
    """Host/Origin checks, then the token (header, cookie, or ``?token=`` once), then GET only."""

    def __init__(self, app: ASGIApp, *, security: TransportSecurityMiddleware, token: str | None, cookie: str) -> None:
        self.app = app
        self.security = security
        self.token = token
        self.cookie = cookie

    def _valid(self, given: str | None) -> bool:
        return given is not None and self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def _presented(self, request: Request) -> str | None:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            return credential
        return request.cookies.get(self.cookie)

    async def _answer(self, request: Request) -> Response | None:
        refused = await self.security.validate_request(request)
        if refused is not None:
            return refused
        if request.method not in ("GET", "HEAD"):
            return PlainTextResponse("the dashboard is read-only", status_code=405, headers={"Allow": "GET, HEAD"})
        if self.token is None:
            return None
        given = request.query_params.get("token")
        if given is not None:
            if not self._valid(given):
                return PlainTextResponse("wrong token", status_code=401)
            query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
            # One leading slash: "//host/" would send the browser to another site.
            path = "/" + request.url.path.lstrip("/")
            response = RedirectResponse(path + (f"?{query}" if query else ""), status_code=303)
            # Lax, not strict: a link to the dashboard from elsewhere still brings the cookie, and
            # the app has nothing a cross-site request could change (GET only).
            response.set_cookie(self.cookie, given, httponly=True, samesite="lax")
            return response
        if not self._valid(self._presented(request)):
            return PlainTextResponse(
                "this dashboard needs its token: open it once as /?token=<MEETARA_MCP_TOKEN>",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            answer = await self._answer(Request(scope))
            if answer is not None:
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_dashboard_app(source: ViewSource, bus: Bus, *, host: str, port: int, options: GatewayOptions) -> ASGIApp:
    """The dashboard as an ASGI app, guarded by the gateway's token and Host/Origin rules."""

    async def page(request: Request) -> HTMLResponse:
        # Where the page's events stream starts: before the view is gathered, so nothing that
        # changes the page after it was drawn is missed.
        since = await bus.transport.last_id(bus.keys.events)
        view = await source.view()
        html = _templates.get_template("index.html").render(view=view, now=time.time(), since=since)
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    async def data(request: Request) -> JSONResponse:
        view = await source.view()
        return JSONResponse(view.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    async def events(request: Request) -> EventSourceResponse:
        # A reconnect resumes after the last event the browser saw; a first connection after the
        # position its page was drawn at; otherwise from now, pinned before the response opens.
        given = [request.headers.get("last-event-id", ""), request.query_params.get("since", "")]
        since = next((g for g in given if _EVENT_ID.match(g)), None) or await bus.transport.last_id(bus.keys.events)

        async def stream() -> AsyncIterator[dict[str, Any]]:
            async for record in bus.events(since=since):
                message = record.envelope.message
                if isinstance(message, JobEventNotification | AgentEventNotification):
                    kind = "job" if isinstance(message, JobEventNotification) else "agent"
                    yield {"event": kind, "id": record.id, "data": message.params.model_dump_json()}

        return EventSourceResponse(stream(), ping=10)

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/api/view", data, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
        ]
    )
    security = TransportSecurityMiddleware(transport_security(host, port, options))
    return _Guard(app, security=security, token=options.token, cookie=token_cookie(port))
