"""The ``meetara`` command line."""

from runtime.cli import _client_cmds, _dlq_cmds, _mcp_cmds, _swarm_cmds  # noqa: F401  (register commands)
from runtime.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
