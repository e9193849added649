"""The outcome grader's usage as its own line in the cost ledger.

Each `span.outcome_evaluation_end` carries the grader's tokens for that evaluation cycle ("Sums
across all grader model requests within the cycle": SDK BetaManagedAgentsSpanOutcomeEvaluation
EndEvent.usage). They are priced here apart from the session's usage and kept per ticket and
per day by channel, environment and category, idempotent on the event id.

Not documented, so said plainly: which model grades (the usage names none; it is priced at the
ticket's agent model), whether `session.usage` already includes the grader's tokens (the
emulator's does not; if the API's did, the session line and this one would overlap), and the
cache-write duration (the span usage has one `cache_creation_input_tokens`: priced as 5-minute
writes).

Keys (under `sa:cost:grader:`): `ticket:<id>` (hash: counters and meta), `ticket:<id>:events`,
`days` (zset), `d:<day>:<dim>:<member>` (hash) and `d:<day>:<dim>:<member>:tickets` (set) for
dim in channel | environment | category | all (member `all`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from app.config.model import Pricing
from app.cost.model import Usage, compute_cost, from_nanos, to_nanos
from app.tickets.model import Ticket

P = "sa:cost:grader:"
GRADER_DIMENSIONS = ("channel", "environment", "category", "all")
COUNTERS = ("evaluations", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "total_n")
NO_CATEGORY = "(none)"


class GraderTotals(BaseModel):
    evaluations: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    total_n: int = 0
    tickets: int = 0

    @property
    def total_usd(self) -> Decimal:
        return from_nanos(self.total_n)

    @classmethod
    def from_hash(cls, raw: dict[Any, Any] | None) -> GraderTotals:
        raw = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (raw or {}).items()}
        return cls(**{f: int(raw[f]) for f in COUNTERS if raw.get(f)})

    def __add__(self, other: GraderTotals) -> GraderTotals:
        return GraderTotals(**{f: getattr(self, f) + getattr(other, f) for f in GraderTotals.model_fields})


def grader_usage(tokens: dict[str, int]) -> Usage:
    return Usage(
        input_tokens=tokens.get("input_tokens", 0),
        output_tokens=tokens.get("output_tokens", 0),
        cache_read_input_tokens=tokens.get("cache_read_input_tokens", 0),
        cache_write_5m_tokens=tokens.get("cache_creation_input_tokens", 0),
    )


class GraderLedger:
    def __init__(self, redis: aioredis.Redis, pricing: Pricing | None = None) -> None:
        self.redis = redis
        self.pricing = pricing or Pricing()

    async def record(
        self, ticket: Ticket, *, model: str, tokens: dict[str, int], event_id: str, at: datetime | None = None
    ) -> Decimal | None:
        """Count one evaluation's grader usage once; returns its cost, or None if counted before.
        Raises `UnknownModel` when `model` has no price."""
        key = f"{P}ticket:{ticket.id}"
        if not await self.redis.sadd(f"{key}:events", event_id):
            return None
        cost = compute_cost(grader_usage(tokens), model, self.pricing).total_usd
        counters = {
            "evaluations": 1,
            "input_tokens": tokens.get("input_tokens", 0),
            "output_tokens": tokens.get("output_tokens", 0),
            "cache_read_tokens": tokens.get("cache_read_input_tokens", 0),
            "cache_write_tokens": tokens.get("cache_creation_input_tokens", 0),
            "total_n": to_nanos(cost),
        }
        day = (at or datetime.now(UTC)).astimezone(UTC).date()
        members = {
            "channel": ticket.channel_id,
            "environment": ticket.environment,
            "category": ticket.category or NO_CATEGORY,
            "all": "all",
        }
        async with self.redis.pipeline(transaction=True) as pipe:
            for name, value in counters.items():
                if value:
                    pipe.hincrby(key, name, value)
            pipe.hset(key, mapping={"channel": ticket.channel_id, "environment": ticket.environment,
                                    "category": ticket.category or "", "team": ticket.team_id, "model": model})
            pipe.zadd(f"{P}days", {day.isoformat(): day.toordinal()})
            for dim, member in members.items():
                d = f"{P}d:{day.isoformat()}:{dim}:{member}"
                pipe.sadd(f"{P}d:{day.isoformat()}:{dim}", member)
                for name, value in counters.items():
                    if value:
                        pipe.hincrby(d, name, value)
                pipe.sadd(f"{d}:tickets", ticket.id)
            await pipe.execute()
        return cost

    async def ticket_totals(self, ticket_ids: Iterable[str]) -> dict[str, GraderTotals]:
        ids = list(ticket_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ticket_id in ids:
                pipe.hgetall(f"{P}ticket:{ticket_id}")
            raws = await pipe.execute()
        out = {}
        for ticket_id, raw in zip(ids, raws, strict=True):
            totals = GraderTotals.from_hash(raw)
            totals.tickets = 1 if raw else 0
            out[ticket_id] = totals
        return out

    async def total(
        self, *, since: date, until: date, dim: str = "all", member: str = "all"
    ) -> GraderTotals:
        """The grader's cost over [since, until] (UTC days) for one channel, environment,
        category, or everything."""
        if dim not in GRADER_DIMENSIONS:
            raise ValueError(f"dim must be one of {', '.join(GRADER_DIMENSIONS)}")
        days: list[Any] = await self.redis.zrangebyscore(f"{P}days", since.toordinal(), until.toordinal())
        names = [d.decode() if isinstance(d, bytes) else str(d) for d in days]
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(f"{P}d:{name}:{dim}:{member}")
                pipe.smembers(f"{P}d:{name}:{dim}:{member}:tickets")
            raw = await pipe.execute()
        totals = GraderTotals()
        tickets: set[Any] = set()
        for h, members in zip(raw[0::2], raw[1::2], strict=True):
            totals = totals + GraderTotals.from_hash(h)
            tickets |= set(members)
        totals.tickets = len(tickets)
        return totals
