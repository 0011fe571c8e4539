"""The training loop on the tiny model: learning, progress, checkpoints, resume after a kill, planning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from agents.gpu_optimization.checkpoints import UnusableCheckpoint, latest_checkpoint, load_checkpoint
from agents.gpu_optimization.planning import plan_training, recommend_provider
from agents.gpu_optimization.trainer import TrainingProgress, TrainingStopped, probe_micro_batch, run_training
from agents.llm.adapter_file import read_adapter
from protocol import MeetaraError
from protocol.agents.gpu_optimization import DeviceProfile, RecommendProviderInput, TrainingMetrics, TrainInput
from runtime import load_catalog
from tests.models.training_helpers import PLACEHOLDER, tiny_run

pytestmark = pytest.mark.timeout(600)


def test_training_lowers_held_out_loss_and_reports_progress(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    train, evaluation = conversations
    seen: list[TrainingProgress] = []
    result = run_training(
        tiny_run(tiny_gguf, model_cache, tmp_path / "run", train, evaluation, max_steps=8),
        on_progress=seen.append,
    )
    m = result.metrics
    assert m.steps == 8 and m.eval_loss is not None and m.eval_loss_base is not None
    assert m.eval_loss < m.eval_loss_base - 0.5, (m.eval_loss_base, m.eval_loss)
    assert m.trained_tokens < m.tokens  # prompts carry no loss
    assert m.padding_fraction < 0.25  # packed rows are mostly real tokens
    assert seen and seen[-1].step == 8 and seen[-1].tokens_per_second > 0
    adapter = read_adapter(result.adapter_path)
    assert adapter.rank == 8 and adapter.base_model == str(tiny_gguf.resolve())
    assert {"q_proj", "v_proj", "down_proj"} <= set(adapter.target_modules)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") is not None


def test_a_killed_run_resumes_from_its_last_checkpoint_and_ends_where_an_unbroken_run_ends(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = conversations
    run_dir = tmp_path / "killed"
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.models.kill_during_training",
            str(tiny_gguf),
            str(model_cache),
            str(run_dir),
            str(train),
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    assert load_checkpoint(latest_checkpoint(run_dir / "checkpoints")).step == 4  # type: ignore[arg-type]

    resumed = run_training(tiny_run(tiny_gguf, model_cache, run_dir, train, None))
    assert resumed.resumed_from_step == 4
    assert [step for step, _ in resumed.metrics.loss_curve] == [1, 2, 3, 4, 5, 6]

    unbroken = run_training(tiny_run(tiny_gguf, model_cache, tmp_path / "unbroken", train, None))
    assert unbroken.resumed_from_step is None
    a, b = read_adapter(resumed.adapter_path), read_adapter(unbroken.adapter_path)
    for key, tensor in b.tensors.items():
        torch.testing.assert_close(a.tensors[key], tensor, atol=1e-5, rtol=1e-4)


def test_stop_request_checkpoints_and_a_different_run_never_resumes_it(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = conversations
    run = tiny_run(tiny_gguf, model_cache, tmp_path / "run", train, None, checkpoint_every=5)
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(TrainingStopped) as stopped:
        run_training(run, should_stop=stop)
    assert stopped.value.step == 3
    assert load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints")).step == 3  # type: ignore[arg-type]
    other = tiny_run(tiny_gguf, model_cache, tmp_path / "run", train, None, checkpoint_every=5)
    other = type(other)(**{**{f: getattr(other, f) for f in other.__dataclass_fields__}, "run_key": "another-dataset"})
    assert run_training(other).resumed_from_step is None


# The header the trainer wrote before its loop state was typed (a plain dict, dumped as it was), read
# from the step-3 checkpoint of the run below made by that code.
UNTYPED_STATE = (
    '{"tokens": 5533, "trained_tokens": 3606, "computed": 6144, "curve": [[1, 26.12758], [2, 26.13704], '
    '[3, 25.83516]], "eval_loss_base": null, "micro_batch": 2, "run_key": "test-run"}'
)


def _rewrite_header(path: Path, **entries: str) -> None:
    """Replace entries of a checkpoint's JSON header; the tensors stay as they are."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() | entries
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    save_file(tensors, str(path), metadata=metadata)


def test_a_checkpoint_of_the_untyped_trainer_resumes_and_a_malformed_one_is_refused_by_name(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    train, _ = conversations
    run = tiny_run(tiny_gguf, model_cache, tmp_path / "run", train, None, checkpoint_every=5)
    calls: list[int] = []
    with pytest.raises(TrainingStopped):
        run_training(run, should_stop=lambda: calls.append(1) or len(calls) >= 3)
    old = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert old is not None and old.name == "step-0000003.safetensors"
    _rewrite_header(old, state=UNTYPED_STATE)

    resumed = run_training(run)
    assert resumed.resumed_from_step == 3
    assert resumed.metrics.loss_curve[:3] == [tuple(point) for point in json.loads(UNTYPED_STATE)["curve"]]
    assert [step for step, _ in resumed.metrics.loss_curve] == [1, 2, 3, 4, 5, 6]
    assert resumed.metrics.tokens > 5533 and resumed.metrics.micro_batch == 2

    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert last is not None
    _rewrite_header(last, state=UNTYPED_STATE.replace('"tokens"', '"token_count"'))
    with pytest.raises(UnusableCheckpoint, match=r"step-0000006\.safetensors: .*state\.token_count: Extra inputs"):
        run_training(run)
    _rewrite_header(last, format="meetara-checkpoint-0")
    with pytest.raises(UnusableCheckpoint, match=r"step-0000006\.safetensors: its format is 'meetara-checkpoint-0'"):
        load_checkpoint(last)
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(UnusableCheckpoint, match=r"step-0000006\.safetensors: it is not a readable safetensors"):
        load_checkpoint(last)


def test_micro_batch_probe_halves_on_out_of_memory() -> None:
    tried = []

    def attempt(size: int) -> None:
        tried.append(size)
        if size > 5:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert probe_micro_batch(attempt, 32) == 4
    assert tried == [32, 16, 8, 4]

    def broken(size: int) -> None:
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError):
        probe_micro_batch(broken, 8)

    def never_fits(size: int) -> None:
        raise torch.cuda.OutOfMemoryError("out of memory")

    with pytest.raises(MeetaraError, match="does not fit"):
        probe_micro_batch(never_fits, 4)


def _device(kind: str, bf16: bool = False, memory: float = 16.0) -> DeviceProfile:
    return DeviceProfile(
        kind=kind,  # type: ignore[arg-type]
        name=f"test {kind}",
        memory_gb=memory,
        compute_capability="8.0" if bf16 else "7.0",
        bf16=bf16,
        device_count=1,
        cpu_threads=2,
        torch_version=torch.__version__,
    )


def test_precision_and_batching_follow_the_device() -> None:
    catalog = load_catalog()
    job = TrainInput(target="general_health", dataset=PLACEHOLDER, tier="balanced")
    cpu = plan_training(job, _device("cpu"), catalog)
    assert (cpu.precision, cpu.loss_scaling, cpu.probe_micro_batch) == ("fp32", False, False)
    assert cpu.micro_batch * cpu.sequence_length <= 2048 and cpu.effective_batch >= 8
    ampere = plan_training(job, _device("cuda", bf16=True), catalog)
    assert (ampere.precision, ampere.loss_scaling, ampere.probe_micro_batch) == ("bf16", False, True)
    volta = plan_training(job, _device("cuda", bf16=False), catalog)
    assert (volta.precision, volta.loss_scaling) == ("fp16", True)
    assert all(plan.reasons for plan in (cpu, ampere, volta))
    assert cpu.max_steps == 846 and cpu.lora_r == 8 and cpu.learning_rate == 1e-4  # the proven defaults


def test_provider_recommendation_is_the_cheapest_offer_that_fits() -> None:
    catalog = load_catalog()
    job = TrainInput(target="general_health", dataset=PLACEHOLDER, tier="balanced")
    plan = plan_training(job, _device("cuda", bf16=True), catalog)
    out = recommend_provider(RecommendProviderInput(plan=plan), catalog)
    assert out.best is not None and out.best.fits_session
    fitting = [o for o in out.options if o.fits_session]
    assert out.best.estimated_usd == min(o.estimated_usd for o in fitting)
    assert all(catalog.gpus[o.gpu].memory_gb >= out.memory_gb for o in out.options)
    big = recommend_provider(RecommendProviderInput(plan=plan, memory_gb=60), catalog)
    assert {o.gpu for o in big.options} == {"H100"}
    no_spot = recommend_provider(RecommendProviderInput(plan=plan, spot_ok=False), catalog)
    assert {o.provider for o in no_spot.options} == {"colab_pro_plus"}


def test_each_tier_is_priced_with_lora_where_its_base_fits_and_qlora_where_only_4_bit_does() -> None:
    catalog = load_catalog()
    methods = {}
    for tier in catalog.tiers.values():
        job = TrainInput(target="general_health", dataset=PLACEHOLDER, tier=tier.name)
        plan = plan_training(job, _device("cuda", bf16=True), catalog)
        out = recommend_provider(RecommendProviderInput(plan=plan, shape=tier.base_shape), catalog)
        for option in out.options:
            assert option.memory_gb is not None and option.memory_gb <= catalog.gpus[option.gpu].memory_gb
            assert option.micro_batch is not None and option.micro_batch <= plan.micro_batch
            methods[tier.name, option.gpu] = option.method
    assert methods["lightning", "T4"] == "lora"  # SmolLM2-1.7B in bf16 fits 16 GB
    assert methods["quality", "T4"] == "qlora"  # a 14B base only fits 16 GB in 4 bits
    assert methods["quality", "H100"] == "lora"
    assert catalog.tier("quality").base_shape.parameters > 14e9


def _trained_at(
    base: Path,
    cache: Path,
    train: Path,
    root: Path,
    setting: str,
    values: tuple[float, ...],
    measure: Callable[[Path], float],
) -> dict[float, tuple[float, TrainingMetrics]]:
    """One tiny run per value of a training setting: what ``measure`` reads off its adapter, and its metrics."""
    out = {}
    for value in values:
        result = run_training(tiny_run(base, cache, root / f"{setting}-{value}", train, None, **{setting: value}))
        out[value] = measure(result.adapter_path), result.metrics
    return out


def test_the_opening_weight_teaches_how_replies_open(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    """Weighting each reply's first tokens (where a model decides whether it writes a crisis reply)
    lowers their loss beyond what the same steps unweighted reach; the reported curve stays the
    plain per-token mean, so runs stay comparable."""
    from agents.gpu_optimization.packing import OPENING_TOKENS, reply_starts
    from agents.llm.adapter_file import apply_adapter
    from agents.llm.base_model import load_base_model, load_tokenizer, resolve_base_model
    from agents.llm.chat_format import encode_conversation, load_conversations

    train, _ = conversations
    base = resolve_base_model(str(tiny_gguf))
    tokenizer = load_tokenizer(base, model_cache)
    samples = [
        s for m in list(load_conversations(train))[:40] if (s := encode_conversation(tokenizer, m, max_tokens=512))
    ]

    def opening_loss(adapter_path: Path) -> float:
        model = apply_adapter(load_base_model(base, model_cache, dtype=torch.float32), read_adapter(adapter_path))
        total, n = 0.0, 0
        with torch.no_grad():
            for s in samples:
                logprobs = torch.log_softmax(model(torch.tensor([s.input_ids])).logits[0].float(), -1)
                for start in reply_starts(s.labels):
                    for p in range(start, min(start + OPENING_TOKENS, len(s.labels))):
                        total -= float(logprobs[p - 1, s.labels[p]])
                        n += 1
        return total / n

    runs = _trained_at(tiny_gguf, model_cache, train, tmp_path, "opening_weight", (1.0, 20.0), opening_loss)
    losses = {weight: loss for weight, (loss, _) in runs.items()}
    curves = {weight: metrics.loss_curve for weight, (_, metrics) in runs.items()}
    assert losses[20.0] < losses[1.0] - 0.1, losses
    # Step 1 runs the untouched base on the same rows: the same plain mean, whatever the weights.
    assert curves[20.0][0][1] == pytest.approx(curves[1.0][0][1], rel=1e-5), curves


def test_the_decision_loss_teaches_the_crisis_decision_on_messages_it_never_saw(
    tiny_gguf: Path, model_cache: Path, conversations: tuple[Path, Path], tmp_path: Path
) -> None:
    """With the decision loss on, a run learns P(crisis opening) up after a crisis and down after an
    ordinary message, measured on the detector's held-out messages (never in the decision prompts),
    and its language-model loss still falls as far: the decision's gradient is clipped on its own."""
    from agents.gpu_optimization.decisions import DecisionSet, crisis_opening, decision_loss
    from agents.llm.adapter_file import apply_adapter
    from agents.llm.base_model import load_base_model, load_tokenizer, resolve_base_model
    from agents.llm.chat_format import encode_conversation, load_labelled_conversations
    from agents.text.crisis_measure import load_heldout

    train, _ = conversations
    base = resolve_base_model(str(tiny_gguf))
    tokenizer = load_tokenizer(base, model_cache)
    labelled = list(load_labelled_conversations(train))
    crisis_replies = [s for m, c in labelled if c and (s := encode_conversation(tokenizer, m, max_tokens=512))]
    opening = crisis_opening(crisis_replies)
    assert opening is not None
    heldout = load_heldout()
    crises = [text for text, _kind, _indirect in heldout.crises()]
    unseen = DecisionSet(
        tokenizer, [labelled[0][0][0]["content"]], crises, heldout.non_crises(), opening, seed=1, max_tokens=512
    )
    probe = unseen.for_step(0, 64)

    def held_out_loss(adapter_path: Path) -> float:
        model = apply_adapter(load_base_model(base, model_cache, dtype=torch.float32), read_adapter(adapter_path))
        with torch.no_grad():
            return float(decision_loss(model, probe, opening, "cpu", None))

    runs = _trained_at(tiny_gguf, model_cache, train, tmp_path, "decision_weight", (0.0, 5.0), held_out_loss)
    losses = {weight: loss for weight, (loss, _) in runs.items()}
    curves = {weight: metrics.decision_curve for weight, (_, metrics) in runs.items()}
    assert losses[5.0] < losses[0.0] - 0.5, losses
    assert curves[0.0] == [] and [step for step, _ in curves[5.0]] == [1, 2, 3, 4, 5, 6]
    assert curves[5.0][-1][1] < curves[5.0][0][1], curves[5.0]
    fall = {weight: metrics.loss_curve[0][1] - metrics.loss_curve[-1][1] for weight, (_, metrics) in runs.items()}
    assert fall[5.0] > 0.5 * fall[0.0] > 0, fall
