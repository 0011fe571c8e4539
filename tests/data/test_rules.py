"""Each data rule rejects a bad sample for the right reason, and lets a good one through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.quality_assurance import DataFilter
from agents.quality_assurance.thresholds import load_thresholds
from agents.text.signals import load_signals
from protocol.datasets import ConversationSample

SIGNALS = load_signals()
THRESHOLDS = load_thresholds("healthcare")

GOOD_USER = "I've been feeling really anxious about my sleep lately. How can I fall asleep faster at night?"
GOOD_REPLY = (
    "It sounds like this has been causing you a lot of worry, and that's understandable. "
    "Keep the same wake-up time every day so your body clock settles, and put screens away an hour "
    "before bed. How long has this been going on?"
)


def sample(user: str = GOOD_USER, reply: str = GOOD_REPLY, **fields: object) -> ConversationSample:
    data: dict[str, object] = {
        "id": "s1",
        "domain": "sleep",
        "category": "healthcare",
        "emotion": "anxious",
        "empathy_markers": ["acknowledge_feeling"],
        "crisis": False,
        "generator": "test",
        "messages": [
            {"role": "system", "content": "You are MeeTARA, a caring sleep coach."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ],
    }
    data.update(fields)
    return ConversationSample.model_validate(data)


def run_filter(tmp_path: Path, lines: list[str], rules: tuple[str, ...], **threshold_overrides: object):  # type: ignore[no-untyped-def]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(line + "\n" for line in lines))
    data_filter = DataFilter(
        domain="sleep",
        thresholds=THRESHOLDS.model_copy(update=threshold_overrides),
        signals=SIGNALS,
        embedder=None,
        references=None,
        rules=rules,  # type: ignore[arg-type]
    )
    report = data_filter.run(source, tmp_path / "kept.jsonl", tmp_path / "rej.jsonl")
    rejections = [json.loads(line) for line in (tmp_path / "rej.jsonl").read_text().splitlines()]
    kept = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    return report, kept, rejections


CHEAP = ("schema", "length", "pii", "crisis_safety", "empathy", "exact_duplicate", "near_duplicate")


def test_a_good_sample_passes_every_cheap_rule(tmp_path: Path) -> None:
    report, _, rejections = run_filter(tmp_path, [sample().model_dump_json()], CHEAP)
    assert (report.kept, rejections) == (1, [])


@pytest.mark.parametrize(
    ("line", "rule", "reason"),
    [
        ("{not json", "schema", "Invalid JSON"),
        ('{"id": "x"}', "schema", "Field required"),
        (sample().model_dump_json().replace('"role":"user"', '"role":"assistant"'), "schema", "alternate"),
        (sample(user="Hi?").model_dump_json(), "length", "user turn has 1 words"),
        (sample(reply="Sleep more.").model_dump_json(), "length", "assistant turn has 2 words"),
        (sample(user=GOOD_USER + " Email me at jo.bloggs@example.com.").model_dump_json(), "pii", "email"),
        (sample(user=GOOD_USER + " My number is 07700 900123.").model_dump_json(), "pii", "phone"),
        (sample(reply=GOOD_REPLY + " Card 4111 1111 1111 1111.").model_dump_json(), "pii", "card"),
        (
            sample(
                reply="Keep the same wake-up time every day and put screens away an hour before bed. "
                "What time do you usually go to bed?"
            ).model_dump_json(),
            "empathy",
            "sounds anxious",
        ),
    ],
)
def test_each_rule_rejects_for_the_right_reason(tmp_path: Path, line: str, rule: str, reason: str) -> None:
    report, kept, rejections = run_filter(tmp_path, [line], CHEAP)
    assert kept == []
    assert rejections[0]["rule"] == rule
    assert reason in rejections[0]["reason"]
    assert next(r for r in report.rules if r.rule == rule).rejected == 1


UNSAFE_CRISIS_REPLIES = [
    # No pointer to real help at all: general advice as if nothing happened.
    "It sounds like you're going through a hard time, and that's understandable. Try a warm bath and some "
    "calming music before bed, and keep a sleep diary. What does your evening routine look like?",
    # Diagnoses and plays it down, even though it mentions a helpline.
    "I'm sorry you feel this way. It's probably just stress and nothing to worry about, but you could call a "
    "helpline if it gets worse. Have you tried sleeping earlier?",
]


@pytest.mark.parametrize("reply", UNSAFE_CRISIS_REPLIES)
def test_crisis_rule_catches_a_planted_unsafe_reply(tmp_path: Path, reply: str) -> None:
    crisis = sample(
        user="I haven't slept in weeks and honestly I don't see the point of going on anymore.",
        reply=reply,
        emotion="distressed",
        crisis=True,
    )
    _, kept, rejections = run_filter(tmp_path, [crisis.model_dump_json()], CHEAP)
    assert kept == [] and rejections[0]["rule"] == "crisis_safety"


def test_crisis_rule_accepts_a_reply_that_points_to_real_help(tmp_path: Path) -> None:
    safe = sample(
        user="My husband collapsed in the bedroom and he's breathing really strangely and won't wake up.",
        reply="This sounds like a medical emergency. Please call your local emergency number immediately, such as "
        "911 in the US, 999 in the UK or 112 in Europe. Stay with him and follow the dispatcher's instructions. "
        "Is help on the way?",
        emotion="distressed",
        crisis=True,
    )
    _, kept, _ = run_filter(tmp_path, [safe.model_dump_json()], CHEAP)
    assert len(kept) == 1


def test_a_crisis_reply_giving_an_invented_number_is_rejected_with_the_number(tmp_path: Path) -> None:
    """A small model invents plausible hotlines; a wrong number in a crisis is worse than none."""
    invented = sample(
        user="I haven't slept in weeks and honestly I don't see the point of going on anymore.",
        reply="I'm so sorry you're feeling this way, and I'm glad you told me. Please call the crisis helpline "
        "at 1166 or text 988 right now. Are you safe tonight?",
        emotion="distressed",
        crisis=True,
    )
    _, kept, rejections = run_filter(tmp_path, [invented.model_dump_json()], CHEAP)
    assert kept == [] and rejections[0]["rule"] == "crisis_safety"
    assert "not a known help line: 1166" in rejections[0]["reason"]


@pytest.mark.parametrize(
    ("text", "invented"),
    [
        ("call 116 123 or 999, or text SHOUT to 85258", []),
        ("call the hotline on 1-800-799-7233 or text START to 88788", []),
        ("I took 20 paracetamol; if you took more than 4,000 mg call 111", []),
        ("call 999 if you took more than 400 mg", []),
        ("find a local Samaritans line: 1800 Samaritans, or their helpline at 989", ["1800", "989"]),
        ("call 988 or 4455 now", ["4455"]),
        ("ring 555-0199 straight away", ["555-0199"]),
    ],
)
def test_numbers_to_call_are_checked_against_the_known_help_lines(text: str, invented: list[str]) -> None:
    assert SIGNALS.invented_numbers(text) == invented
    assert SIGNALS.find_pii("call 1-800-799-7233 or 0808 2000 247") == []  # public lines are not personal data


def test_crisis_signal_in_the_text_is_checked_even_when_the_label_says_no(tmp_path: Path) -> None:
    mislabelled = sample(
        user="I think I took too many pills an hour ago and now my chest pain is getting worse.",
        reply="I understand that sounds worrying. Drink some water and rest for a while, and see how you feel "
        "in the morning. Did anything else happen today?",
        crisis=False,
    )
    _, kept, rejections = run_filter(tmp_path, [mislabelled.model_dump_json()], CHEAP)
    assert kept == [] and rejections[0]["rule"] == "crisis_safety"


def test_pii_scrub_mode_keeps_the_sample_without_the_data(tmp_path: Path) -> None:
    line = sample(user=GOOD_USER + " Write to jo.bloggs@example.com if needed.").model_dump_json()
    report, kept, _ = run_filter(tmp_path, [line], CHEAP, pii="scrub")
    assert report.kept == 1
    assert "[email]" in kept[0]["messages"][1]["content"] and "example.com" not in json.dumps(kept)
    assert next(r for r in report.rules if r.rule == "pii").scrubbed == 1


def test_exact_and_near_duplicates(tmp_path: Path) -> None:
    base = sample()
    same = base.model_copy(update={"id": "s2"})
    shouting = sample(user=GOOD_USER.upper(), reply=GOOD_REPLY.upper(), id="s3")
    near = sample(
        reply=GOOD_REPLY.replace("How long has this been going on?", "How long has it been going on?"),
        id="s4",
    )
    different = sample(
        user="I've been feeling really anxious because my toddler wakes at five every morning. What can I do?",
        reply="That sounds really stressful, and it's understandable to feel worn out. Try moving the toddler's "
        "bedtime a little later, use blackout curtains, and keep mornings calm and dim until a set time. "
        "What time does the toddler go to bed now?",
        id="s5",
    )
    lines = [s.model_dump_json() for s in (base, same, shouting, near, different)]
    report, kept, rejections = run_filter(tmp_path, lines, CHEAP)
    assert [k["id"] for k in kept] == ["s1", "s5"]
    assert {r["id"]: r["rule"] for r in rejections} == {
        "s2": "exact_duplicate",
        "s3": "exact_duplicate",
        "s4": "near_duplicate",
    }
    assert report.near_duplicate_rate == pytest.approx(1 / 5)


def test_reference_datasets_count_as_already_kept(tmp_path: Path) -> None:
    reference = tmp_path / "ref.jsonl"
    reference.write_text(sample(id="old").model_dump_json() + "\n")
    source = tmp_path / "in.jsonl"
    source.write_text(sample(id="new").model_dump_json() + "\n")
    data_filter = DataFilter(
        domain="sleep",
        thresholds=THRESHOLDS,
        signals=SIGNALS,
        embedder=None,
        references=None,
        rules=CHEAP,  # type: ignore[arg-type]
    )
    assert data_filter.remember(reference) == 1
    report = data_filter.run(source, tmp_path / "k.jsonl", tmp_path / "r.jsonl")
    assert report.kept == 0


def test_unknown_rule_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown rules"):
        DataFilter(
            domain="x",
            thresholds=THRESHOLDS,
            signals=SIGNALS,
            embedder=None,
            references=None,
            rules=("schema", "vibes"),
        )  # type: ignore[arg-type]


@pytest.mark.slow
def test_relevance_keeps_on_topic_and_rejects_off_topic(tmp_path: Path) -> None:
    from agents.quality_assurance.relevance import DomainReferences, default_embedder
    from runtime import load_catalog

    on_topic = sample(id="on")
    off_topic = sample(
        id="off",
        user="I've been feeling really anxious about a merge conflict in our git repository. How do I resolve it?",
        reply="It sounds like this has been causing you a lot of worry, and that's understandable. Open the "
        "conflicting files, pick the lines to keep, then commit the merge and run the test suite again. "
        "Which branch were you merging?",
    )
    source = tmp_path / "in.jsonl"
    source.write_text(on_topic.model_dump_json() + "\n" + off_topic.model_dump_json() + "\n")
    embedder = default_embedder()
    references = DomainReferences.from_catalog(embedder, load_catalog())
    data_filter = DataFilter(
        domain="sleep", thresholds=THRESHOLDS, signals=SIGNALS, embedder=embedder, references=references
    )
    report = data_filter.run(source, tmp_path / "k.jsonl", tmp_path / "r.jsonl")
    rejections = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert report.kept == 1
    assert rejections == [{"id": "off", "rule": "relevance", "reason": rejections[0]["reason"]}]
    assert report.mean_relevance is not None
