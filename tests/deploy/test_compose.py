"""docker-compose.yml: valid for Compose, one service per installed agent, commands that really run."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from runtime import agent_names
from runtime.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]  # type: ignore[no-any-return]


def service_env(svc: dict[str, Any]) -> dict[str, str]:
    """A service's environment as Compose reads it with no ``.env``: ``${VAR:-default}`` is the default
    (the ``${SECRET:?…}`` values are overridden by each test)."""
    return {k: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(v)) for k, v in svc["environment"].items()}


def agent_services() -> dict[str, Any]:
    return {name: svc for name, svc in services().items() if name not in ("redis", "dashboard")}


def test_compose_config_is_accepted_by_docker_compose_and_requires_a_redis_password(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("MEETARA_REQUIRE_COMPOSE"):
            pytest.fail("docker-compose is required here (MEETARA_REQUIRE_COMPOSE is set) but not installed")
        pytest.skip("docker-compose (Debian's v1 package) is not installed")
    no_env_file = tmp_path / "empty.env"  # a developer's own .env must not decide the outcome
    no_env_file.write_text("")
    command = [binary, "-f", str(COMPOSE), "--env-file", str(no_env_file), "config", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_PASSWORD", "MEETARA_MCP_TOKEN")}
    secrets = {"REDIS_PASSWORD": "pw", "MEETARA_MCP_TOKEN": "tok"}
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**env, **secrets})
    assert out.returncode == 0, out.stderr
    # Authentication is not optional: without a password or the dashboard's token Compose refuses,
    # saying what to do.
    for missing in secrets:
        partial = {k: v for k, v in secrets.items() if k != missing}
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**env, **partial})
        assert out.returncode != 0 and f"set {missing} in .env (run make env)" in out.stderr


def test_one_service_per_installed_agent() -> None:
    commands = {svc["command"][2]: svc["command"] for svc in agent_services().values()}
    assert sorted(commands) == agent_names()
    assert all(cmd[:2] == ["meetara", "agent"] for cmd in commands.values())


def test_redis_keeps_an_append_only_file_requires_a_password_and_has_a_healthcheck() -> None:
    redis = services()["redis"]
    command = redis["command"][-1]
    assert "--appendonly yes" in command and '--requirepass "$$REDIS_PASSWORD"' in command
    assert redis["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
    assert "redis-cli ping" in redis["healthcheck"]["test"][-1]
    for svc in agent_services().values():
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["environment"]["MEETARA_BUS_URL"].startswith("redis://:${REDIS_PASSWORD:?")
        volumes = {v.split(":")[0] for v in svc["volumes"]}
        assert {"artifacts", "data", "models"} <= volumes


@pytest.mark.parametrize("service", ["gpu-optimization", "gguf-creation"])
def test_gpu_agents_reserve_a_gpu(service: str) -> None:
    svc = agent_services()[service]
    (device,) = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    assert "deploy" not in agent_services()["conductor"]


@pytest.mark.redis
@pytest.mark.parametrize("service", sorted(agent_services()))
def test_each_service_command_runs_as_a_local_process(service: str, child_env: dict[str, str], tmp_path: Path) -> None:
    svc = agent_services()[service]
    env = {**child_env, **service_env(svc)}
    # Same command and settings as the container, pointed at the test Redis and a scratch folder.
    env.update(
        MEETARA_BUS_URL=child_env["MEETARA_BUS_URL"],
        MEETARA_SHUTDOWN_GRACE_S="3",
        MEETARA_ARTIFACT_URL=str(tmp_path / "artifacts"),
        MEETARA_DATA_DIR=str(tmp_path / "data"),
        MEETARA_MODELS_DIR=str(tmp_path / "models"),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    proc = subprocess.Popen(
        svc["command"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    agent = svc["command"][2]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            out = subprocess.run(
                [sys.executable, "-m", "runtime.cli", "agents"],
                env={**env, "COLUMNS": "250"},
                capture_output=True,
                text=True,
                timeout=30,
                cwd=ROOT,
            )
            if f"│ {agent} " in out.stdout:
                break
            time.sleep(0.3)
        else:
            pytest.fail(f"{service} never registered")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    first = stderr.splitlines()[0]
    assert first.startswith("{") and '"level": "info"' in first  # JSON log lines, as in containers


def test_the_dashboard_is_published_on_loopback_only_and_needs_the_token() -> None:
    dashboard = services()["dashboard"]
    assert dashboard["ports"] == ["127.0.0.1:8780:8780"]
    assert dashboard["environment"]["MEETARA_MCP_TOKEN"].startswith("${MEETARA_MCP_TOKEN:?")
    assert dashboard["command"][:2] == ["meetara", "dashboard"]


@pytest.mark.redis
def test_the_dashboard_service_command_serves_the_page_to_token_holders_only(
    child_env: dict[str, str], tmp_path: Path
) -> None:
    svc = services()["dashboard"]
    port = free_port()
    command = [*svc["command"][:-1], f"127.0.0.1:{port}"]  # the container's command on a free local port
    env = {**child_env, **service_env(svc)}
    env.update(
        MEETARA_BUS_URL=child_env["MEETARA_BUS_URL"],
        MEETARA_MCP_TOKEN="compose-token",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    )
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                refused = httpx.get(url, timeout=30)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the dashboard never answered")
                time.sleep(0.3)
        assert refused.status_code == 401
        page = httpx.get(url, headers={"Authorization": "Bearer compose-token"}, timeout=30)
        assert page.status_code == 200 and "<h2>Jobs</h2>" in page.text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
