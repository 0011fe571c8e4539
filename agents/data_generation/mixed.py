"""The mixed generator: compositional drafts, each rewritten in fresh words by the teacher LLM.

The draft fixes what the conversation is about (topic, situation, feeling, crisis or not, the
advice and any emergency numbers); the teacher only paraphrases it, with the same structured
output as the teacher generator (a schema of the rewritten turns). A rewrite costs fewer tokens
than writing from scratch and varies the templates' wording; QA still judges the result, so a
rewrite that drops an emergency number or the advice is rejected like any other sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from agents.data_generation.compositional import CompositionalGenerator
from agents.data_generation.teacher import MalformedTeacherOutput, TeacherGenerator, TeacherRequest, TeacherTurns
from protocol.datasets import ConversationSample

__all__ = ["REWRITE_SCHEMA", "MixedGenerator", "Rewrite", "parse_rewrite"]

_INSTRUCTIONS = """Rewrite this conversation between a user and MeeTARA, an empathetic {role}, in fresh, \
natural words. Keep the meaning: the user's situation, question and feeling, every piece of advice, \
the follow-up question, and any phone number, emergency service or crisis line exactly as written. \
Do not add new advice. The user speaks in the first person.
Conversation (JSON): {draft}
Reply with ONE JSON object with the keys "user" and "assistant"{followup_keys}."""


class Rewrite(TeacherTurns):
    """The rewritten turns; the draft's labels stay."""


def _schema(followup: bool) -> dict[str, Any]:
    schema = Rewrite.model_json_schema()
    keys = ["user", "assistant", *(["followup_user", "followup_assistant"] if followup else [])]
    # Only the draft's turns: a single exchange is not given follow-up keys to fill.
    schema["properties"] = {k: {"type": "string", **_bounds(schema["properties"][k])} for k in keys}
    schema["required"] = keys
    return schema


def _bounds(prop: dict[str, Any]) -> dict[str, Any]:
    variants = [prop, *prop.get("anyOf", [])]
    bounds = {}
    for variant in variants:
        bounds.update({k: variant[k] for k in ("minLength", "maxLength") if k in variant})
    bounds.setdefault("minLength", 10)
    return bounds


REWRITE_SCHEMA: dict[str, Any] = _schema(followup=False)
REWRITE_SCHEMA_TWO_EXCHANGES: dict[str, Any] = _schema(followup=True)


def parse_rewrite(text: str, exchanges: int) -> list[str]:
    """The rewritten turns (user first), as many as the draft's; ``MalformedTeacherOutput`` otherwise."""
    try:
        out = Rewrite.model_validate(json.loads(text, strict=False))
    except ValueError as exc:  # invalid JSON, or a ValidationError
        detail = exc.errors(include_input=False)[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise MalformedTeacherOutput(f"not a rewrite: {detail}") from None
    turns = [out.user, out.assistant]
    if exchanges == 2:
        if not (out.followup_user and out.followup_assistant):
            raise MalformedTeacherOutput("the rewrite dropped the second exchange")
        turns += [out.followup_user, out.followup_assistant]
    return turns


class MixedGenerator(TeacherGenerator):
    """Asks the teacher to paraphrase each compositional draft."""

    name = "mixed"
    schema_name = "rewrite"

    def __init__(self, drafts: CompositionalGenerator, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, crisis_fraction=drafts.crisis_fraction, **kwargs)
        self.drafts = drafts

    def _request(self, seed: int, index: int, topic_weights: Mapping[str, float] | None) -> TeacherRequest:
        draft = self.drafts.sample(seed, index, topic_weights=topic_weights)
        turns = [m for m in draft.messages if m.role != "system"]
        two = len(turns) == 4
        shown = {
            "user": turns[0].content,
            "assistant": turns[1].content,
            **({"followup_user": turns[2].content, "followup_assistant": turns[3].content} if two else {}),
        }
        prompt = _INSTRUCTIONS.format(
            role=self.material.role,
            draft=json.dumps(shown, ensure_ascii=False),
            followup_keys=', "followup_user" and "followup_assistant"' if two else "",
        )
        system = draft.messages[0].content
        request_seed = int.from_bytes(hashlib.sha256(f"mixed:{draft.id}".encode()).digest()[:4], "big")
        schema = REWRITE_SCHEMA_TWO_EXCHANGES if two else REWRITE_SCHEMA
        return TeacherRequest(
            index=index,
            system=system,
            prompt=prompt,
            seed=request_seed,
            topic=draft.topic or "",
            split_key=draft.split_key or draft.id,
            crisis=draft.crisis,
            key=self._key(system, prompt, request_seed, schema),
            draft=draft,
            schema=schema,
        )

    def _sample(self, seed: int, request: TeacherRequest, text: str) -> ConversationSample | None:
        draft = request.draft
        assert draft is not None  # every mixed request carries its draft
        exchanges = len(draft.turns("user"))
        try:
            turns = parse_rewrite(text, exchanges)
        except MalformedTeacherOutput as exc:
            self._malformed(request, exc)
            return None
        sample = self._conversation(f"{self.domain.name}-m{seed}-{request.index:06d}", request, turns, draft.emotion)
        return sample.model_copy(update={"topic": draft.topic})
