"""Per-specialist cost: each subagent thread's usage, priced at its own model, in the ledger.

Session usage is not split by model (reference digest section 16); a multiagent session's
threads each report their own cumulative `usage` and `stats` (`sessions.threads.retrieve/list`,
SDK `types/beta/sessions/beta_managed_agents_session_thread_usage.py`). Its `active_seconds`
is the thread's running time; per-thread `list_cost` leaves session runtime out and is rounded
on its own, so thread figures do not add up to the session's, which stays authoritative (and is
what the ticket's main ledger records). This ledger says who spent what inside it.

Keys (under `sa:cost:`, beside `app/cost/ledger.py`'s):
  ticket:<id>:threads            hash: thread id -> ThreadCost JSON (the latest snapshot)
  d:<day>:specialist             set of specialists with cost that day
  d:<day>:specialist:<name>      hash: counters (tokens, active_us, tokens_n, list_cost_cents, threads)

A snapshot is cumulative: the day counters get the difference from the thread's previous one
(field-wise maximum, so a stale snapshot adds nothing). WATCH/MULTI keeps it atomic.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from redis.exceptions import WatchError

from app.config.model import Pricing
from app.config.specialists import display_name
from app.cost.model import CostBreakdown, UnknownModel, Usage, compute_cost, from_nanos, to_nanos

log = logging.getLogger(__name__)
P = "sa:cost:"
COUNTERS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "active_us",
            "tokens_n", "list_cost_cents", "threads")


class ThreadCost(BaseModel):
    thread_id: str
    specialist: str
    agent_name: str
    model: str
    usage: Usage
    tokens_usd: Decimal
    at: str

    def counters(self) -> dict[str, int]:
        u = self.usage
        return {
            "input_tokens": u.input_tokens, "output_tokens": u.output_tokens,
            "cache_read_tokens": u.cache_read_input_tokens,
            "cache_write_tokens": u.cache_write_5m_tokens + u.cache_write_1h_tokens,
            "active_us": int(u.active_seconds * 1_000_000), "tokens_n": to_nanos(self.tokens_usd),
            "list_cost_cents": u.list_cost_cents or 0, "threads": 1,
        }


class SpecialistTotals(BaseModel):
    specialist: str
    models: list[str] = []
    threads: int = 0
    active_seconds: Decimal = Decimal(0)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tokens_usd: Decimal = Decimal(0)
    list_cost_cents: int = 0

    @classmethod
    def from_counters(cls, name: str, raw: dict[str, int], models: list[str] | None = None) -> SpecialistTotals:
        return cls(
            specialist=name, models=models or [], threads=raw.get("threads", 0),
            active_seconds=Decimal(raw.get("active_us", 0)) / 1_000_000,
            input_tokens=raw.get("input_tokens", 0), output_tokens=raw.get("output_tokens", 0),
            cache_read_tokens=raw.get("cache_read_tokens", 0), cache_write_tokens=raw.get("cache_write_tokens", 0),
            tokens_usd=from_nanos(raw.get("tokens_n", 0)), list_cost_cents=raw.get("list_cost_cents", 0),
        )


def thread_model(thread: Any) -> str:
    model = getattr(getattr(thread, "agent", None), "model", None)
    return str(getattr(model, "id", None) or model or "")


def thread_cost(thread: Any, pricing: Pricing, at: datetime | None = None) -> ThreadCost | None:
    """A subagent thread's cost so far; None for the primary thread or a thread with no usage."""
    if getattr(thread, "parent_thread_id", None) is None or getattr(thread, "usage", None) is None:
        return None
    agent = getattr(thread, "agent", None)
    name = str(getattr(agent, "name", None) or getattr(agent, "type", "subagent"))
    usage = Usage.from_sdk(thread.usage)
    model = thread_model(thread)
    # Runtime is the session's, counted once however many threads run (digest section 16): the
    # thread's share is its tokens; its active seconds are shown as its runtime.
    tokens = usage.model_copy(update={"active_seconds": Decimal(0), "web_search_requests": 0})
    try:
        cost = compute_cost(tokens, model, pricing)
    except UnknownModel:
        log.warning("no price for a specialist's model", extra={"model": model})
        cost = CostBreakdown(model=model)
    return ThreadCost(
        thread_id=str(thread.id), specialist=display_name(name), agent_name=name, model=model, usage=usage,
        tokens_usd=cost.tokens_usd, at=(at or datetime.now(UTC)).isoformat(),
    )


class SpecialistLedger:
    def __init__(self, redis: aioredis.Redis, pricing: Pricing | None = None) -> None:
        self.redis = redis
        self.pricing = pricing or Pricing()

    async def record(self, ticket_id: str, thread: Any, today: date | None = None) -> ThreadCost | None:
        """Record a thread's cumulative snapshot (idempotent: the same snapshot adds nothing)."""
        new = thread_cost(thread, self.pricing)
        if new is None:
            return None
        key = f"{P}ticket:{ticket_id}:threads"
        day = (today or datetime.now(UTC).date()).isoformat()
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, new.thread_id)
                    old = ThreadCost.model_validate_json(raw) if raw else None
                    if old is not None:
                        new = new.model_copy(update={"usage": new.usage.maximum(old.usage),
                                                     "tokens_usd": max(new.tokens_usd, old.tokens_usd)})
                    before = old.counters() if old else {}
                    delta = {f: v - before.get(f, 0) for f, v in new.counters().items()}
                    pipe.multi()
                    pipe.hset(key, new.thread_id, new.model_dump_json())
                    if any(delta.values()):
                        pipe.sadd(f"{P}d:{day}:specialist", new.specialist)
                        for counter, value in delta.items():
                            if value:
                                pipe.hincrby(f"{P}d:{day}:specialist:{new.specialist}", counter, value)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    async def threads(self, ticket_id: str) -> list[ThreadCost]:
        raw = await self.redis.hgetall(f"{P}ticket:{ticket_id}:threads")
        return sorted((ThreadCost.model_validate_json(v) for v in raw.values()), key=lambda t: t.at)

    async def ticket_specialists(self, ticket_id: str) -> list[SpecialistTotals]:
        """The ticket's cost per specialist (its threads summed), largest first."""
        sums: dict[str, dict[str, int]] = {}
        models: dict[str, list[str]] = {}
        for t in await self.threads(ticket_id):
            counters = sums.setdefault(t.specialist, {})
            for f, v in t.counters().items():
                counters[f] = counters.get(f, 0) + v
            if t.model not in models.setdefault(t.specialist, []):
                models[t.specialist].append(t.model)
        out = [SpecialistTotals.from_counters(n, c, models[n]) for n, c in sums.items()]
        return sorted(out, key=lambda s: (-s.tokens_usd, s.specialist))

    async def day(self, day: date) -> list[SpecialistTotals]:
        names = sorted(str(n) for n in await self.redis.smembers(f"{P}d:{day.isoformat()}:specialist"))
        out = []
        for name in names:
            raw = await self.redis.hgetall(f"{P}d:{day.isoformat()}:specialist:{name}")
            out.append(SpecialistTotals.from_counters(name, {str(k): int(v) for k, v in raw.items()}))
        return out


def _sum(name: str, rows: list[SpecialistTotals]) -> SpecialistTotals:
    total = SpecialistTotals(specialist=name)
    for r in rows:
        total = total.model_copy(update={
            "threads": total.threads + r.threads, "active_seconds": total.active_seconds + r.active_seconds,
            "input_tokens": total.input_tokens + r.input_tokens, "output_tokens": total.output_tokens + r.output_tokens,
            "cache_read_tokens": total.cache_read_tokens + r.cache_read_tokens,
            "cache_write_tokens": total.cache_write_tokens + r.cache_write_tokens,
            "tokens_usd": total.tokens_usd + r.tokens_usd, "list_cost_cents": total.list_cost_cents + r.list_cost_cents,
        })
    return total


async def specialists_between(redis: aioredis.Redis, since: date, until: date) -> list[SpecialistTotals]:
    """Per specialist, the days `since`..`until` (UTC, inclusive) summed; costliest first."""
    from datetime import timedelta

    ledger = SpecialistLedger(redis)
    by_name: dict[str, list[SpecialistTotals]] = {}
    day = since
    while day <= until:
        for row in await ledger.day(day):
            by_name.setdefault(row.specialist, []).append(row)
        day += timedelta(days=1)
    rows = [_sum(name, found) for name, found in by_name.items()]
    return sorted(rows, key=lambda r: (-r.tokens_usd, r.specialist))


def render_specialists(rows: list[SpecialistTotals], fmt: str) -> str:
    """`support-agent costs --by specialist`: table, csv or json."""
    import csv
    import io
    import json

    from app.cost.model import format_duration, format_tokens, format_usd

    records = [{
        "specialist": r.specialist, "threads": r.threads, "active_seconds": float(r.active_seconds),
        "input_tokens": r.input_tokens, "output_tokens": r.output_tokens, "cache_read_tokens": r.cache_read_tokens,
        "cache_write_tokens": r.cache_write_tokens, "tokens_usd": str(r.tokens_usd),
        "list_cost_cents": r.list_cost_cents,
    } for r in rows]
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["specialist"])
        writer.writeheader()
        writer.writerows(records)
        return out.getvalue().rstrip("\n")
    lines = [f"{'specialist':<24} {'threads':>7} {'runtime':>8} {'tokens':>8} {'token cost':>11}"]
    for r in rows:
        tokens = r.input_tokens + r.output_tokens + r.cache_read_tokens + r.cache_write_tokens
        lines.append(f"{r.specialist:<24} {r.threads:>7} {format_duration(r.active_seconds):>8} "
                     f"{format_tokens(tokens):>8} {format_usd(r.tokens_usd):>11}")
    lines.append("(tokens at each specialist's own model; runtime is counted once in the session's cost)")
    return "\n".join(lines)
