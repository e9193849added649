"""Verified resolutions and cost per verified resolution.

A resolution is **verified** when the ticket was resolved with its outcome satisfied (the last
grader verdict before the resolution was `satisfied`) and was not reopened within the
environment's `outcomes.verified_after_days`; until that many days have passed it is
**pending**. A ticket counts once per report, at its last resolution in the period (UTC days).

**Cost per verified resolution** = what the group's resolved tickets cost in all (the agent's
ledger total plus the grader's line, `app/cost/grader.py`) / its verified resolutions: the figure
to compare with a per-resolution price (one helpdesk charges $0.99).

`facts_of` and `group` are pure; `gather` reads the ticket store, the outcome records and both
ledgers; `render` writes a table, CSV or JSON. Tickets are read from the store's most recent
`MAX_TICKETS`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel

from app.config.model import AppConfig
from app.cost.grader import NO_CATEGORY, GraderLedger
from app.cost.ledger import CostLedger
from app.cost.model import format_usd, round_usd
from app.tickets.model import Ticket, TicketState, Transition
from app.tickets.outcome_record import Evaluation, evaluations, parse_time
from app.tickets.store import TicketStore

VERIFIED_DIMENSIONS = ("channel", "environment", "category", "day")
MAX_TICKETS = 5_000
DAY = 86_400.0
Status = Literal["verified", "pending", "reopened", "unverified"]


class ResolutionFacts(BaseModel):
    ticket_id: str
    channel: str
    environment: str
    category: str
    resolved_at: float
    satisfied: bool
    reopened_at: float | None = None
    window_days: int = 7
    agent_usd: Decimal = Decimal(0)
    grader_usd: Decimal = Decimal(0)
    checks: int = 0

    @property
    def day(self) -> str:
        return datetime.fromtimestamp(self.resolved_at, UTC).date().isoformat()

    def status(self, now: float) -> Status:
        if not self.satisfied:
            return "unverified"
        if self.reopened_at is not None and self.reopened_at - self.resolved_at <= self.window_days * DAY:
            return "reopened"
        if now - self.resolved_at >= self.window_days * DAY:
            return "verified"
        return "pending"


class VerifiedRow(BaseModel):
    by: str
    key: str
    resolved: int = 0
    satisfied: int = 0
    verified: int = 0
    pending: int = 0
    checks: int = 0
    agent_usd: Decimal = Decimal(0)
    grader_usd: Decimal = Decimal(0)

    @property
    def total_usd(self) -> Decimal:
        return self.agent_usd + self.grader_usd

    @property
    def cost_per_verified_usd(self) -> Decimal | None:
        return self.total_usd / self.verified if self.verified else None


def facts_of(
    ticket: Ticket,
    transitions: list[Transition],
    evals: list[Evaluation],
    *,
    since: date,
    until: date,
    window_days: int,
    agent_usd: Decimal = Decimal(0),
    grader_usd: Decimal = Decimal(0),
) -> ResolutionFacts | None:
    """The ticket's last resolution in [since, until], or None if it has none there."""
    start = datetime.combine(since, datetime.min.time(), UTC).timestamp()
    end = datetime.combine(until + timedelta(days=1), datetime.min.time(), UTC).timestamp()
    resolutions = [t.at for t in transitions if t.to_state == TicketState.RESOLVED and start <= t.at < end]
    if not resolutions:
        return None
    resolved_at = max(resolutions)
    verdicts = [e for e in evals if (when := parse_time(e.at)) is not None and when.timestamp() <= resolved_at]
    satisfied = bool(verdicts) and verdicts[-1].result == "satisfied"
    reopens = [t.at for t in transitions if t.from_state == TicketState.RESOLVED and t.to_state != TicketState.RESOLVED
               and t.at > resolved_at]
    return ResolutionFacts(
        ticket_id=ticket.id, channel=ticket.channel_id, environment=ticket.environment,
        category=ticket.category or NO_CATEGORY, resolved_at=resolved_at, satisfied=satisfied,
        reopened_at=min(reopens) if reopens else None, window_days=window_days,
        agent_usd=agent_usd, grader_usd=grader_usd, checks=len(evals),
    )


def group(facts: list[ResolutionFacts], by: str, now: float | None = None) -> list[VerifiedRow]:
    """Rows per channel, environment, category or day (days in order, the others by key)."""
    if by not in VERIFIED_DIMENSIONS:
        raise ValueError(f"by must be one of {', '.join(VERIFIED_DIMENSIONS)}, not {by!r}")
    now = time.time() if now is None else now
    rows: dict[str, VerifiedRow] = {}
    for fact in facts:
        key = fact.day if by == "day" else str(getattr(fact, by))
        row = rows.setdefault(key, VerifiedRow(by=by, key=key))
        status = fact.status(now)
        row.resolved += 1
        row.satisfied += fact.satisfied
        row.verified += status == "verified"
        row.pending += status == "pending"
        row.checks += fact.checks
        row.agent_usd += fact.agent_usd
        row.grader_usd += fact.grader_usd
    return [rows[k] for k in sorted(rows)]


def _window(config: AppConfig | None, environment: str) -> int:
    env = config.environments.get(environment) if config is not None else None
    return env.outcomes.verified_after_days if env is not None and env.outcomes is not None else 7


async def gather(
    redis: aioredis.Redis, config: AppConfig | None, *, since: date, until: date
) -> list[ResolutionFacts]:
    store = TicketStore(redis)
    # `resolved_at` is a ticket's latest resolution: one in the period means a latest one after its start.
    start = datetime.combine(since, datetime.min.time(), UTC).timestamp()
    tickets = [t for t in await store.recent(limit=MAX_TICKETS) if t.resolved_at and t.resolved_at >= start]
    pricing = config.pricing if config is not None else None
    agent = await CostLedger(redis, pricing).ticket_totals(t.id for t in tickets)
    grader = await GraderLedger(redis, pricing).ticket_totals(t.id for t in tickets)
    out: list[ResolutionFacts] = []
    for ticket in tickets:
        fact = facts_of(
            ticket, await store.transitions(ticket.id), await evaluations(redis, ticket.id),
            since=since, until=until, window_days=_window(config, ticket.environment),
            agent_usd=agent[ticket.id].total_usd, grader_usd=grader[ticket.id].total_usd,
        )
        if fact is not None:
            out.append(fact)
    return out


def records(rows: list[VerifiedRow]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        per = row.cost_per_verified_usd
        out.append({
            row.by: row.key,
            "resolved": row.resolved,
            "satisfied": row.satisfied,
            "verified": row.verified,
            "pending": row.pending,
            "grader_checks": row.checks,
            "agent_usd": round_usd(row.agent_usd),
            "grader_usd": round_usd(row.grader_usd),
            "total_usd": round_usd(row.total_usd),
            "cost_per_verified_resolution_usd": round_usd(per) if per is not None else None,
        })
    return out


def render(rows: list[VerifiedRow], by: str, fmt: str, labels: dict[str, str] | None = None) -> str:
    recs = records(rows)
    if fmt == "json":
        return json.dumps(
            [{k: float(v) if isinstance(v, Decimal) else v for k, v in r.items()} for r in recs], indent=2
        )
    columns = [by, "resolved", "satisfied", "verified", "pending", "grader_checks", "agent_usd", "grader_usd",
               "total_usd", "cost_per_verified_resolution_usd"]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rec in recs:
            writer.writerow({k: "" if v is None else str(v) for k, v in rec.items()})
        return buf.getvalue().rstrip("\n")
    labels = labels or {}
    head = [by, "resolved", "satisfied", "verified", "pending", "checks", "agent", "grader", "total", "per verified"]
    body = [[labels.get(str(r[by]), str(r[by])), str(r["resolved"]), str(r["satisfied"]), str(r["verified"]),
             str(r["pending"]), str(r["grader_checks"]), format_usd(r["agent_usd"]), format_usd(r["grader_usd"]),
             format_usd(r["total_usd"]),
             format_usd(r["cost_per_verified_resolution_usd"]) if r["cost_per_verified_resolution_usd"] is not None
             else "-"] for r in recs]
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()
             for cells in [head, *body]]
    return "\n".join(lines)


def summary_line(rows: list[VerifiedRow]) -> str | None:
    """One line for Slack (`/support cost`, App Home): verified resolutions and their cost."""
    resolved = sum(r.resolved for r in rows)
    if not resolved:
        return None
    verified = sum(r.verified for r in rows)
    pending = sum(r.pending for r in rows)
    grader = sum((r.grader_usd for r in rows), Decimal(0))
    total = sum((r.total_usd for r in rows), Decimal(0))
    line = f"{verified} verified resolution{'s' if verified != 1 else ''} of {resolved} resolved"
    if pending:
        line += f" ({pending} pending)"
    if verified:
        line += f" · {format_usd(total / verified)} per verified resolution"
    if grader:
        line += f" · grader {format_usd(grader)}"
    return line


# -- Slack: `/support cost` and the admin App Home --------------------------------------------


async def month_facts(
    redis: aioredis.Redis, config: AppConfig | None, *, channel: str | None = None, today: date | None = None
) -> list[ResolutionFacts]:
    today = today or datetime.now(UTC).date()
    facts = await gather(redis, config, since=today.replace(day=1), until=today)
    return [f for f in facts if channel is None or f.channel == channel]


async def slack_blocks(
    redis: aioredis.Redis, config: AppConfig | None, *, channel: str | None = None
) -> list[dict[str, Any]]:
    """This month's verified resolutions as Block Kit: one line (a channel), or one line per
    environment and category (the admin home). Empty when nothing was resolved."""
    facts = await month_facts(redis, config, channel=channel)
    if channel is not None:
        line = summary_line(group(facts, "channel"))
        return [_context(f":white_check_mark: This month: {line}.")] if line else []
    by_env = group(facts, "environment")
    total = summary_line(by_env)
    if not total:
        return []
    lines = [f"*{r.key}* · {summary_line([r])}" for r in by_env]
    lines += [f"category *{r.key}* · {summary_line([r])}" for r in group(facts, "category")]
    text = "*Verified resolutions this month*\n" + total + "\n" + "\n".join(lines)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}
