"""Client commands: ``agents``, ``call``, ``plan``, ``submit``, ``status``, ``jobs``, ``watch``."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from bus import Bus
from protocol import CallToolResult, InvalidParams, JobEvent, JobEventNotification
from protocol.agents.conductor import JobReport
from protocol.agents.gpu_optimization import RecommendProviderOutput, TrainingPlan
from protocol.agents.quality_assurance import ReportComparison
from runtime._catalog import load_catalog
from runtime._client import SwarmClient, ToolFailed
from runtime._job_events import job_events
from runtime.cli._app import app, console, run_async, state
from runtime.cli._batch_cmds import submit_batch_and_follow
from runtime.cli._render import (
    agents_table,
    comparison_table,
    event_line,
    plan_table,
    report_table,
    sparkline,
    tools_table,
)
from runtime.cli._session import client_session, is_embedded


def _print_result(result: CallToolResult) -> None:
    if result.structured_content is not None:
        console.print_json(data=result.structured_content)
    else:
        for block in result.content:
            console.print(block.text, highlight=False)


@app.command()
@run_async
async def agents(
    tools: Annotated[bool, typer.Option("--tools", help="Also list each agent's tools.")] = False,
) -> None:
    """List live agent instances (name, instance, host, in-flight work, tools)."""
    async with client_session(state.settings) as client:
        instances = await client.agents()
        console.print(agents_table(instances))
        if tools:
            for name in sorted({i.name for i in instances}):
                console.print(tools_table(name, await client.list_tools(name)))


@app.command()
@run_async
async def call(
    agent: Annotated[str, typer.Argument(help="Agent name, e.g. cost_monitor.")],
    tool: Annotated[str, typer.Argument(help="Tool name, e.g. price_table.")],
    args: Annotated[str, typer.Option("--args", help="Tool arguments as a JSON object.")] = "{}",
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the result (a call to an agent not running fails at once).")
    ] = 3600.0,
) -> None:
    """Call any agent tool and print its structured result."""
    try:
        arguments = json.loads(args)
    except ValueError as exc:
        raise InvalidParams(f"--args is not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise InvalidParams("--args must be a JSON object")
    async with client_session(state.settings) as client:
        result = await client.call(agent, tool, arguments, timeout=timeout)
    if result.is_error:
        raise ToolFailed(agent, tool, result)
    _print_result(result)


_NO_DATASET = {"uri": "file:///planning-only", "sha256": "0" * 64, "size": 0}
"""Planning reads no data: the dataset only identifies a real run."""


@app.command()
@run_async
async def plan(
    base: Annotated[
        str | None, typer.Option("--base-model", help="Plan for this base (default: each tier's own base).")
    ] = None,
    tier: Annotated[list[str] | None, typer.Option("--tier", help="Tier(s) to plan (default: all).")] = None,
) -> None:
    """How each tier would train: here (method, micro-batch, memory) and on each cloud GPU (LoRA or QLoRA, cost)."""
    catalog = load_catalog(state.settings.catalog_dir)
    tiers = [catalog.tier(name) for name in tier] if tier else list(catalog.tiers.values())
    async with client_session(state.settings) as client:
        for t in tiers:
            local, job_base = await _local_plan(client, t.name, base, t.base_model)
            # Priced for the tier's own base unless one is given (then the plan carries that base's shape).
            shape = None if base else t.base_shape.model_dump()
            priced = await _structured(client, "recommend_provider", {"plan": local.model_dump(), "shape": shape})
            options = RecommendProviderOutput.model_validate(priced)
            console.print(plan_table(t.name, base or t.base_model, local, options, job_base=f"{job_base}:"))


async def _local_plan(client: SwarmClient, tier: str, base: str | None, tier_base: str) -> tuple[TrainingPlan, str]:
    """This host's plan for the base a job would train (as the Conductor picks it), and that base's label:
    the one given, else the tier's on a CUDA host that has it, else the default."""
    arguments = {"target": "general_health", "dataset": _NO_DATASET, "tier": tier, "base_model": base}
    plan = TrainingPlan.model_validate(await _structured(client, "plan_training", arguments))
    if base is not None or plan.device.kind != "cuda":
        return plan, base or "default base"
    try:
        arguments["base_model"] = tier_base
        return TrainingPlan.model_validate(await _structured(client, "plan_training", arguments)), tier_base
    except ToolFailed:  # not on this host: a job would train the default
        return plan, "default base"


async def _structured(client: SwarmClient, tool: str, arguments: dict[str, Any]) -> Any:
    result = await client.call("gpu_optimization", tool, arguments)
    if result.is_error:
        raise ToolFailed("gpu_optimization", tool, result)
    return result.structured_content


class JobBars:
    """A job's steps as rich progress bars: one bar per step, its text saying what the step waits for."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.bars: dict[str, TaskID] = {}

    def _bar(self, step: str, total: float | None) -> TaskID:
        if step not in self.bars:
            self.bars[step] = self.progress.add_task(step, total=total)
        return self.bars[step]

    def apply(self, event: JobEvent) -> None:
        if not event.step:
            return
        if event.kind == "waiting":
            # The bar says what it waits for until the step's next event (its agent is back).
            self.progress.update(self._bar(event.step, None), description=f"{event.step}: {event.message}")
        elif event.step in self.bars and event.progress is None:
            self.progress.update(self.bars[event.step], description=event.step)
        if event.progress is not None:
            # A step of several calls (a category's data, domain by domain) counts each call's part.
            part = event.data.get("part")
            label = f"{event.step} {part}" if part else event.step
            bar = self._bar(event.step, event.total)
            self.progress.update(bar, completed=event.progress, total=event.total, description=label)

    def description(self, step: str) -> str:
        return str(self.progress.tasks[self.bars[step]].description)


async def _follow_job(bus: Bus, job_id: str, since: str) -> JobEvent | None:
    """Show live bars for a job's events until a terminal event; returns that event."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:g}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        bars = JobBars(progress)
        async for record, event in job_events(bus, job_id, since=since):
            bars.apply(event)
            if event.kind != "progress":
                progress.console.print(event_line(record), highlight=False)
            if event.terminal:
                return event
    return None


Generator = Annotated[
    str | None,
    typer.Option(
        "--generator",
        help="Who writes the training data: compositional, teacher (an LLM) or mixed (an LLM rewrites "
        "compositional drafts). Default: data.generator in jobs.yaml.",
    ),
]
TeacherUrl = Annotated[
    str | None,
    typer.Option("--teacher-url", help="The teacher's OpenAI-compatible API root, e.g. http://localhost:8080/v1."),
]
TeacherModel = Annotated[str | None, typer.Option("--teacher-model", help="Model name the teacher endpoint serves.")]
AllowRegression = Annotated[
    bool,
    typer.Option(
        "--allow-regression",
        help="Deploy even if the new version is worse than production on the same evaluation set.",
    ),
]
TeacherKeyEnv = Annotated[
    str | None,
    typer.Option("--teacher-api-key-env", help="Variable (*_API_KEY) holding the key, where Data Generation runs."),
]


def data_arguments(
    generator: str | None, teacher_url: str | None, teacher_model: str | None, teacher_api_key_env: str | None
) -> dict[str, Any]:
    """The job spec's ``generator`` and ``teacher`` fields from the command line (checked by the Conductor)."""
    teacher = {
        key: value
        for key, value in (("base_url", teacher_url), ("model", teacher_model), ("api_key_env", teacher_api_key_env))
        if value
    }
    if generator not in (None, "compositional", "teacher", "mixed"):
        raise InvalidParams(f"--generator must be compositional, teacher or mixed, not {generator!r}")
    if teacher and generator == "compositional":
        raise InvalidParams("--teacher-* options need --generator teacher or mixed")
    arguments: dict[str, Any] = {}
    if generator:
        arguments["generator"] = generator
    if teacher:
        arguments["teacher"] = teacher
    return arguments


def job_arguments(
    domain: str | None, category: str | None, universal: bool, tier: str, base_model: str | None, samples: int | None
) -> dict[str, Any]:
    chosen = [x for x in (domain, category, "universal" if universal else None) if x]
    if len(chosen) != 1:
        raise InvalidParams("give exactly one of --domain, --category or --universal")
    scope = "domain" if domain else "category" if category else "universal"
    arguments: dict[str, Any] = {"scope": scope, "target": chosen[0], "tier": tier}
    if base_model:
        arguments["base_model"] = base_model
    if samples:
        arguments["samples"] = samples
    return arguments


async def submit_and_follow(client: SwarmClient, arguments: dict[str, Any], *, wait: bool) -> None:
    """Submit a job; with ``wait`` show live bars until it ends, print its report, exit 1 unless done."""
    since = await client.bus.transport.last_id(client.bus.keys.events)
    result = await client.call("conductor", "submit_job", arguments)
    if result.is_error:
        raise ToolFailed("conductor", "submit_job", result)
    job_id = str((result.structured_content or {}).get("job_id", ""))
    console.print(f"job [bold]{job_id}[/] submitted")
    if not wait:
        return
    final = await _follow_job(client.bus, job_id, since)
    report = await client.call_model("conductor", "job_report", {"job_id": job_id}, JobReport)
    console.print(report_table(report, state.settings.models_dir))
    if final is None or final.state != "done":
        raise typer.Exit(1)


@app.command()
@run_async
async def submit(
    domain: Annotated[str | None, typer.Option(help="Train one domain (D model).")] = None,
    category: Annotated[str | None, typer.Option(help="Train one category (C model).")] = None,
    universal: Annotated[bool, typer.Option("--universal", help="Train on all 62 domains (A and B).")] = False,
    domains: Annotated[
        str | None, typer.Option(help="A batch of domain jobs: comma-separated domains, or `all` for all 62.")
    ] = None,
    per_domain: Annotated[
        bool, typer.Option("--per-domain", help="With --category: a batch of one job per domain of the category.")
    ] = False,
    tier: Annotated[str, typer.Option(help="lightning, fast, balanced or quality.")] = "lightning",
    base_model: Annotated[str | None, typer.Option(help="Base model path, hub id or GGUF file.")] = None,
    samples: Annotated[int | None, typer.Option(help="Training conversations per domain.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow progress until the job ends.")] = False,
    generator: Generator = None,
    teacher_url: TeacherUrl = None,
    teacher_model: TeacherModel = None,
    teacher_api_key_env: TeacherKeyEnv = None,
    allow_regression: AllowRegression = False,
) -> None:
    """Submit a training job (or, with --domains / --per-domain, a batch of domain jobs) and print its id
    (with --wait: follow it to the end)."""
    batch = batch_selection(domains, per_domain, domain=domain, category=category, universal=universal)
    arguments = job_arguments(domain, category, universal, tier, base_model, samples) if batch is None else {}
    arguments.update(data_arguments(generator, teacher_url, teacher_model, teacher_api_key_env))
    if allow_regression:
        arguments["allow_regression"] = True
    # An embedded swarm lives only as long as this command, so it always waits.
    follow = wait or is_embedded(state.settings)
    async with client_session(state.settings) as client:
        if batch is not None:
            options = {"tier": tier, "base_model": base_model, "samples": samples, **arguments}
            job = {k: v for k, v in options.items() if v is not None}
            await submit_batch_and_follow(client, {**batch, "job": job}, wait=follow)
        else:
            await submit_and_follow(client, arguments, wait=follow)


def batch_selection(
    domains: str | None, per_domain: bool, *, domain: str | None, category: str | None, universal: bool
) -> dict[str, Any] | None:
    """``submit_batch``'s selection from ``--domains`` / ``--category --per-domain``; ``None``: one job."""
    if domains is None and not per_domain:
        return None
    if per_domain and category is None:
        raise InvalidParams("--per-domain needs --category")
    if domain or universal or (domains is not None and (per_domain or category)):
        raise InvalidParams("a batch takes --domains, or --category with --per-domain, and no other target")
    if per_domain:
        return {"category": category}
    assert domains is not None
    if domains.strip() == "all":
        return {"all_domains": True}
    return {"domains": [d.strip() for d in domains.split(",") if d.strip()]}


async def _job_tool(client: SwarmClient, tool: str, arguments: dict[str, Any]) -> None:
    result = await client.call("conductor", tool, arguments)
    if result.is_error:
        raise ToolFailed("conductor", tool, result)
    _print_result(result)


@app.command()
@run_async
async def status(job_id: Annotated[str, typer.Argument(help="Job id from `meetara submit`.")]) -> None:
    """Show one job's state, steps and artifacts (in a terminal, its training loss as a chart too)."""
    async with client_session(state.settings) as client:
        result = await client.call("conductor", "job_status", {"job_id": job_id})
    if result.is_error:
        raise ToolFailed("conductor", "job_status", result)
    _print_result(result)
    if console.is_terminal:  # piped, the output stays one JSON document
        steps: list[dict[str, Any]] = (result.structured_content or {}).get("steps", [])
        train: dict[str, Any] = next((s for s in steps if s.get("name") == "train"), {})
        curve = (train.get("output") or {}).get("metrics", {}).get("loss_curve") or []
        if curve:
            chart = sparkline([loss for _, loss in curve])
            console.print(f"training loss {chart} {curve[0][1]:.3f} -> {curve[-1][1]:.3f}")


@app.command()
@run_async
async def compare(
    model_id: Annotated[str, typer.Argument(help="The model, e.g. meetara_general_health.")],
    baseline: Annotated[str, typer.Argument(help="The earlier version, e.g. v1.")],
    candidate: Annotated[str, typer.Argument(help="The version to compare with it, e.g. v2.")],
) -> None:
    """Two deployed versions side by side on their QA reports (exit 1 when the candidate is worse)."""
    arguments = {"model_id": model_id, "baseline": baseline, "candidate": candidate}
    async with client_session(state.settings) as client:
        comparison = await client.call_model("gguf_creation", "compare_versions", arguments, ReportComparison)
    console.print(comparison_table(comparison, candidate))
    if comparison.worse:
        raise typer.Exit(1)


@app.command()
@run_async
async def jobs() -> None:
    """List jobs known to the Conductor."""
    async with client_session(state.settings) as client:
        await _job_tool(client, "list_jobs", {})


@app.command()
@run_async
async def watch(
    since: Annotated[str, typer.Option("--from", help="Event id to start after; 0 = from the start.")] = "$",
    job: Annotated[str | None, typer.Option(help="Only this job's events.")] = None,
) -> None:
    """Print live events (job progress, state changes, agents starting and stopping)."""
    async with client_session(state.settings) as client:
        async for record in client.bus.events(since=since):
            message = record.envelope.message
            if job and not (isinstance(message, JobEventNotification) and message.params.job_id == job):
                continue
            console.print(f"[dim]{record.id}[/]  {event_line(record)}", highlight=False)
