"""The cost ledger in Redis: per-ticket running totals and turn deltas, and daily aggregates.

The API reports cumulative usage; each snapshot recorded here is priced as the delta from the
ticket's previous snapshot (field-wise maximum, so a stale or out-of-order snapshot adds
nothing). Recording is atomic (WATCH/MULTI) and idempotent on the source event id.

Money is kept as integer nano-dollars (`HINCRBY`, no float drift) and read back as `Decimal`.
A ticket's exact running cost is kept too (`cost_exact`), and each turn adds the difference of
the rounded running totals, so rounding never accumulates over turns.

Keys (all under `sa:cost:`):
  ticket:<id>                   hash: counters, meta (team, channel, ...), `snapshot` (cumulative
                                Usage JSON), `cost_exact` (CostBreakdown JSON), `closed_turns`
  ticket:<id>:events            set of source event ids already recorded
  ticket:<id>:turns             list of TurnCost JSON, oldest first
  days                          zset of days (YYYY-MM-DD) with any cost, scored by ordinal
  d:<day>:all                   hash: counters for the whole day
  d:<day>:all:tickets           set of ticket ids with cost that day
  d:<day>:<dim>                 set of members of dim (ticket | channel | environment)
  d:<day>:<dim>:<member>        hash: counters
  d:<day>:<dim>:<member>:tickets   set of ticket ids (channel and environment only)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field
from redis.exceptions import WatchError

from app.config.model import Pricing
from app.cost.model import (
    CostBreakdown,
    Usage,
    check_list_cost,
    compute_cost,
    from_nanos,
    to_nanos,
)
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

P = "sa:cost:"
Dimension = Literal["ticket", "channel", "environment", "day"]
DIMENSIONS: tuple[str, ...] = ("ticket", "channel", "environment", "day")

# Integer counters kept for a ticket and for every aggregate.
MONEY_FIELDS = (
    "runtime_n", "input_n", "output_n", "cache_read_n", "cache_write_5m_n",
    "cache_write_1h_n", "web_search_n", "total_n",
)
COUNT_FIELDS = (
    "active_us", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_5m_tokens", "cache_write_1h_tokens", "web_searches", "turns",
)
# Money counters and the CostBreakdown field each one sums.
MONEY_COUNTERS = {
    "runtime_n": "runtime_usd",
    "input_n": "input_usd",
    "output_n": "output_usd",
    "cache_read_n": "cache_read_usd",
    "cache_write_5m_n": "cache_write_5m_usd",
    "cache_write_1h_n": "cache_write_1h_usd",
    "web_search_n": "web_search_usd",
}
META_FIELDS = ("team", "channel", "environment", "session", "requester", "model", "number", "title")


class Totals(BaseModel):
    """Summed cost and usage; money in integer nano-dollars, exposed as `Decimal`."""

    runtime_n: int = 0
    input_n: int = 0
    output_n: int = 0
    cache_read_n: int = 0
    cache_write_5m_n: int = 0
    cache_write_1h_n: int = 0
    web_search_n: int = 0
    total_n: int = 0
    active_us: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_searches: int = 0
    turns: int = 0
    tickets: int = 0

    @classmethod
    def from_hash(cls, raw: dict[str, str] | None) -> Totals:
        raw = raw or {}
        return cls(**{f: int(raw[f]) for f in (*MONEY_FIELDS, *COUNT_FIELDS) if raw.get(f)})

    @classmethod
    def of_turn(
        cls,
        usage: Usage,
        cost: CostBreakdown,
        *,
        before: Usage | None = None,
        cost_before: CostBreakdown | None = None,
    ) -> Totals:
        """The counters one turn adds.

        With `before` / `cost_before` (the ticket's exact running figures before the turn), money
        and active time are differences of rounded running totals, so a ticket's sums telescope
        to its exact total rounded once: no drift however many turns it has.
        """
        cost_before = cost_before or CostBreakdown(model=cost.model)
        cost_after = add_costs(cost_before, cost)
        money = {
            counter: to_nanos(getattr(cost_after, name)) - to_nanos(getattr(cost_before, name))
            for counter, name in MONEY_COUNTERS.items()
        }
        active_before = before.active_seconds if before is not None else Decimal(0)
        return cls(
            **money,
            total_n=sum(money.values()),
            active_us=_micros(active_before + usage.active_seconds) - _micros(active_before),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_input_tokens,
            cache_write_5m_tokens=usage.cache_write_5m_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            web_searches=usage.web_search_requests,
            turns=1,
        )

    def counters(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in (*MONEY_FIELDS, *COUNT_FIELDS)}

    def __add__(self, other: Totals) -> Totals:
        return Totals(**{f: getattr(self, f) + getattr(other, f) for f in Totals.model_fields})

    # -- money ---------------------------------------------------------------------------

    @property
    def runtime_usd(self) -> Decimal:
        return from_nanos(self.runtime_n)

    @property
    def tokens_usd(self) -> Decimal:
        return from_nanos(
            self.input_n + self.output_n + self.cache_read_n + self.cache_write_5m_n + self.cache_write_1h_n
        )

    @property
    def web_search_usd(self) -> Decimal:
        return from_nanos(self.web_search_n)

    @property
    def total_usd(self) -> Decimal:
        return from_nanos(self.total_n)

    @property
    def active_seconds(self) -> Decimal:
        return Decimal(self.active_us).scaleb(-6)

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens + self.output_tokens + self.cache_read_tokens
            + self.cache_write_5m_tokens + self.cache_write_1h_tokens
        )

    def usage(self) -> Usage:
        return Usage(
            active_seconds=self.active_seconds,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_input_tokens=self.cache_read_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens,
            web_search_requests=self.web_searches,
        )

    def breakdown(self, model: str = "") -> CostBreakdown:
        return CostBreakdown(
            model=model,
            runtime_usd=from_nanos(self.runtime_n),
            input_usd=from_nanos(self.input_n),
            output_usd=from_nanos(self.output_n),
            cache_read_usd=from_nanos(self.cache_read_n),
            cache_write_5m_usd=from_nanos(self.cache_write_5m_n),
            cache_write_1h_usd=from_nanos(self.cache_write_1h_n),
            web_search_usd=from_nanos(self.web_search_n),
        )


def _micros(seconds: Decimal) -> int:
    return int((seconds * 10**6).to_integral_value(ROUND_HALF_EVEN))


def add_costs(a: CostBreakdown, b: CostBreakdown) -> CostBreakdown:
    """Field-wise sum of two breakdowns (exact); the model is `b`'s."""
    sums = {name: getattr(a, name) + getattr(b, name) for name in MONEY_COUNTERS.values()}
    return CostBreakdown(model=b.model, **sums)


class TurnCost(BaseModel):
    """One recorded snapshot: what it added to the ticket, and the ticket's total after it."""

    model_config = ConfigDict(frozen=True)

    ticket_id: str
    session_id: str | None = None
    event_id: str
    at: datetime
    model: str
    delta: Usage
    cost: CostBreakdown
    cumulative: Usage
    ticket_total_usd: Decimal
    list_cost_warning: str | None = None

    @property
    def day(self) -> date:
        return self.at.astimezone(UTC).date()


class TicketCost(BaseModel):
    """A ticket's running totals and what we know about it."""

    ticket_id: str
    totals: Totals
    team: str = ""
    channel: str = ""
    environment: str = ""
    session: str = ""
    requester: str = ""
    model: str = ""
    number: int | None = None
    title: str = ""
    snapshot: Usage = Field(default_factory=Usage)


class Row(BaseModel):
    """One line of a report: a ticket, channel, environment or day, and its totals."""

    by: str
    key: str
    totals: Totals
    # For ticket rows: where the ticket lives.
    channel: str = ""
    environment: str = ""
    number: int | None = None
    title: str = ""


def _day(d: date) -> str:
    return d.isoformat()


def _meta(ticket: Ticket, model: str) -> dict[str, str]:
    return {
        "team": ticket.team_id,
        "channel": ticket.channel_id,
        "environment": ticket.environment,
        "session": ticket.session_id or "",
        "requester": ticket.requester_id,
        "model": model,
        "number": str(ticket.number),
        "title": ticket.title[:200],
    }


class CostLedger:
    def __init__(self, redis: aioredis.Redis, pricing: Pricing | None = None) -> None:
        self.redis = redis
        self.pricing = pricing or Pricing()

    # -- recording -----------------------------------------------------------------------

    async def record_snapshot(
        self,
        ticket: Ticket,
        *,
        model: str,
        usage_snapshot: Any,
        source_event_id: str,
        at: datetime | None = None,
    ) -> TurnCost | None:
        """Count a cumulative usage snapshot once; returns what it added, or None.

        None when the event id was recorded before, or the snapshot adds nothing (a repeat or a
        stale snapshot). `usage_snapshot` is the SDK's usage (from a `session.usage` event or
        `sessions.retrieve`), its dict form, or a `Usage`; `at` (default now) picks the day.
        Raises `UnknownModel` when `model` has no price.
        """
        snapshot = Usage.from_sdk(usage_snapshot)
        at = (at or datetime.now(UTC)).astimezone(UTC)
        key = f"{P}ticket:{ticket.id}"
        events_key = f"{key}:events"
        result: TurnCost | None = None
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, events_key)
                    if await pipe.sismember(events_key, source_event_id):
                        return None
                    # Usage is cumulative per session: a Reopen's new session starts from zero, so
                    # its snapshots are compared with its own, never with the ticket's old session.
                    raw_prev = await pipe.hget(key, _snapshot_field(ticket.session_id))
                    if raw_prev is None and await pipe.hget(key, "session") == (ticket.session_id or ""):
                        raw_prev = await pipe.hget(key, "snapshot")  # recorded before per-session fields
                    prev = Usage.model_validate_json(raw_prev) if raw_prev else Usage()
                    raw_total = await pipe.hget(key, "total_n")
                    raw_exact = await pipe.hget(key, "cost_exact")
                    cost_before = CostBreakdown.model_validate_json(raw_exact) if raw_exact else None
                    cumulative = prev.maximum(snapshot)
                    delta = cumulative.minus(prev)
                    cost = compute_cost(delta, model, self.pricing)
                    turn = Totals.of_turn(delta, cost, before=prev, cost_before=cost_before)
                    cost_exact = add_costs(cost_before or CostBreakdown(model=model), cost)
                    ticket_total = int(raw_total or 0) + turn.total_n
                    pipe.multi()
                    pipe.sadd(events_key, source_event_id)
                    if delta.is_zero:
                        # Nothing new to count, but a newer list cost is still worth keeping.
                        pipe.hset(key, _snapshot_field(ticket.session_id), cumulative.model_dump_json())
                        await pipe.execute()
                        return None
                    result = TurnCost(
                        ticket_id=ticket.id,
                        session_id=ticket.session_id,
                        event_id=source_event_id,
                        at=at,
                        model=model,
                        delta=delta,
                        cost=cost,
                        cumulative=cumulative,
                        ticket_total_usd=from_nanos(ticket_total),
                        list_cost_warning=check_list_cost(
                            # only against a list cost this snapshot reported, never a stale one
                            compute_cost(cumulative, model, self.pricing), snapshot.list_cost_cents
                        ),
                    )
                    self._queue_writes(pipe, ticket, model, at, turn, cumulative, result)
                    pipe.hset(key, "cost_exact", cost_exact.model_dump_json())
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        if result is not None and result.list_cost_warning:
            log.warning(
                "ticket.cost.list_cost_mismatch",
                extra={
                    "ticket": ticket.id,
                    "session": ticket.session_id,
                    "model": model,
                    "list_cost_cents": cumulative.list_cost_cents,
                    "detail": result.list_cost_warning,
                },
            )
        return result

    def _queue_writes(
        self,
        pipe: Any,
        ticket: Ticket,
        model: str,
        at: datetime,
        turn: Totals,
        cumulative: Usage,
        result: TurnCost,
    ) -> None:
        key = f"{P}ticket:{ticket.id}"
        day = at.date()
        d = f"{P}d:{_day(day)}"
        counters = {k: v for k, v in turn.counters().items() if v}
        for field, value in counters.items():
            pipe.hincrby(key, field, value)
        snapshot = cumulative.model_dump_json()
        # `snapshot` is the latest session's (what reports show); the per-session field is what
        # the next snapshot of the same session is compared with.
        pipe.hset(key, mapping={**_meta(ticket, model), "snapshot": snapshot,
                                _snapshot_field(ticket.session_id): snapshot})
        if cumulative.list_cost_cents is not None:
            pipe.hset(key, "list_cost_cents", cumulative.list_cost_cents)
        pipe.rpush(f"{key}:turns", result.model_dump_json())
        pipe.zadd(f"{P}days", {_day(day): day.toordinal()})
        members = {"ticket": ticket.id, "channel": ticket.channel_id, "environment": ticket.environment}
        for dim, member in members.items():
            pipe.sadd(f"{d}:{dim}", member)
            for field, value in counters.items():
                pipe.hincrby(f"{d}:{dim}:{member}", field, value)
            if dim != "ticket":
                pipe.sadd(f"{d}:{dim}:{member}:tickets", ticket.id)
        for field, value in counters.items():
            pipe.hincrby(f"{d}:all", field, value)
        pipe.sadd(f"{d}:all:tickets", ticket.id)

    # -- per ticket ----------------------------------------------------------------------

    async def ticket_cost(self, ticket_id: str) -> TicketCost | None:
        raw: dict[str, str] = await self.redis.hgetall(f"{P}ticket:{ticket_id}")  # type: ignore[assignment]
        if not raw:
            return None
        return _ticket_cost(ticket_id, raw)

    async def ticket_total(self, ticket_id: str) -> Totals:
        """The ticket's running totals (zero when nothing was recorded)."""
        return (await self.ticket_totals([ticket_id]))[ticket_id]

    async def ticket_totals(self, ticket_ids: Iterable[str]) -> dict[str, Totals]:
        """Running totals of many tickets in one round trip (zero for those without costs)."""
        ids = list(ticket_ids)
        async with self.redis.pipeline(transaction=False) as pipe:
            for ticket_id in ids:
                pipe.hgetall(f"{P}ticket:{ticket_id}")
            raws: list[dict[str, str]] = await pipe.execute()
        out: dict[str, Totals] = {}
        for ticket_id, raw in zip(ids, raws, strict=True):
            totals = Totals.from_hash(raw)
            totals.tickets = 1 if raw else 0
            out[ticket_id] = totals
        return out

    async def turns(self, ticket_id: str) -> list[TurnCost]:
        raw = await self.redis.lrange(f"{P}ticket:{ticket_id}:turns", 0, -1)
        return [TurnCost.model_validate_json(r) for r in raw]

    async def close_turn(self, ticket_id: str) -> TurnCost | None:
        """Everything recorded since the previous `close_turn`, summed into one TurnCost.

        `session.usage` snapshots can arrive several times per turn; call this once at the
        turn's end (after recording the last snapshot) to get one figure to log and show.
        None when nothing was recorded since the last close (so a replayed idle logs nothing).
        """
        key = f"{P}ticket:{ticket_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key, f"{key}:turns")
                    start = int(await pipe.hget(key, "closed_turns") or 0)
                    raw: list[str] = await pipe.lrange(f"{key}:turns", start, -1)  # type: ignore[assignment]
                    if not raw:
                        return None
                    # Each snapshot was counted as a turn when recorded; the turn is one.
                    extra = [TurnCost.model_validate_json(r) for r in raw[1:]]
                    channel, environment = (
                        m.decode() if isinstance(m, bytes) else m
                        for m in await pipe.hmget(key, "channel", "environment")
                    )
                    pipe.multi()
                    pipe.hset(key, "closed_turns", start + len(raw))
                    for snap in extra:
                        d = f"{P}d:{_day(snap.day)}"
                        pipe.hincrby(key, "turns", -1)
                        pipe.hincrby(f"{d}:all", "turns", -1)
                        members = {"ticket": ticket_id, "channel": channel, "environment": environment}
                        for dim, member in members.items():
                            if member:
                                pipe.hincrby(f"{d}:{dim}:{member}", "turns", -1)
                    await pipe.execute()
                    break
                except WatchError:
                    continue
        return merge_turns([TurnCost.model_validate_json(r) for r in raw])

    # -- aggregates ----------------------------------------------------------------------

    async def days(self, since: date, until: date) -> list[date]:
        """Days in [since, until] with any recorded cost."""
        key = f"{P}days"
        names: list[str] = await self.redis.zrangebyscore(key, since.toordinal(), until.toordinal())  # type: ignore[assignment]
        return [date.fromisoformat(n) for n in names]

    async def totals(
        self, by: Dimension | str = "ticket", *, since: date, until: date
    ) -> list[Row]:
        """Totals per ticket, channel, environment or day over [since, until] (UTC days).

        Days come back in date order; the others most expensive first.
        """
        if by not in DIMENSIONS:
            raise ValueError(f"by must be one of {', '.join(DIMENSIONS)}, not {by!r}")
        days = await self.days(since, until)
        if by == "day":
            return await self._by_day(days)
        dim: str = by
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in days:
                pipe.smembers(f"{P}d:{_day(d)}:{dim}")
            member_sets: list[set[str]] = await pipe.execute()
        pairs = [(d, m) for d, members in zip(days, member_sets, strict=True) for m in sorted(members)]
        rows = await self._sum_members(dim, pairs)
        if dim == "ticket":
            await self._annotate_tickets(rows)
        return _sorted(rows)

    async def top_tickets(
        self, *, since: date, until: date, channel: str | None = None, n: int = 5
    ) -> list[Row]:
        """The `n` most expensive tickets over [since, until], optionally in one channel."""
        days = await self.days(since, until)
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in days:
                if channel is None:
                    pipe.smembers(f"{P}d:{_day(d)}:ticket")
                else:
                    pipe.smembers(f"{P}d:{_day(d)}:channel:{channel}:tickets")
            member_sets: list[set[str]] = await pipe.execute()
        pairs = [(d, m) for d, members in zip(days, member_sets, strict=True) for m in sorted(members)]
        rows = _sorted(await self._sum_members("ticket", pairs))[: max(n, 0)]
        await self._annotate_tickets(rows)
        return rows

    async def total(self, *, since: date, until: date, channel: str | None = None,
                    environment: str | None = None) -> Totals:
        """One total over [since, until]: everything, one channel or one environment."""
        if channel is not None and environment is not None:
            raise ValueError("give a channel or an environment, not both")
        if channel is not None:
            suffix = f"channel:{channel}"
        elif environment is not None:
            suffix = f"environment:{environment}"
        else:
            suffix = "all"
        days = await self.days(since, until)
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in days:
                pipe.hgetall(f"{P}d:{_day(d)}:{suffix}")
                pipe.smembers(f"{P}d:{_day(d)}:{suffix}:tickets")
            raw = await pipe.execute()
        totals = Totals()
        tickets: set[str] = set()
        for h, members in zip(raw[0::2], raw[1::2], strict=True):
            totals = totals + Totals.from_hash(h)
            tickets |= members
        totals.tickets = len(tickets)
        return totals

    async def channel_today(self, channel: str, today: date | None = None) -> Totals:
        today = today or utc_today()
        return await self.total(since=today, until=today, channel=channel)

    async def channel_month(self, channel: str, today: date | None = None) -> Totals:
        today = today or utc_today()
        return await self.total(since=today.replace(day=1), until=today, channel=channel)

    # -- internals -----------------------------------------------------------------------

    async def _by_day(self, days: list[date]) -> list[Row]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for d in days:
                pipe.hgetall(f"{P}d:{_day(d)}:all")
                pipe.scard(f"{P}d:{_day(d)}:all:tickets")
            raw = await pipe.execute()
        rows = []
        for d, h, count in zip(days, raw[0::2], raw[1::2], strict=True):
            totals = Totals.from_hash(h)
            totals.tickets = int(count)
            rows.append(Row(by="day", key=_day(d), totals=totals))
        return rows

    async def _sum_members(self, dim: str, pairs: Iterable[tuple[date, str]]) -> list[Row]:
        pairs = list(pairs)
        async with self.redis.pipeline(transaction=False) as pipe:
            for d, member in pairs:
                pipe.hgetall(f"{P}d:{_day(d)}:{dim}:{member}")
                if dim != "ticket":
                    pipe.smembers(f"{P}d:{_day(d)}:{dim}:{member}:tickets")
            raw = await pipe.execute()
        step = 1 if dim == "ticket" else 2
        sums: dict[str, Totals] = {}
        tickets: dict[str, set[str]] = {}
        for i, (_, member) in enumerate(pairs):
            sums[member] = sums.get(member, Totals()) + Totals.from_hash(raw[i * step])
            tickets.setdefault(member, set()).update(raw[i * step + 1] if dim != "ticket" else {member})
        rows = []
        for member, totals in sums.items():
            totals.tickets = len(tickets[member])
            rows.append(Row(by=dim, key=member, totals=totals))
        return rows

    async def _annotate_tickets(self, rows: list[Row]) -> None:
        if not rows:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.hmget(f"{P}ticket:{row.key}", ["channel", "environment", "number", "title"])
            metas = await pipe.execute()
        for row, (channel, environment, number, title) in zip(rows, metas, strict=True):
            row.channel = channel or ""
            row.environment = environment or ""
            row.number = int(number) if number else None
            row.title = title or ""


def _snapshot_field(session_id: str | None) -> str:
    return f"snapshot:{session_id}" if session_id else "snapshot"


def _sorted(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (-r.totals.total_n, r.key))


def _ticket_cost(ticket_id: str, raw: dict[str, str]) -> TicketCost:
    totals = Totals.from_hash(raw)
    totals.tickets = 1
    snapshot = Usage.model_validate_json(raw["snapshot"]) if raw.get("snapshot") else Usage()
    meta: dict[str, Any] = {k: raw.get(k, "") for k in META_FIELDS if k != "number"}
    number = raw.get("number")
    return TicketCost(
        ticket_id=ticket_id, totals=totals, number=int(number) if number else None,
        snapshot=snapshot, **meta,
    )


def utc_today() -> date:
    return datetime.now(UTC).date()


def merge_turns(turns: list[TurnCost]) -> TurnCost:
    """Several recorded snapshots as one: deltas and costs summed, the last one's totals."""
    last = turns[-1]
    if len(turns) == 1:
        return last
    counters = [f for f in Usage.model_fields if f != "list_cost_cents"]
    sums: dict[str, Any] = {f: sum((getattr(t.delta, f) for t in turns), start=getattr(Usage(), f)) for f in counters}
    list_costs = [t.delta.list_cost_cents for t in turns if t.delta.list_cost_cents is not None]
    delta = Usage(**sums, list_cost_cents=sum(list_costs) if list_costs else None)
    cost_fields = {name: Decimal(0) for name in CostBreakdown.model_fields if name != "model"}
    for turn in turns:
        for name in cost_fields:
            cost_fields[name] += getattr(turn.cost, name)
    return last.model_copy(
        update={
            "delta": delta,
            "cost": CostBreakdown(model=last.model, **cost_fields),
            "event_id": ",".join(t.event_id for t in turns)[:500],
        }
    )
