"""``meetara ask`` and ``meetara chat``: talk to the deployed models through the router."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import anyio
import typer
from rich.markup import escape

from protocol import MeetaraError, ProgressNotification
from protocol.agents.quality_assurance import AskOutput, RouteOutput
from runtime._client import SwarmClient
from runtime.cli._app import app, console, run_async, state
from runtime.cli._session import client_session

_ASK_TIMEOUT_S = 600.0
"""A reply of a few hundred tokens on a busy CPU, with the model's first load."""


def _route_line(route: RouteOutput) -> str:
    close = ", ".join(f"{m.domain} {m.similarity:.2f}" for m in route.matches)
    model = f"{route.model_id} {route.version}" if route.model_id else "no model"
    sure = "" if route.confident else " [yellow](not sure)[/]"
    return f"[dim]{escape(model)} · {escape(route.reason)} · close: {escape(close)}[/]{sure}"


async def _ask(client: SwarmClient, arguments: dict[str, Any]) -> AskOutput:
    """Calls ``quality_assurance.ask``, printing the reply as its progress events bring it."""
    token = uuid.uuid4().hex
    since = await client.bus.transport.last_id(client.bus.keys.events)
    shown: list[str] = []

    async def stream() -> None:
        async for record in client.bus.events(since=since):
            message = record.envelope.message
            if isinstance(message, ProgressNotification) and message.params.progress_token == token:
                text = (message.params.meta or {}).get("text")
                if isinstance(text, str):
                    console.print(escape(text), end="", highlight=False, soft_wrap=True)
                    shown.append(text)

    # The route (and a crisis's help) comes first; the reply streams after it.
    where = {k: v for k, v in arguments.items() if k in ("text", "domain")}
    routed = await client.call_model("quality_assurance", "route", where, RouteOutput)
    console.print(_route_line(routed), highlight=False)
    if routed.crisis_help:
        console.print(f"[bold red]{escape(routed.crisis_help)}[/]\n", highlight=False)
    if routed.model_file is None and not routed.crisis_help:
        raise MeetaraError(f"no model can answer: {routed.reason}")
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        group.start_soon(stream)
        try:
            result = await client.call_model(
                "quality_assurance", "ask", arguments, AskOutput, progress_token=token, timeout=_ASK_TIMEOUT_S
            )
        except Exception as exc:  # raised outside the group: one clear line, not an exception group
            failure = exc
        group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    streamed = "".join(shown)
    rest = result.reply[len(streamed) :] if result.reply.startswith(streamed) else "\n" + result.reply
    console.print(escape(rest), highlight=False, soft_wrap=True)
    return result


@app.command()
@run_async
async def ask(
    text: Annotated[str, typer.Argument(help="Your message, in free text.")],
    domain: Annotated[str | None, typer.Option(help="Ask this domain's model, not the router's pick.")] = None,
) -> None:
    """Route a message to the deployed model that should answer it and print its reply as it comes.

    A crisis message is answered with real help first, whatever the model says.
    """
    arguments: dict[str, Any] = {"text": text} | ({"domain": domain} if domain else {})
    async with client_session(state.settings) as client:
        await _ask(client, arguments)


@app.command()
@run_async
async def chat(domain: Annotated[str, typer.Argument(help="The domain whose deployed model you talk to.")]) -> None:
    """A conversation with a domain's deployed model (an empty line or Ctrl-D ends it)."""
    history: list[dict[str, str]] = []
    async with client_session(state.settings) as client:
        while True:
            try:
                text = (await anyio.to_thread.run_sync(lambda: input("you> "))).strip()
            except EOFError:
                break
            if not text:
                break
            result = await _ask(client, {"text": text, "domain": domain, "history": history})
            # the model sees what fits its context (the tool drops older turns); the tool takes 64
            turn = [{"role": "user", "content": text}, {"role": "assistant", "content": result.reply}]
            history = [*history, *turn][-64:]
