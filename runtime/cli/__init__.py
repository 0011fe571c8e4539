"""The ``meetara`` command line."""

from runtime.cli import (  # noqa: F401  (register commands)
    _ask_cmds,
    _batch_cmds,
    _client_cmds,
    _dashboard_cmds,
    _dlq_cmds,
    _export_cmds,
    _mcp_cmds,
    _swarm_cmds,
)
from runtime.cli._app import app
from runtime.cli._client_cmds import JobBars
from runtime.cli._render import sparkline

__all__ = ["JobBars", "app", "main", "sparkline"]


def main() -> None:
    """Console-script entry point."""
    app()
