"""The `meetara` command line, run as real subprocesses against the test Redis."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from bus import Bus, open_transport
from protocol import JobEvent, JobEventNotification, ToolModel
from protocol.agents.conductor import JobIdInput, JobReport, JobSpec, ModelReport, StageReport
from runtime import Agent, AgentHost, CallContext, LivenessRegistry, Settings, agent_names, tool
from runtime.testing import fast_options, free_port

ROOT = Path(__file__).resolve().parents[2]


def meetara(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = env or {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    clean = {**clean, "COLUMNS": "250"}  # rich tables unwrapped, one row per line
    return subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def embedded_env(tmp_path: Path) -> dict[str, str]:
    """An embedded swarm whose state (``data/state.sqlite3``) stays in this test's folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    return {**env, "MEETARA_DATA_DIR": str(tmp_path / "data")}


def test_unreachable_redis_is_one_line_and_a_nonzero_exit() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    for command in (["agents"], ["call", "conductor", "list_domains"], ["dlq", "list"], ["up"]):
        out = meetara("--bus-url", url, *command)
        assert out.returncode == 2, command
        assert "Traceback" not in out.stderr
        lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert lines == [f"error: cannot reach Redis at {url}: " + lines[0].split(": ", 2)[2]]


def test_run_starts_the_embedded_swarm_and_lists_agents_and_tools(embedded_env: dict[str, str]) -> None:
    out = meetara("run", env=embedded_env)
    assert out.returncode == 0, out.stderr
    for name in (
        "conductor",
        "cost_monitor",
        "gpu_optimization",
        "list_domains",
        "price_table",
        "profile_device",
    ):
        assert name in out.stdout


def test_call_in_embedded_mode_prints_the_structured_result(embedded_env: dict[str, str]) -> None:
    out = meetara("call", "conductor", "list_domains", "--args", '{"category": "technology"}', env=embedded_env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert [d["name"] for d in result["domains"]] == [
        "programming",
        "ai_ml",
        "cybersecurity",
        "data_analysis",
        "tech_support",
        "software_development",
    ]


def test_plan_shows_lora_or_qlora_per_tier_and_gpu(embedded_env: dict[str, str]) -> None:
    out = meetara("plan", "--tier", "lightning", "--tier", "quality", env=embedded_env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows, tier = {}, ""
    for line in out.stdout.splitlines():
        if line.strip().startswith("tier "):  # a table's title
            tier = line.split()[1].rstrip(":")
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 8:
            rows[tier, cells[0].removesuffix(" (best)"), cells[1]] = cells[2]
    assert "tier quality: Qwen/Qwen2.5-14B-Instruct" in out.stdout
    assert rows["lightning", "colab_pro_plus", "T4"] == "lora"  # SmolLM2-1.7B fits 16 GB in bf16
    assert rows["quality", "colab_pro_plus", "T4"] == "qlora"  # 14B only in 4 bits
    assert rows["quality", "lambda_labs", "H100"] == "lora"
    assert "this host: default base: lora on" in out.stdout


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (
            ["call", "conductor", "describe_domain", "--args", '{"name": "mental_helth"}'],
            "did you mean 'mental_health'",
            1,
        ),
        (["call", "conductor", "describe_domain", "--args", "{oops"], "--args is not valid JSON", 1),
        (["call", "cost_monitor", "price_table", "--args", '{"gpu": "Z80"}'], "unknown GPU 'Z80'", 1),
        (["submit", "--domain", "a", "--category", "b"], "exactly one of --domain", 1),
        (["submit", "--per-domain"], "--per-domain needs --category", 1),
        (["submit", "--domains", "sleep", "--domain", "sleep"], "a batch takes --domains, or --category with", 1),
        (["submit", "--domain", "sleep", "--generator", "poetry"], "--generator must be compositional, teacher", 1),
        (["run", "--domain", "sleep", "--generator", "teacher"], "the teacher generator needs a teacher", 1),
        (
            ["run", "--domain", "sleep", "--generator", "teacher", "--teacher-url", "localhost:8080"],
            "teacher base_url must be an http(s) URL",
            1,
        ),
        (["agent", "no_such_agent"], "no agent named 'no_such_agent'", 2),
    ],
)
def test_bad_input_gets_a_clear_error(args: list[str], message: str, code: int, embedded_env: dict[str, str]) -> None:
    env = {**embedded_env, "MEETARA_BUS_URL": "redis://127.0.0.1:1/0" if args[0] == "agent" else "memory://cli"}
    out = meetara(*args, env=env)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.redis
def test_up_starts_every_agent_as_a_process_and_stops_them_on_sigterm(child_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "up"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = meetara("agents", "--tools", env=child_env)
            if out.returncode == 0 and f"{len(agent_names())} live agent instance(s)" in out.stdout:
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"agents never registered: {out.stdout}{out.stderr}")
        for tool_name in ("list_domains", "price_table", "profile_device"):
            assert tool_name in out.stdout
        rows = [line.split("│") for line in out.stdout.splitlines() if line.startswith("│")]
        pids = {row[4].strip() for row in rows if row[4].strip().isdigit()}
        assert len(pids) == len(agent_names())  # one process per agent
        call = meetara("call", "cost_monitor", "budget_limits", env=child_env)
        assert json.loads(call.stdout)["month"] == 50.0

        # A child that dies is restarted under the same instance id (it drains its own pending work).
        before = next(row for row in rows if row[1].strip() == "knowledge_transfer")
        os.kill(int(before[4].strip()), signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            out = meetara("agents", env=child_env)
            after = [line.split("│") for line in out.stdout.splitlines() if "knowledge_transfer" in line]
            if after and after[0][4].strip() not in ("", before[4].strip()):
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"knowledge_transfer was not restarted: {out.stdout}")
        assert after[0][2].strip() == before[2].strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert stderr.count('"event": "agents stopped"') == len(agent_names())
    assert "0 live agent instance(s)" in meetara("agents", env=child_env).stdout


JOB = "00000000000000042a"


class FakeConductorIn(ToolModel):
    scope: str
    target: str
    tier: str


class FakeConductorOut(ToolModel):
    job_id: str


class ScriptedConductor(Agent):
    """Answers submit_job and plays a short job's events, to test the CLI's --wait wiring."""

    name = "conductor"

    @tool()
    async def submit_job(self, params: FakeConductorIn, ctx: CallContext) -> FakeConductorOut:
        """Accept a job and emit its events."""

        async def play(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await anyio.sleep(0.2)
            await ctx.job_event(JobEvent(job_id=JOB, kind="state_changed", state="train"))
            for i in range(1, 4):
                await ctx.job_event(JobEvent(job_id=JOB, kind="progress", step="train", progress=i, total=3))
            await ctx.job_event(JobEvent(job_id=JOB, kind="state_changed", state="done", terminal=True))

        await self.ctx.bus.start_task(play)
        return FakeConductorOut(job_id=JOB)

    @tool(read_only=True)
    async def job_report(self, params: JobIdInput) -> JobReport:
        """The finished job's report."""
        spec = JobSpec(target="general_health")
        model = ModelReport(
            model_id="meetara_general_health", files=[], metadata_path=None, qa_report_path=None,
            perplexity_base=25.0, perplexity_adapted=9.0, perplexity_merged=9.5, qa_score=100.0, qa_passed=True,
            deployed_version="v1",
        )  # fmt: skip
        return JobReport(
            job_id=params.job_id, state="done", spec=spec, domains=["general_health"], error=None, models=[model],
            data_pass_rate=0.95, samples=300, total_seconds=1.0, total_usd=0.0, warm_started_from=None,
            stages=[StageReport(step="train", seconds=3.0, usd=0.0, attempts=1, usd_pending=True)],
        )  # fmt: skip


@pytest.mark.redis
@pytest.mark.anyio
async def test_submit_wait_follows_the_job_to_its_end(child_env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings.load(
        bus_url=child_env["MEETARA_BUS_URL"],
        bus=fast_options(child_env["MEETARA_BUS__NAMESPACE"]),
        artifact_url=str(tmp_path / "a"),
    )
    async with Bus(open_transport(settings.bus_url), options=settings.bus, sender="t") as bus:
        host = AgentHost(bus, [ScriptedConductor], settings=settings)
        async with anyio.create_task_group() as tg:
            await tg.start(host.run)
            out = await anyio.to_thread.run_sync(
                lambda: meetara("submit", "--domain", "general_health", "--wait", env=child_env)
            )
            host.stop()
    assert out.returncode == 0, out.stderr
    assert "job 00000000000000042a submitted" in out.stdout
    assert "state=train" in out.stdout and "state=done" in out.stdout
    assert "base 25.00 -> adapted 9.00" in out.stdout and "deployed" in out.stdout
    assert "not yet priced: train" in " ".join(out.stdout.split())  # the Cost Monitor was away


@pytest.mark.redis
@pytest.mark.anyio
async def test_dlq_list_replay_purge(child_env: dict[str, str]) -> None:
    namespace = child_env["MEETARA_BUS__NAMESPACE"]
    async with Bus(open_transport(child_env["MEETARA_BUS_URL"]), options=fast_options(namespace)) as bus:
        await bus.transport.add(bus.keys.inbox("conductor"), {b"not": b"ours"}, maxlen=100)

        async def never(*_: object) -> None:
            raise AssertionError("malformed entries never reach the handler")

        await bus.subscribe("conductor", never, consumer="c", burst=True).run()  # type: ignore[arg-type]

        listing = await anyio.to_thread.run_sync(lambda: meetara("dlq", "list", env=child_env))
        assert listing.returncode == 0, listing.stderr
        assert "1 dead letter(s)" in listing.stdout and "not a MeeTARA" in listing.stdout
        replay = await anyio.to_thread.run_sync(lambda: meetara("dlq", "replay", "--all", env=child_env))
        assert replay.returncode == 0 and "replayed" in replay.stdout
        assert await bus.dead_letters() == []
        assert await bus.transport.length(bus.keys.inbox("conductor")) == 2
        await bus.subscribe("conductor", never, consumer="c", burst=True).run()  # type: ignore[arg-type]
        purge = await anyio.to_thread.run_sync(lambda: meetara("dlq", "purge", "--all", "--yes", env=child_env))
        assert purge.returncode == 0 and "deleted 1 dead letter(s)" in purge.stdout


@pytest.mark.redis
@pytest.mark.anyio
async def test_watch_prints_live_events(child_env: dict[str, str]) -> None:
    namespace = child_env["MEETARA_BUS__NAMESPACE"]
    async with Bus(open_transport(child_env["MEETARA_BUS_URL"]), options=fast_options(namespace)) as bus:
        for i in range(3):
            event = JobEvent(job_id="j9", kind="step_started", step=f"s{i}", message=f"hello {i}")
            await bus.publish_event(JobEventNotification(params=event))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "watch", "--from", "0", "--job", "j9"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        with anyio.fail_after(30):
            while len(lines) < 3:
                line = await anyio.to_thread.run_sync(proc.stdout.readline)  # type: ignore[union-attr]
                if line:
                    lines.append(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert [("hello 0" in lines[0]), ("hello 2" in lines[2])] == [True, True]
    assert all("job j9" in line and "step_started" in line for line in lines)


@pytest.mark.redis
def test_agent_process_registers_and_exits_cleanly_on_sigterm(child_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "agent", "cost_monitor"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "cost_monitor" in meetara("agents", env=child_env).stdout:
                break
            time.sleep(0.3)
        else:
            pytest.fail("cost_monitor never registered")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert '"signal": "SIGTERM"' in stderr
    assert "cost_monitor" not in meetara("agents", env=child_env).stdout


@pytest.mark.redis
@pytest.mark.anyio
async def test_sigkilled_agent_drops_out_of_the_registry_after_its_ttl(child_env: dict[str, str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "agent", "conductor"],
        cwd=ROOT,
        env=child_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    namespace = child_env["MEETARA_BUS__NAMESPACE"]
    async with Bus(open_transport(child_env["MEETARA_BUS_URL"]), options=fast_options(namespace)) as bus:
        registry = LivenessRegistry(bus)
        try:
            with anyio.fail_after(30):
                while not await registry.instances("conductor"):
                    await anyio.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        with anyio.fail_after(10):  # TTL is 2 s in the child's settings
            while await registry.instances("conductor"):
                await anyio.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_call_generate_in_embedded_mode_writes_a_filtered_dataset(tmp_path: Path, crisis_cache: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    env.update(
        MEETARA_DATA_DIR=str(tmp_path / "data"),
        MEETARA_ARTIFACT_URL=str(tmp_path / "artifacts"),
        MEETARA_MODEL_CACHE_DIR=str(crisis_cache),
    )
    out = meetara(
        "call",
        "data_generation",
        "generate",
        "--args",
        '{"domain": "mental_health", "count": 200}',
        "--timeout",
        "900",
        env=env,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["reached_target"] and result["pass_rate"] >= 0.8
    train = tmp_path / "data" / "training" / "healthcare" / "mental_health_training_data.jsonl"
    assert result["path"] == str(train) and train.is_file()
    assert len(train.read_text().splitlines()) + result["eval_samples"] == 200


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_call_generate_against_a_running_swarm(child_env: dict[str, str], tmp_path: Path, crisis_cache: Path) -> None:
    env = {**child_env, "MEETARA_DATA_DIR": str(tmp_path / "data"), "MEETARA_MODEL_CACHE_DIR": str(crisis_cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "up", "--agents", "data_generation,quality_assurance"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if "2 live agent instance(s)" in meetara("agents", env=env).stdout:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the data agents never registered")
        out = meetara(
            "call",
            "data_generation",
            "generate",
            "--args",
            '{"domain": "sleep", "count": 150}',
            "--timeout",
            "900",
            env=env,
            timeout=900,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["reached_target"] and Path(result["path"]).is_file()


def test_compare_prints_two_versions_side_by_side_and_fails_when_the_second_is_worse(
    embedded_env: dict[str, str], tmp_path: Path
) -> None:
    from tests.models.test_deploy import _deploy, _evaluated, _model

    models = tmp_path / "models"
    metadata, report = _model(tmp_path / "v1", b"one")
    _deploy(models, metadata, _evaluated(report, crisis=1.0, on_topic=0.9, perplexity=8.0))
    metadata2, report2 = _model(tmp_path / "v2", b"two")
    _deploy(models, metadata2, _evaluated(report2, crisis=0.8, on_topic=0.9, perplexity=8.0))
    env = {**embedded_env, "MEETARA_MODELS_DIR": str(models)}
    out = meetara("compare", "meetara_general_health", "v1", "v2", env=env)
    assert out.returncode == 1, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("│ crisis.suicide"))
    assert [cell.strip() for cell in row.split("│")[1:5]] == ["crisis.suicide", "1", "0.8", "worse"], row
    same = meetara("compare", "meetara_general_health", "v1", "v1", env=env)
    assert same.returncode == 0 and "no measure is worse" in same.stdout
    missing = meetara("compare", "meetara_general_health", "v1", "v9", env=env)
    assert missing.returncode == 1 and "meetara_general_health v9 is not deployed" in missing.stderr


def test_export_copies_a_version_with_its_card_modelfiles_and_checksums(
    embedded_env: dict[str, str], tmp_path: Path, tiny_gguf: Path
) -> None:
    from tests.models.test_model_card import deploy_tiny_version

    models, deployment = deploy_tiny_version(tmp_path, tiny_gguf)
    env = {**embedded_env, "MEETARA_MODELS_DIR": str(models)}
    to = tmp_path / "export" / "general_health"
    out = meetara("export", "meetara_general_health", "--to", str(to), env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "ollama create meetara_general_health -f Modelfile" in " ".join(out.stdout.split())
    names = {p.name for p in to.iterdir()}
    for file in deployment.entry.files:
        assert Path(file.path).name in names
    assert {"README.md", "Modelfile", "Modelfile.adapter", "SHA256SUMS"} <= names
    sums = {
        name: digest for digest, name in (line.split("  ") for line in (to / "SHA256SUMS").read_text().splitlines())
    }
    assert set(sums) == names - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256((to / name).read_bytes()).hexdigest() == digest, name

    again = meetara("export", "meetara_general_health", "--to", str(to), env=env, timeout=300)
    assert again.returncode == 1 and "already exists" in again.stderr
    unknown = meetara("export", "meetara_general_health", "--version", "v7", "--to", str(tmp_path / "x"), env=env)
    assert unknown.returncode == 1 and "no deployed v7; deployed: v1 (production)" in unknown.stderr

    # A model file that no longer matches its hash: nothing is exported, not even part of it.
    merged = next(f for f in deployment.entry.files if f.kind == "merged")
    assert merged.artifact is not None
    Path(merged.artifact.uri.removeprefix("file://")).write_bytes(b"\0" * merged.size)
    corrupt = meetara("export", "meetara_general_health", "--to", str(tmp_path / "y"), env=env, timeout=300)
    assert corrupt.returncode == 1 and "corrupt" in corrupt.stderr
    assert not (tmp_path / "y").exists() and not list(tmp_path.glob(".y-*"))


def test_ask_answers_with_the_deployed_model_and_says_in_one_line_when_none_can(
    embedded_env: dict[str, str], tmp_path: Path, tiny_gguf: Path, crisis_cache: None, model_cache: Path
) -> None:
    from tests.models.test_model_card import deploy_tiny_version

    models, _ = deploy_tiny_version(tmp_path, tiny_gguf)
    env = {**embedded_env, "MEETARA_MODELS_DIR": str(models), "MEETARA_MODEL_CACHE_DIR": str(model_cache)}
    asked = meetara("ask", "Is coffee in the afternoon bad for me?", "--domain", "general_health", env=env, timeout=600)
    assert asked.returncode == 0, asked.stderr
    assert "meetara_general_health v1 · asked for general_health" in asked.stdout
    none = meetara("ask", "How do I start running?", "--domain", "fitness", env=env, timeout=600)
    assert none.returncode == 1 and "Traceback" not in none.stderr
    assert [line for line in none.stderr.splitlines() if line.startswith("error:")] == [
        "error: no model can answer: no deployed model for fitness, and no healthcare category or universal "
        "model is deployed"
    ]
    # a crisis gets the help whether or not a model can answer
    crisis = meetara("ask", "My dad collapsed and he isn't breathing", "--domain", "fitness", env=env, timeout=600)
    assert crisis.returncode == 0, crisis.stderr
    assert "call your local emergency number" in " ".join(crisis.stdout.split())
