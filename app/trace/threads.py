"""The trace's specialists: one entry per subagent thread, with its runtime, tokens and calls.

The session's events (the primary thread) already give the trace a thread's start, status and
messages; what only the thread itself knows is read here: `sessions.threads.list` (its agent,
status, `stats` and cumulative `usage`) and `sessions.threads.events.list` (the tool calls it
made), joined with the per-specialist ledger (`app/cost/threads.py`, tokens at the thread's own
model). Entries (kind `specialist`) are appended after the timeline, like the memory entries.
Never fails the trace: a problem becomes a warning.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import anthropic

from app.config.specialists import display_name
from app.cost.model import format_duration, format_tokens, format_usd
from app.cost.threads import SpecialistLedger
from app.tickets.model import Ticket
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)
TRACE_KIND = "specialist"
TOOL_USES = ("agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use")


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else (str(value) if value else None)


async def add_to_trace(client: Any, store: TicketStore, ticket: Ticket, trace: Any, scrubber: Any) -> Any:
    if client is None or not ticket.session_id or ticket.session_deleted_at:
        return trace
    from app.trace.model import TraceEntry

    costs = {t.thread_id: t for t in await SpecialistLedger(store.redis).threads(ticket.id)}
    seq = max((e.seq for e in trace.entries), default=0)
    count = 0
    try:
        async for thread in client.beta.sessions.threads.list(ticket.session_id):
            if thread.parent_thread_id is None:
                continue  # the primary thread is the session: the timeline above
            agent = thread.agent
            name = str(getattr(agent, "name", None) or agent.type)
            calls = [
                f"{getattr(e, 'mcp_server_name', None) or 'tools'}.{e.name}"
                async for e in client.beta.sessions.threads.events.list(thread.id, session_id=ticket.session_id)
                if e.type in TOOL_USES
            ]
            usage, stats = thread.usage, thread.stats
            active = Decimal(str(getattr(stats, "active_seconds", None) or 0))
            tokens = (getattr(usage, "input_tokens", 0) or 0) + (getattr(usage, "output_tokens", 0) or 0)
            cost = costs.get(thread.id)
            money = format_usd(cost.tokens_usd) if cost is not None else "no cost recorded"
            summary = (f"specialist {display_name(name)} ({thread.status}): {format_duration(active)} active, "
                       f"{format_tokens(tokens)} tokens, {money}")
            detail = {
                "thread_id": thread.id, "agent_name": name, "status": thread.status,
                "model": getattr(getattr(agent, "model", None), "id", None),
                "parent_thread_id": thread.parent_thread_id,
                "active_seconds": float(active),
                "duration_seconds": getattr(stats, "duration_seconds", None),
                "input_tokens": getattr(usage, "input_tokens", None),
                "output_tokens": getattr(usage, "output_tokens", None),
                "cache_read_input_tokens": getattr(usage, "cache_read_input_tokens", None),
                "list_cost_cents": getattr(getattr(usage, "list_cost", None), "amount", None),
                "tokens_usd": str(cost.tokens_usd) if cost is not None else None,
                "tool_calls": calls,
            }
            seq += 1
            count += 1
            trace.entries.append(TraceEntry(
                seq=seq, at=_iso(thread.created_at), kind=TRACE_KIND, summary=scrubber.text(summary),
                source="session", detail=scrubber.data(detail),
            ))
    except anthropic.APIError as exc:
        log.warning("trace: session threads not read", extra={"ticket": ticket.id, "error": type(exc).__name__})
        trace.warnings.append(f"specialists' threads could not be read ({type(exc).__name__})")
    if count:
        trace.totals["specialist_threads"] = count
    return trace
