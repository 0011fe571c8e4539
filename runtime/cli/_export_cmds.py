"""``meetara export``: a deployed version, ready to run elsewhere, in a folder of its own."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import anyio.to_thread
import typer
from rich.table import Table

from protocol import InvalidParams
from protocol.agents.gguf_creation import VersionFilesOutput
from runtime._artifacts import ArtifactStore
from runtime.cli._app import app, console, run_async, state
from runtime.cli._session import client_session

CHECKSUMS = "SHA256SUMS"
"""``sha256sum -c SHA256SUMS`` checks every exported file."""


async def export_version(version: VersionFilesOutput, artifacts: ArtifactStore, to: Path) -> dict[str, str]:
    """Copies the version into ``to`` (which must not exist yet); every file's SHA-256 by name.

    The files are assembled beside ``to`` and renamed into place, so ``to`` holds all of them or
    does not exist. Model files are fetched by reference and verified against the manifest's hash.
    """
    staging = await anyio.to_thread.run_sync(_staging, to)
    try:
        for file in version.entry.files:
            if file.artifact is None:
                raise InvalidParams(f"{Path(file.path).name} has no artifact reference to export from")
            await artifacts.fetch(file.artifact, staging / Path(file.path).name)
        # the fetch verified each model file against its hash: no need to read them again
        verified = {Path(f.path).name: f.sha256 for f in version.entry.files}
        return await anyio.to_thread.run_sync(_finish, staging, version.documents, verified, to)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _staging(to: Path) -> Path:
    if to.exists():
        raise InvalidParams(f"{to} already exists; export into a new folder")
    to.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}-"))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide the export from everyone else
    return staging


def _finish(staging: Path, documents: dict[str, str], verified: dict[str, str], to: Path) -> dict[str, str]:
    """The text records and checksums beside the fetched model files, then the folder renamed into place."""
    sums = dict(verified)
    for name, text in documents.items():
        data = text.encode()
        (staging / Path(name).name).write_bytes(data)  # a bare file name, whatever the server sent
        sums[Path(name).name] = hashlib.sha256(data).hexdigest()
    sums = dict(sorted(sums.items()))
    (staging / CHECKSUMS).write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    os.rename(staging, to)
    return sums


@app.command()
@run_async
async def export(
    model_id: Annotated[str, typer.Argument(help="The model, e.g. meetara_general_health.")],
    to: Annotated[Path, typer.Option("--to", help="A new folder to copy the version into.")],
    version: Annotated[str | None, typer.Option(help="The version (default: the production one).")] = None,
) -> None:
    """Copy a deployed version with its model card, Ollama Modelfiles and SHA256SUMS into a folder."""
    settings = state.settings
    arguments = {"model_id": model_id} | ({"version": version} if version else {})
    async with client_session(settings) as client:
        found = await client.call_model("gguf_creation", "version_files", arguments, VersionFilesOutput)
    sums = await export_version(found, ArtifactStore(settings.artifact_url), to)
    table = Table(title=f"{model_id} {found.entry.version} → {to}")
    table.add_column("file")
    table.add_column("sha256")
    for name, digest in sums.items():
        table.add_row(name, digest)
    console.print(table)
    if "Modelfile" in sums:
        console.print(f"Run it with Ollama: cd {to} && ollama create {model_id} -f Modelfile")
