"""Process settings: the one place environment variables (``MEETARA_*``) and the YAML file are read.

Precedence, highest first: explicit keyword arguments, environment, the YAML file given by
``--config`` or ``MEETARA_CONFIG``, defaults. Everything below this layer receives plain values.
"""

from __future__ import annotations

import contextvars
import os
import socket
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import fsspec
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bus import BusOptions, check_url

__all__ = ["Settings", "default_instance_id"]

_yaml_file: contextvars.ContextVar[Path | None] = contextvars.ContextVar("yaml_file", default=None)


def default_instance_id() -> str:
    """``host-pid-random``: unique per process, readable in ``meetara agents``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Settings(BaseSettings):
    """Settings of one MeeTARA process (agent, swarm or CLI)."""

    model_config = SettingsConfigDict(
        env_prefix="MEETARA_", env_nested_delimiter="__", extra="forbid", frozen=True, hide_input_in_errors=True
    )

    bus_url: str = "memory://default"
    """``memory://NAME`` (one process), ``redis://[user:password@]host:port/db`` / ``rediss://…``, or
    ``redis+sentinel://[user:password@]host:port[,host:port…]/service[/db]`` (Redis behind Sentinel)."""
    bus: BusOptions = Field(default_factory=BusOptions)
    """Delivery tuning and key namespace (``MEETARA_BUS__NAMESPACE``, ``MEETARA_BUS__MAX_DELIVERIES``…)."""
    instance_id: str = Field(default_factory=default_instance_id, pattern=r"^[A-Za-z0-9_.-]{1,120}$")
    """Consumer name of this process; keep it stable across restarts to drain its own pending work."""
    artifact_url: str = ".meetara/artifacts"
    """Content-addressed artifact store: a local folder or any fsspec URL (``s3://bucket/path``)."""
    catalog_dir: Path | None = None
    """Folder whose YAML files replace the packaged ``configs/`` (edited prices, budgets…)."""
    data_dir: Path = Path("data")
    """Root of ``data/training`` and ``data/models``."""
    state_path: Path | None = None
    """SQLite file of the embedded swarm's jobs, cost ledger and warm-start index (a ``memory://`` bus);
    ``None``: ``{data_dir}/state.sqlite3``. On Redis they live in Redis."""
    models_dir: Path = Path("models")
    """Root of the deployed model layout."""
    model_cache_dir: Path | None = None
    """Converted base models (a GGUF base is dequantized once); ``None``: ``{data_dir}/cache/base_models``."""
    provider: str = Field(default="local", pattern=r"^[a-z0-9_]{1,60}$")
    """Price-table provider renting this host (``lambda_labs``…), so its training is priced at that
    provider's rate; ``local``: own hardware at the configured local rate. Read by the GPU agent."""
    gpu: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,60}$")
    """Price-table GPU type a rented host is billed as (``H100``); ``None``: matched from the detected GPU."""
    log_format: Literal["auto", "json", "console"] = "auto"
    """``auto``: pretty on a terminal, one JSON object per line otherwise (containers)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Lowest level logged."""
    request_timeout_s: float = Field(default=60.0, gt=0)
    """Default time a caller waits for a tool's response."""
    liveness_ttl_s: float = Field(default=15.0, gt=0)
    """An instance that has not refreshed its liveness record for this long is gone."""
    shutdown_grace_s: float = Field(default=30.0, ge=0)
    """On SIGTERM, in-flight work gets this long to finish before it is released to replicas."""
    mcp_token: SecretStr | None = None
    """Bearer token HTTP clients of ``meetara mcp --http`` must send; required off loopback."""
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """``Host`` headers the HTTP gateway accepts besides its own address (``name:port``, ``name:*``)."""
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Browser ``Origin`` headers the HTTP gateway accepts (``https://app.example``); off loopback none by default."""
    mcp_allow_destructive: bool = True
    """False hides and refuses the destructive tools (cancel a job, set a budget, deploy, purge dead letters)."""
    mcp_disabled_tools: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """MCP tool names the gateway hides and refuses (``conductor_cancel_job``…)."""

    @field_validator("gpu", mode="before")
    @classmethod
    def _unset_gpu(cls, value: Any) -> Any:
        return None if value == "" else value  # Compose passes an unset MEETARA_GPU as empty

    @field_validator("bus_url")
    @classmethod
    def _usable_bus(cls, value: str) -> str:
        return check_url(value)  # a malformed Sentinel URL is one clear error at start, not a traceback

    @field_validator("artifact_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        # At start, not at the first artifact: an s3:// store without s3fs is one clear error.
        if "://" not in value:
            return value  # a folder
        # Each layer of a chained URL (simplecache::s3://bucket/x) names a filesystem.
        protocols = [part.partition("://")[0] for part in value.split("::")]
        for protocol in protocols:
            try:
                fsspec.get_filesystem_class(protocol)
            except (ImportError, ValueError) as exc:
                extra = " (pip install 'meetara-lab[s3]')" if protocol in ("s3", "s3a") else ""
                raise ValueError(f"artifact store {protocol}:// is not usable: {exc}{extra}") from None
        return value

    @field_validator("mcp_allowed_hosts", "mcp_allowed_origins", "mcp_disabled_tools", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        # Environment variables hold plain comma-separated lists; YAML gives real lists.
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def model_cache(self) -> Path:
        return self.model_cache_dir or self.data_dir / "cache" / "base_models"

    @property
    def state_file(self) -> Path:
        return self.state_path or self.data_dir / "state.sqlite3"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        yaml_file = _yaml_file.get()
        if yaml_file is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Settings from the environment, the YAML file and ``overrides``.

        Raises:
            FileNotFoundError: the YAML file does not exist.
            pydantic.ValidationError: a value is invalid or a key unknown.
        """
        path = config_file or (Path(p) if (p := os.environ.get("MEETARA_CONFIG")) else None)
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"settings file not found: {path}")
        token = _yaml_file.set(path)
        try:
            return cls(**overrides)
        finally:
            _yaml_file.reset(token)
