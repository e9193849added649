"""A ticket's outcome rounds in Redis, and the `user.define_outcome` event that starts one.

A round begins when a ticket's work starts (its first message) and again after each Reopen: the
message goes to the session as a `user.define_outcome` whose description is the request (the
rubric's own description opens the rubric text), instead of a `user.message` (the API "begins
work on receipt" and
the Anthropic guides say not to send a `user.message` as well: reference managed-agents-api.md
section 13). The round's record says which rubric applies, whether drafts are held back from the
requester, and how the grader's verdicts went; the renderer reads it when a turn opens
(`app/render/outcome_tasks.py`) and the reports read it for verified resolutions.

Keys: `sa:outcome:<ticket>` (the current round, JSON), `sa:outcome:<ticket>:evals` (every
evaluation of every round, JSON list), `sa:outcome:<ticket>:seen` (evaluation event ids counted).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

from app.config.model import AppConfig
from app.config.outcomes import MAX_RUBRIC_CHARS, Rubric, label
from app.tickets.model import InboxMessage, Ticket

P = "sa:outcome:"
TTL_SECONDS = 400 * 24 * 3600  # past any report window and retention
# Opens the rubric text with the rubric's description (what a good answer is).
RUBRIC_HEAD = "What a good answer is: {description}\n\n"
# SDK BetaManagedAgentsSpanOutcomeEvaluationEndEvent.result: terminal verdicts.
TERMINAL = frozenset({"satisfied", "max_iterations_reached", "failed", "interrupted"})
UNMET = frozenset({"max_iterations_reached", "failed"})
REOPEN_PREFIX = "reopen-"  # app/slack/controls.py `reopen` queues its prompt under this ts


class Evaluation(BaseModel):
    """One `span.outcome_evaluation_end`: iteration, verdict, explanation, the grader's usage."""

    event_id: str
    round: int
    outcome_id: str
    iteration: int
    result: str
    explanation: str
    at: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0


class OutcomeRound(BaseModel):
    """The current round of a ticket: its rubric, and where the grader got to."""

    round: int = 1
    key: str  # the category key, or "default"
    name: str  # how the timeline names the rubric
    category: str | None = None
    customer_facing: bool = False
    max_iterations: int = 3
    message_ts: str
    outcome_id: str | None = None
    defined_at: str | None = None  # the echo's processed_at
    result: str = "pending"  # pending | evaluating | needs_revision | a terminal verdict
    explanation: str | None = None
    iterations: int = 0
    verdict_at: str | None = None  # processed_at of the terminal verdict
    idle_at: str | None = None  # the first idle after it: the round's turn is over
    handed_off: bool = False
    drafts: list[str] = Field(default_factory=list)  # staff notices sent, by evaluation event id

    @property
    def terminal(self) -> bool:
        return self.result in TERMINAL

    @property
    def satisfied(self) -> bool:
        return self.result == "satisfied"


def _key(ticket_id: str) -> str:
    return f"{P}{ticket_id}"


async def load(redis: aioredis.Redis, ticket_id: str) -> OutcomeRound | None:
    raw = await redis.get(_key(ticket_id))
    return OutcomeRound.model_validate_json(raw) if raw else None


async def save(redis: aioredis.Redis, ticket_id: str, record: OutcomeRound) -> None:
    await redis.set(_key(ticket_id), record.model_dump_json(), ex=TTL_SECONDS)


async def evaluations(redis: aioredis.Redis, ticket_id: str) -> list[Evaluation]:
    raw = await redis.lrange(f"{_key(ticket_id)}:evals", 0, -1)
    return [Evaluation.model_validate_json(r) for r in raw]


async def add_evaluation(redis: aioredis.Redis, ticket_id: str, evaluation: Evaluation) -> bool:
    """Keep an evaluation once (by event id); False when it was kept before."""
    key = _key(ticket_id)
    if not await redis.sadd(f"{key}:seen", evaluation.event_id):
        return False
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(f"{key}:evals", evaluation.model_dump_json())
        pipe.expire(f"{key}:evals", TTL_SECONDS)
        pipe.expire(f"{key}:seen", TTL_SECONDS)
        await pipe.execute()
    return True


def define_event(text: str, rubric: Rubric) -> dict[str, Any]:
    """The `user.define_outcome` for a request (SDK BetaManagedAgentsUserDefineOutcomeEventParams:
    description, rubric {type: text, content}, max_iterations). The description is the request
    as the requester wrote it ("What the agent should produce"); the rubric's description opens
    the rubric text, within the SDK's 262,144 characters."""
    content = RUBRIC_HEAD.format(description=rubric.description) + rubric.text
    return {
        "type": "user.define_outcome",
        "description": text,
        "rubric": {"type": "text", "content": content if len(content) <= MAX_RUBRIC_CHARS else rubric.text},
        "max_iterations": rubric.max_iterations,
    }


def request_text(event: Any) -> str | None:
    """The request a `user.define_outcome` echo carries (its description, see `define_event`)."""
    if getattr(event, "type", None) != "user.define_outcome":
        return None
    return str(getattr(event, "description", "") or "")


async def events_for(
    redis: aioredis.Redis, config: AppConfig, ticket: Ticket, message: InboxMessage
) -> list[dict[str, Any]]:
    """What to send for an inbox message: a `user.define_outcome` when it starts a round (the
    ticket's first message, or a Reopen's prompt) and a rubric applies, else a `user.message`."""
    plain = [{"type": "user.message", "content": [{"type": "text", "text": message.text}]}]
    env = config.environments.get(ticket.environment)
    outcomes = env.outcomes if env is not None else None
    existing = await load(redis, ticket.id)
    if existing is not None and existing.message_ts == message.ts and outcomes is not None:
        # A retry of the message that started this round: the same definition again.
        again = outcomes.default if existing.key == "default" else outcomes.categories.get(existing.key)
        if again is not None:
            return [define_event(message.text, again)]
    # Work starts with the ticket's first message (none delivered yet: a ticket that was already
    # talking when outcomes were turned on starts its first round at its next reopen).
    first = existing is None and not await redis.scard(f"sa:ticket:{ticket.id}:sent")  # TicketStore's key
    starts = first or message.ts.startswith(REOPEN_PREFIX)
    chosen = outcomes.choose(ticket.category) if outcomes is not None and starts else None
    if chosen is None or env is None:
        return plain
    key, rubric = chosen
    record = OutcomeRound(
        round=existing.round + 1 if existing else 1,
        key=key,
        name=label(key, rubric),
        category=ticket.category,
        customer_facing=env.customer_facing,
        max_iterations=rubric.max_iterations,
        message_ts=message.ts,
    )
    await save(redis, ticket.id, record)
    return [define_event(message.text, rubric)]


def parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def iso(value: Any) -> str | None:
    when = parse_time(value)
    return when.isoformat() if when is not None else None


def usage_fields(usage: Any) -> dict[str, int]:
    """The grader's usage (SDK BetaManagedAgentsSpanModelUsage) as plain counts."""
    if usage is None:
        return {}
    if not isinstance(usage, dict):
        usage = usage.model_dump() if hasattr(usage, "model_dump") else json.loads(json.dumps(usage, default=str))
    return {
        k: int(usage.get(k) or 0)
        for k in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    }
