"""The ``meetara`` command line."""

from runtime.cli import _client_cmds, _dlq_cmds, _mcp_cmds, _swarm_cmds  # noqa: F401  (register commands)
from runtime.cli._app import app
from runtime.cli._client_cmds import JobBars

__all__ = ["JobBars", "app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
