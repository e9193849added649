"""The `ticket.cost` log line: one per turn end (the turn's delta) and one at resolve (totals).

Money fields are JSON numbers rounded to micro-dollars (6 decimals); internally it is Decimal.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Literal

from app.cost.ledger import Totals, TurnCost
from app.cost.model import TOKEN_CATEGORIES, CostBreakdown, Usage, round_usd, usd_number
from app.tickets.model import Ticket

log = logging.getLogger("app.cost")

Phase = Literal["turn", "resolve"]


def cost_fields(
    ticket: Ticket,
    *,
    phase: Phase,
    model: str,
    usage: Usage,
    cost: CostBreakdown,
    session_id: str | None = None,
    ticket_total_usd: Decimal | None = None,
) -> dict[str, Any]:
    """The context of a `ticket.cost` line (what `extra=` gets)."""
    fields: dict[str, Any] = {
        "phase": phase,
        "ticket": ticket.id,
        "session": session_id or ticket.session_id,
        "team": ticket.team_id,
        "channel": ticket.channel_id,
        "environment": ticket.environment,
        "requester": ticket.requester_id,
        "model": model,
        "active_seconds": float(round_usd(usage.active_seconds, 3)),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cache_read_input_tokens,
        "cache_write_5m_tokens": usage.cache_write_5m_tokens,
        "cache_write_1h_tokens": usage.cache_write_1h_tokens,
        "web_search_requests": usage.web_search_requests,
        "runtime_usd": usd_number(cost.runtime_usd),
        "tokens_usd": usd_number(cost.tokens_usd),
        "web_search_usd": usd_number(cost.web_search_usd),
        "total_usd": usd_number(cost.total_usd),
    }
    # Flat per-category fields (a key containing "token" would be redacted by the log scrubber).
    for name, _label, _usage_field in TOKEN_CATEGORIES:
        fields[name] = usd_number(getattr(cost, name))
    if ticket_total_usd is not None:
        fields["ticket_total_usd"] = usd_number(ticket_total_usd)
    if usage.list_cost_cents is not None:
        fields["list_cost_cents"] = usage.list_cost_cents
    return fields


def log_turn_cost(ticket: Ticket, turn: TurnCost, logger: logging.Logger | None = None) -> dict[str, Any]:
    """Log what one turn (one recorded snapshot) cost; returns the fields logged."""
    fields = cost_fields(
        ticket,
        phase="turn",
        model=turn.model,
        usage=turn.delta,
        cost=turn.cost,
        session_id=turn.session_id,
        ticket_total_usd=turn.ticket_total_usd,
    )
    fields["event_id"] = turn.event_id
    if turn.cumulative.list_cost_cents is not None:
        fields["list_cost_cents"] = turn.cumulative.list_cost_cents
    (logger or log).info("ticket.cost", extra=fields)
    return fields


def log_resolve_cost(
    ticket: Ticket,
    totals: Totals,
    *,
    model: str,
    list_cost_cents: int | None = None,
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Log a ticket's total cost when it is resolved (from `CostLedger.ticket_total`)."""
    usage = totals.usage().model_copy(update={"list_cost_cents": list_cost_cents})
    fields = cost_fields(
        ticket,
        phase="resolve",
        model=model,
        usage=usage,
        cost=totals.breakdown(model),
        ticket_total_usd=totals.total_usd,
    )
    fields["turns"] = totals.turns
    (logger or log).info("ticket.cost", extra=fields)
    return fields
