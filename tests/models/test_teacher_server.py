"""The teacher generator against a real OpenAI-compatible server: llama-cpp-python's own, serving SmolLM2.

The server is started by the test (``python -m llama_cpp.server``, the ``[server]`` extra) on the
pip-shipped SmolLM2-135M-Instruct GGUF. Its completions are constrained by our conversation schema,
so every answer parses; what a 135M model writes is then judged by the same QA filter as any data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from agents.data_generation import CompositionalGenerator, load_common, load_material
from agents.data_generation.dataset_files import write_batch
from agents.data_generation.mixed import MixedGenerator
from agents.data_generation.teacher import SCHEMA, TeacherGenerator
from agents.data_generation.teacher_journal import TeacherJournal
from agents.llm.default_base import default_base_gguf
from agents.quality_assurance import QualityAssuranceAgent
from agents.testing import tiny_job_env
from agents.text.signals import load_signals
from protocol.agents.data_generation import TeacherSettings
from protocol.agents.quality_assurance import FilterDatasetOutput
from runtime import load_catalog, open_swarm
from runtime.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2"
SERVER_START_S = 300.0
"""Horizon for the server to load the model and answer ``/v1/models`` on a slow, busy machine."""
REPORT_BY_STEP = '{"period": "all", "by": "step"}'
DOMAIN = "financial"
"""Not crisis-sensitive, and its category's model-QA mark is lowered for the tiny model (``tiny_catalog``)."""


@pytest.fixture(scope="module")
def teacher_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of a llama-cpp-python server on SmolLM2, stopped after the module."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("teacher") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_base_gguf())]
    command += ["--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096"]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"the teacher server exited ({server.returncode}): {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the teacher server did not answer within {SERVER_START_S:.0f} s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.timeout(900)
async def test_a_real_teacher_server_answers_within_the_schema_and_its_samples_go_through_the_filter(  # type: ignore[no-untyped-def]
    teacher_url: str, tmp_path: Path, settings_factory, memory_url: str
) -> None:
    settings = TeacherSettings(base_url=teacher_url, model=MODEL, max_tokens=1024, concurrency=2)
    journal = TeacherJournal(tmp_path / "journal.jsonl")
    domain = load_catalog().domain(DOMAIN)
    generator = TeacherGenerator(
        domain, load_material(domain.category, DOMAIN), load_signals(), settings, journal=journal
    )
    started = time.monotonic()
    samples = await generator.generate(0, range(8))
    seconds = time.monotonic() - started
    await generator.aclose()

    answers = [json.loads(line)["text"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(answers) == 8
    for answer in answers:  # the grammar from the schema: every answer is one object with exactly our keys
        assert set(json.loads(answer, strict=False)) == set(SCHEMA["properties"]), answer
    usage = generator.usage
    assert usage.requests == 8 and usage.prompt_tokens > 0 and usage.completion_tokens > 0 and usage.usd == 0.0
    valid = [s for s in samples if s is not None]
    assert usage.malformed == 8 - len(valid)  # limits the grammar leaves to validation (lengths, follow-ups)
    print(  # the measured figures, for the record (pytest -s)
        f"teacher: 8 answers in {seconds:.1f} s ({8 / seconds:.3f} samples/s, "
        f"{usage.completion_tokens / seconds:.1f} completion tokens/s); JSON parse 8/8; "
        f"valid conversations {len(valid)}/8"
    )
    assert valid, "no answer of the teacher was a valid conversation"

    batch = tmp_path / "batch.jsonl"
    write_batch(batch, valid)
    async with open_swarm(settings_factory(memory_url), [QualityAssuranceAgent]) as swarm:
        ref = await swarm.artifacts.put_file(batch, media_type="application/jsonl")
        filtered = await swarm.client.call_model(
            "quality_assurance",
            "filter_dataset",
            {"dataset": ref.model_dump(mode="json"), "domain": DOMAIN},
            FilterDatasetOutput,
            timeout=600,
        )
    report = filtered.report
    assert report.input == len(valid)
    assert report.kept + sum(rule.rejected for rule in report.rules) == report.input
    print(f"filter: kept {report.kept} of {report.input}: " + ", ".join(f"{r.rule} {r.rejected}" for r in report.rules))


@pytest.mark.slow
@pytest.mark.anyio
@pytest.mark.timeout(900)
async def test_a_real_teacher_server_rewrites_compositional_drafts(teacher_url: str, tmp_path: Path) -> None:
    """Mixed mode: SmolLM2 paraphrases drafts under the rewrite schema; every answer parses with the draft's turns."""
    domain = load_catalog().domain(DOMAIN)
    material = load_material(domain.category, DOMAIN)
    drafts = CompositionalGenerator(domain, material, load_common(), load_signals())
    settings = TeacherSettings(base_url=teacher_url, model=MODEL, max_tokens=1024, concurrency=2)
    journal = TeacherJournal(tmp_path / "journal.jsonl")
    generator = MixedGenerator(drafts, domain, material, load_signals(), settings, journal=journal)
    started = time.monotonic()
    samples = await generator.generate(0, range(6))
    seconds = time.monotonic() - started
    await generator.aclose()

    answers = [json.loads(line)["text"] for line in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert len(answers) == 6
    for answer in answers:
        assert {"user", "assistant"} <= set(json.loads(answer, strict=False)), answer
    valid = [s for s in samples if s is not None]
    assert generator.usage.malformed == 6 - len(valid)
    for sample in valid:
        draft = drafts.sample(0, int(sample.id.rsplit("-", 1)[1]))
        assert sample.generator == "mixed" and (sample.emotion, sample.topic) == (draft.emotion, draft.topic)
        assert len(sample.messages) == len(draft.messages)
    print(
        f"mixed: 6 rewrites in {seconds:.1f} s ({6 / seconds:.3f} samples/s, "
        f"{generator.usage.completion_tokens / 6:.0f} completion tokens each); valid {len(valid)}/6"
    )


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_meetara_run_with_the_teacher_generator_trains_and_deploys(
    teacher_url: str, tmp_path: Path, tiny_gguf: Path, model_cache: Path
) -> None:
    """``meetara run --generator teacher``: the data a real teacher wrote is filtered, trained on and deployed."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEETARA_")}
    base["MEETARA_ARTIFACT_URL"] = str(tmp_path / "artifacts")
    env = tiny_job_env(base, tmp_path, model_cache, cpu_max_steps=4)  # as cheap as a job gets
    jobs_yaml = Path(env["MEETARA_CATALOG_DIR"]) / "jobs.yaml"
    jobs = yaml.safe_load(jobs_yaml.read_text())
    # A 135M teacher writes few conversations QA keeps: the gate's pass-rate floor is for real teachers.
    jobs["min_data_pass_rate"] = 0.0
    # The configured teacher defaults; the command line adds the endpoint and the model.
    jobs["data"]["teacher"].update({"concurrency": 2, "requests_per_minute": 600})
    jobs_yaml.write_text(yaml.safe_dump(jobs))

    args = ["run", "--domain", DOMAIN, "--base-model", str(tiny_gguf), "--samples", "10"]
    args += ["--generator", "teacher", "--teacher-url", teacher_url, "--teacher-model", MODEL]
    out = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args],
        cwd=ROOT,
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=2100,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())
    assert f"training data written by the teacher {MODEL}" in text
    assert "state=done" in text
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert [(m["model_id"], m["version"]) for m in manifest["models"]] == [(f"meetara_{DOMAIN}", "v1")]

    (training,) = (tmp_path / "data" / "training").rglob(f"{DOMAIN}_training_data.jsonl")
    lines = [json.loads(line) for line in training.read_text().splitlines()]
    assert lines and all(line["generator"] == "teacher" for line in lines)
    (journal,) = (tmp_path / "data" / "cache" / "teacher" / DOMAIN).glob("*.jsonl")
    paid = len(journal.read_text().splitlines())
    assert paid >= len(lines)  # each kept conversation was one answer, journaled once

    costs = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "call", "cost_monitor", "cost_report", "--args", REPORT_BY_STEP],
        cwd=ROOT,
        env={**env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert costs.returncode == 0, costs.stderr[-3000:]
    rows = {row["key"]: row for row in json.loads(costs.stdout)["rows"]}
    assert rows["data"]["tokens"] > paid * 10  # the teacher's prompt and completion tokens reached the ledger
