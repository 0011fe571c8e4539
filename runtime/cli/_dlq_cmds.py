"""``meetara dlq list|replay|purge``: inspect and recover dead-lettered messages."""

from __future__ import annotations

from typing import Annotated

import typer

from protocol import InvalidParams
from runtime._swarm import connect
from runtime.cli._app import app, console, run_async, state
from runtime.cli._render import dead_letters_table

dlq = typer.Typer(help="Dead-lettered messages: list, replay into their inbox, or purge.", no_args_is_help=True)
app.add_typer(dlq, name="dlq")


@dlq.command("list")
@run_async
async def list_letters(
    count: Annotated[int, typer.Option(help="Most letters to show (oldest first).")] = 100,
) -> None:
    """Show dead letters with the reason each was given up on."""
    async with connect(state.settings, sender="cli") as bus:
        console.print(dead_letters_table(await bus.dead_letters(count=count)))


@dlq.command()
@run_async
async def replay(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids to replay.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Put dead letters back into the inbox they came from (after fixing the cause)."""
    if bool(ids) == all_:
        raise InvalidParams("give dead-letter ids or --all")
    async with connect(state.settings, sender="cli") as bus:
        targets = ids or [d.id for d in await bus.dead_letters(count=1_000_000)]
        for letter_id in targets:
            new_id = await bus.replay_dead_letter(letter_id)
            console.print(f"replayed {letter_id} as {new_id}")


@dlq.command()
@run_async
async def purge(
    ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids to delete.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Delete every dead letter.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good."""
    if bool(ids) == all_:
        raise InvalidParams("give dead-letter ids or --all")
    if not yes and not typer.confirm(f"delete {'all' if all_ else len(ids or [])} dead letter(s)?"):
        raise typer.Exit(1)
    async with connect(state.settings, sender="cli") as bus:
        deleted = await bus.purge_dead_letters(None if all_ else ids)
    console.print(f"deleted {deleted} dead letter(s)")
