"""Build a ticket's trace from the session's event history joined with our own records.

`gather_trace` does the I/O (every page of `sessions.events.list`, the ticket's transitions,
cost ledger, approvals, follows, webhooks, stream events); `assemble` is pure and turns what
was gathered into the ordered timeline, so it can be tested on plain event dicts.

Secrets never reach an entry: every string from the session or our records passes the
Scrubber (the one that scrubs logs) *before* it is clipped, so a clipped credential cannot
slip past the patterns half-cut.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anthropic
from anthropic import AsyncAnthropic

from app.cost.ledger import CostLedger, TurnCost
from app.cost.model import Usage, format_duration, format_tokens, format_usd
from app.names import Names
from app.observability.scrub import Scrubber
from app.sessions.memory_history import add_to_trace as memory_trace
from app.tickets.model import Ticket, TicketState, Transition
from app.tickets.store import TicketStore
from app.trace import model as k
from app.trace import record
from app.trace.model import Trace, TraceEntry
from app.trace.threads import add_to_trace as threads_trace

log = logging.getLogger(__name__)

CONSOLE_SESSION_URL = "https://platform.claude.com/workspaces/{workspace}/sessions/{session_id}"
TEXT_CHARS = 4000  # message text kept per entry
SUMMARY_CHARS = 300  # message text in the one-line summary
RESULT_CHARS = 500  # tool result summary
INPUT_STRING_CHARS = 500  # each string inside a tool input
EVENTS_PAGE = 1000

TOOL_USES = {"agent.tool_use": "builtin", "agent.mcp_tool_use": "mcp", "agent.custom_tool_use": "custom"}
TOOL_RESULTS = {
    "agent.tool_result": "tool_use_id",
    "agent.mcp_tool_result": "mcp_tool_use_id",
    "user.custom_tool_result": "custom_tool_use_id",
    "user.tool_result": "tool_use_id",
}
STATUS_EVENTS = {
    "session.status_running": "running",
    "session.status_idle": "idle",
    "session.status_rescheduled": "rescheduling",
    "session.status_terminated": "terminated",
    "session.deleted": "deleted",
}
ERROR_EXTRAS = ("mcp_server_name", "credential_id", "vault_id")
# Not shown as entries: progress signals and spans (their usage is folded into the turn).
SILENT = {"agent.thinking", "span.model_request_start", "span.outcome_evaluation_ongoing", "session.usage"}


def console_url(session_id: str | None, workspace: str = "default") -> str | None:
    """The session in the Claude Console's session viewer (of the API key's workspace)."""
    return CONSOLE_SESSION_URL.format(workspace=workspace, session_id=session_id) if session_id else None


# -- small helpers ------------------------------------------------------------------------


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def one_line(text: str, limit: int) -> str:
    return clip(" ".join(text.split()), limit)


def content_text(content: Any) -> str:
    """The text of a content block list; other blocks as `[type]`."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text") or ""))
        elif block.get("type") == "search_result":
            parts.append(f"[search result: {block.get('title') or block.get('source') or ''}]")
        else:
            parts.append(f"[{block.get('type', 'block')}]")
    return "\n".join(p for p in parts if p)


def clip_data(value: Any, limit: int = INPUT_STRING_CHARS, depth: int = 0) -> Any:
    if depth > 10:
        return "…"
    if isinstance(value, str):
        return clip(value, limit)
    if isinstance(value, dict):
        return {str(key): clip_data(v, limit, depth + 1) for key, v in value.items()}
    if isinstance(value, list):
        return [clip_data(v, limit, depth + 1) for v in value[:50]] + (["…"] if len(value) > 50 else [])
    return value


def _as_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return event
    dump = getattr(event, "model_dump", None)
    if dump is not None:
        return dict(dump(mode="json", exclude_none=True))
    return dict(vars(event))


def _usd(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.000001")))


# -- gathering ----------------------------------------------------------------------------


@dataclass
class Gathered:
    ticket: Ticket
    events: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    ledger_turns: list[TurnCost] = field(default_factory=list)
    ledger_total: dict[str, Any] = field(default_factory=dict)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    follows: list[dict[str, Any]] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    streams: list[dict[str, Any]] = field(default_factory=list)
    session: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)


async def list_all_events(client: AsyncAnthropic, session_id: str) -> list[dict[str, Any]]:
    """Every event of the session, oldest first, across all pages."""
    events: list[dict[str, Any]] = []
    async for event in client.beta.sessions.events.list(session_id, order="asc", limit=EVENTS_PAGE):
        events.append(_as_dict(event))
    return events


async def gather_trace(client: AsyncAnthropic | None, store: TicketStore, ticket: Ticket) -> Gathered:
    redis = store.redis
    ledger = CostLedger(redis)
    got = Gathered(ticket=ticket)
    got.transitions = await store.transitions(ticket.id)
    got.ledger_turns = await ledger.turns(ticket.id)
    totals = await ledger.ticket_total(ticket.id)
    if totals.tickets:
        got.ledger_total = {
            "turns": totals.turns,
            "active_seconds": float(totals.active_seconds),
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "cache_read_tokens": totals.cache_read_tokens,
            "cache_write_tokens": totals.cache_write_5m_tokens + totals.cache_write_1h_tokens,
            "web_searches": totals.web_searches,
            "cost_usd": _usd(totals.total_usd),
        }
    got.approvals = await record.approvals(redis, ticket.id)
    got.follows = await record.follows(redis, ticket.id)
    got.webhooks = await record.webhooks(redis, ticket.id)
    got.streams = await record.streams(redis, ticket.id)
    session_id = ticket.session_id
    # A Reopen after the session ended starts a new one: the earlier sessions (known from the
    # ledger) come first in the timeline, each opened by a SESSION_STARTED marker.
    earlier = [s for s in dict.fromkeys(t.session_id for t in got.ledger_turns if t.session_id)
               if s != session_id]
    if earlier and client is not None and not ticket.session_deleted_at:
        for sid in earlier:
            got.events += await _earlier_session_events(client, ticket, sid, got.warnings)
        if session_id:
            got.events.append(_session_marker(session_id, None))
    if not session_id:
        got.warnings.append("no agent session yet")
        return got
    if ticket.session_deleted_at:
        got.warnings.append(
            f"the session was deleted by retention at {iso(ticket.session_deleted_at)}; "
            "its events are gone (ticket record and costs kept)"
        )
        return got
    if client is None:
        got.warnings.append("no Anthropic client: session events not read")
        return got
    try:
        session = await client.beta.sessions.retrieve(session_id)
        usage = getattr(session, "usage", None)
        list_cost = getattr(usage, "list_cost", None) if usage is not None else None
        got.session = {
            "id": session.id,
            "status": session.status,
            "created_at": iso(_epoch(session.created_at)),
            "archived_at": iso(_epoch(getattr(session, "archived_at", None))),
            "list_cost_cents": int(list_cost.amount) if list_cost is not None else None,
        }
        current = await list_all_events(client, session_id)
        if got.events and current:
            got.events[-1]["processed_at"] = current[0].get("processed_at")
        got.events += current
    except anthropic.NotFoundError:
        got.warnings.append(f"session {session_id} no longer exists; its events are gone")
    except anthropic.APIError as exc:
        log.warning("trace: session events not read", extra={"ticket": ticket.id, "error": type(exc).__name__})
        got.warnings.append(f"session events could not be read ({type(exc).__name__})")
    return got


SESSION_STARTED = "support_agent.session_started"  # our marker between a ticket's sessions


def _session_marker(session_id: str, at: Any) -> dict[str, Any]:
    return {"type": SESSION_STARTED, "session_id": session_id, "processed_at": at}


async def _earlier_session_events(
    client: AsyncAnthropic, ticket: Ticket, session_id: str, warnings: list[str]
) -> list[dict[str, Any]]:
    try:
        events = await list_all_events(client, session_id)
    except anthropic.NotFoundError:
        warnings.append(f"earlier session {session_id} no longer exists; its events are gone")
        return []
    except anthropic.APIError as exc:
        log.warning("trace: earlier session not read", extra={"ticket": ticket.id, "error": type(exc).__name__})
        warnings.append(f"earlier session {session_id} could not be read ({type(exc).__name__})")
        return []
    return [_session_marker(session_id, events[0].get("processed_at") if events else None), *events]


async def build_trace(
    client: AsyncAnthropic | None,
    store: TicketStore,
    ticket: Ticket,
    scrubber: Scrubber,
    console_workspace: str = "default",
    names: Names | None = None,
) -> Trace:
    """The ticket's trace, with people and channels by name. Without `names`, only names
    already cached in Redis are used (no Slack call); ids stay where no name is known."""
    trace = assemble(await gather_trace(client, store, ticket), scrubber, console_workspace)
    # The memories it read and wrote, and which ticket taught each (issue 19).
    trace = await memory_trace(client, store, ticket, trace, scrubber)
    # Each specialist's thread: its runtime, tokens and calls (issue 19).
    trace = await threads_trace(client, store, ticket, trace, scrubber)
    return await name_trace(trace, names or Names(store.redis, None))


async def name_trace(trace: Trace, names: Names) -> Trace:
    """What people read, by name: the requester and channel in the header, `@alice` for user
    ids in summaries and for mention markup in messages. Ids stay in `*_id`, `actor` and the
    details, for machines."""
    t = trace.ticket
    t["requester"] = await names.user(str(t.get("requester_id") or ""))
    t["channel"] = await names.channel(str(t.get("channel_id") or ""))
    try:
        t["state_label"] = TicketState(str(t.get("state"))).label
    except ValueError:
        t["state_label"] = t.get("state")
    for entry in trace.entries:
        if entry.kind in (k.USER_MESSAGE, k.AGENT_MESSAGE):
            entry.summary = await names.mentions(entry.summary)
            if isinstance(entry.detail.get("text"), str):
                entry.detail["text"] = await names.mentions(entry.detail["text"])
        else:
            entry.summary = await names.users_in(entry.summary)
        if entry.actor:
            entry.detail["actor_name"] = await names.user(entry.actor)
    return trace


# -- assembling ---------------------------------------------------------------------------


class _Assembler:
    def __init__(self, got: Gathered, scrubber: Scrubber) -> None:
        self.got = got
        self.s = scrubber
        self.entries: list[tuple[float | None, TraceEntry]] = []
        self.by_event: dict[str, TraceEntry] = {}
        self.tool_times: dict[str, float | None] = {}
        self.event_turn: dict[str, int] = {}
        self.turn = 0
        self.in_turn = False
        self.turn_spans: dict[int, dict[str, int]] = {}
        self.turn_bounds: dict[int, tuple[float | None, float | None]] = {}
        self.turn_end_entries: dict[int, TraceEntry] = {}
        self.usage_at_turn: dict[int, Usage] = {}  # the last cumulative session.usage seen per turn
        self.session_no = 0  # which of the ticket's sessions the events are from (markers count)
        self.turn_session: dict[int, int] = {}  # turn -> session_no (usage is cumulative per session)

    def text(self, value: Any, limit: int) -> str:
        return clip(self.s.text(str(value or "")), limit)

    def add(self, at: float | None, entry: TraceEntry) -> TraceEntry:
        self.entries.append((at, entry))
        if entry.event_id:
            self.by_event[entry.event_id] = entry
        return entry

    # -- session events --------------------------------------------------------------------

    def session_events(self) -> None:
        for ev in self.got.events:
            etype = str(ev.get("type", ""))
            at = _epoch(ev.get("processed_at"))
            eid = ev.get("id")
            if etype == "session.status_running" and not self.in_turn:
                self.turn += 1
                self.in_turn = True
                self.turn_bounds[self.turn] = (at, None)
                self.turn_session[self.turn] = self.session_no
            turn: int | None = self.turn if self.in_turn else None
            if eid:
                self.event_turn[str(eid)] = self.turn if self.in_turn else self.turn + 1
            self.session_event(etype, ev, at, turn)
            if etype in ("session.status_terminated", "session.deleted") or (
                etype == "session.status_idle" and _stop_type(ev) != "requires_action"
            ):
                if self.in_turn:
                    self.end_turn(ev, at)

    def session_event(self, etype: str, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        eid = ev.get("id")
        if etype == "span.model_request_end" and turn is not None:
            usage = ev.get("model_usage") or {}
            spans = self.turn_spans.setdefault(turn, {})
            spans["model_requests"] = spans.get("model_requests", 0) + 1
            for name in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"):
                spans[name] = spans.get(name, 0) + int(usage.get(name) or 0)
            return
        if etype == "session.usage" and ev.get("usage"):
            self.usage_at_turn[turn if turn is not None else self.turn] = Usage.from_sdk(ev.get("usage"))
            return
        if etype in SILENT or (etype.startswith("span.") and etype != "span.outcome_evaluation_end"):
            return
        if etype == SESSION_STARTED:
            self.session_no += 1
            sid = self.text(ev.get("session_id"), 100)
            self.add(at, k.TraceEntry(
                kind=k.SESSION, detail={"type": etype, "session_id": sid},
                summary=f"agent session {sid}" + (" (a new session after a Reopen)" if self.session_no > 1 else ""),
            ))
            return
        if etype in ("user.message", "user.define_outcome"):
            # A round's first message goes as an outcome (issue 18): its request, and the rubric's limit.
            outcome = etype == "user.define_outcome"
            text = self.s.text(str(ev.get("description") or "") if outcome else content_text(ev.get("content")))
            queued = ev.get("processed_at") is None
            extra = {"outcome_id": ev.get("outcome_id"), "max_iterations": ev.get("max_iterations")} if outcome else {}
            self.add(at, k.TraceEntry(
                kind=k.USER_MESSAGE, turn=turn if turn is not None else self.turn + 1, event_id=eid,
                summary=("(queued) " if queued else "") + ("(outcome defined) " if outcome else "")
                + one_line(text, SUMMARY_CHARS),
                detail={"text": clip(text, TEXT_CHARS), "queued": queued, **extra},
            ))
        elif etype == "agent.message":
            text = self.s.text(content_text(ev.get("content")))
            self.add(at, k.TraceEntry(
                kind=k.AGENT_MESSAGE, turn=turn, event_id=eid, summary=one_line(text, SUMMARY_CHARS),
                detail={"text": clip(text, TEXT_CHARS)},
            ))
        elif etype in TOOL_USES:
            self.tool_use(etype, ev, at, turn)
        elif etype in TOOL_RESULTS:
            self.tool_result(etype, ev, at, turn)
        elif etype == "user.tool_confirmation":
            self.confirmation(ev, at, turn)
        elif etype in STATUS_EVENTS:
            self.status(etype, ev, at, turn)
        elif etype == "session.error":
            self.error(ev, at, turn)
        elif etype == "user.interrupt":
            self.add(at, k.TraceEntry(kind=k.INTERRUPT, turn=turn, event_id=eid, summary="interrupt sent to the agent"))
        else:
            self.other(etype, ev, at, turn)

    def tool_use(self, etype: str, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        kind = TOOL_USES[etype]
        name = self.text(ev.get("name"), 200)
        server = self.text(ev.get("mcp_server_name"), 200) if kind == "mcp" else None
        label = f"{server}.{name}" if server else name
        permission = ev.get("evaluated_permission")
        detail: dict[str, Any] = {
            "tool_kind": kind,
            "name": name,
            "server": server,
            "input": clip_data(self.s.data(ev.get("input") or {})),
            "permission": permission,
            "status": "pending",
            "result": None,
            "is_error": None,
            "duration_seconds": None,
            "result_at": None,
            "approval": None,
        }
        if ev.get("session_thread_id"):
            detail["session_thread_id"] = ev.get("session_thread_id")
        what = {"builtin": "built-in", "mcp": "MCP", "custom": "custom"}[kind]
        entry = self.add(at, k.TraceEntry(
            kind=k.TOOL_CALL, turn=turn, event_id=ev.get("id"), summary=f"{label} ({what}) · pending", detail=detail,
        ))
        entry.detail["label"] = label
        self.tool_times[str(ev.get("id"))] = at
        if permission == "deny":
            entry.detail["status"] = "denied"

    def tool_result(self, etype: str, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        use_id = str(ev.get(TOOL_RESULTS[etype]) or "")
        entry = self.by_event.get(use_id)
        text = self.s.text(content_text(ev.get("content")))
        is_error = bool(ev.get("is_error"))
        if entry is None or entry.kind != k.TOOL_CALL:
            # A result whose call we never saw (history trimmed): show it on its own.
            self.add(at, k.TraceEntry(
                kind=k.TOOL_CALL, turn=turn, event_id=ev.get("id"),
                summary=f"result for {use_id or 'an unknown call'}: {one_line(text, SUMMARY_CHARS)}",
                detail={"status": "error" if is_error else "ok", "result": clip(text, RESULT_CHARS),
                        "is_error": is_error, "tool_use_id": use_id},
            ))
            return
        d = entry.detail
        started = self.tool_times.get(use_id)
        d["result"] = clip(text, RESULT_CHARS)
        d["is_error"] = is_error
        d["result_event_id"] = ev.get("id")
        d["result_at"] = iso(at)
        d["duration_seconds"] = round(at - started, 3) if at is not None and started is not None else None
        approval = d.get("approval") or {}
        if d.get("status") == "denied" or approval.get("result") == "deny":
            d["status"] = "denied"
        else:
            d["status"] = "error" if is_error else "ok"
        self._summarise_tool(entry)

    def confirmation(self, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        use_id = str(ev.get("tool_use_id") or "")
        result = str(ev.get("result") or "")
        tool = self.by_event.get(use_id)
        who = self.got.approvals.get(use_id) or {}
        actor = who.get("actor")
        deny_message = self.text(ev.get("deny_message"), RESULT_CHARS) if ev.get("deny_message") else None
        label = tool.detail.get("label") if tool is not None else use_id
        approval = {
            "result": result,
            "actor": actor,
            "decided_at": iso(_epoch(who.get("at"))) if who.get("at") is not None else None,
            "deny_message": deny_message,
            "reason": self.text(who.get("reason"), RESULT_CHARS) if who.get("reason") else None,
            "event_id": ev.get("id"),
        }
        by = f" by {actor}" if actor else " (approver not recorded)"
        self.add(at, k.TraceEntry(
            kind=k.APPROVAL, turn=turn, event_id=ev.get("id"), actor=actor,
            summary=f"{result} {label}{by}" + (f": {one_line(deny_message, 200)}" if deny_message else ""),
            detail={"tool_use_id": use_id, "tool": label, **approval},
        ))
        if tool is not None:
            started = self.tool_times.get(use_id)
            approval["wait_seconds"] = round(at - started, 3) if at is not None and started is not None else None
            tool.detail["approval"] = approval
            if result == "deny":
                tool.detail["status"] = "denied"
            self._summarise_tool(tool)

    def _summarise_tool(self, entry: TraceEntry) -> None:
        d = entry.detail
        what = {"builtin": "built-in", "mcp": "MCP", "custom": "custom"}.get(d.get("tool_kind") or "", "tool")
        parts = [f"{d.get('label')} ({what})", str(d.get("status"))]
        if d.get("duration_seconds") is not None:
            parts.append(f"{d['duration_seconds']:.2f}s")
        approval = d.get("approval")
        if approval:
            verb = "approved" if approval.get("result") == "allow" else "denied"
            parts.append(f"{verb} by {approval['actor']}" if approval.get("actor") else verb)
        summary = " · ".join(parts)
        if d.get("status") in ("error", "denied") and d.get("result"):
            summary += f": {one_line(str(d['result']), 200)}"
        entry.summary = summary

    def status(self, etype: str, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        status = STATUS_EVENTS[etype]
        detail: dict[str, Any] = {"status": status}
        summary = status
        if etype == "session.status_idle":
            stop = ev.get("stop_reason") or {}
            stop_type = stop.get("type") or "end_turn"
            detail["stop_reason"] = stop_type
            summary = f"idle ({stop_type})"
            if stop_type == "requires_action":
                pending = list(stop.get("event_ids") or [])
                detail["pending_event_ids"] = pending
                labels = [str(self.by_event[p].detail.get("label")) for p in pending if p in self.by_event]
                if labels:
                    summary += ": waiting on " + ", ".join(labels)
            details = ev.get("stop_details")
            if details:
                detail["stop_details"] = self.s.data(details)
                if details.get("category"):
                    summary += f" · {details['category']}"
        self.add(at, k.TraceEntry(kind=k.STATUS, turn=turn, event_id=ev.get("id"), summary=summary, detail=detail))

    def error(self, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        err = ev.get("error") or {}
        retry = (err.get("retry_status") or {}).get("type")
        message = self.text(err.get("message"), RESULT_CHARS)
        detail = {
            "type": err.get("type"),
            "message": message,
            "retry_status": retry,
            **{key: self.s.text(str(err[key])) for key in ERROR_EXTRAS if err.get(key)},
        }
        summary = f"{err.get('type') or 'error'} ({retry or 'no retry status'})"
        if message:
            summary += f": {one_line(message, 200)}"
        self.add(at, k.TraceEntry(kind=k.ERROR, turn=turn, event_id=ev.get("id"), summary=summary, detail=detail))

    def other(self, etype: str, ev: dict[str, Any], at: float | None, turn: int | None) -> None:
        detail = {key: v for key, v in ev.items() if key not in ("id", "type", "processed_at")}
        detail = clip_data(self.s.data(detail))
        summary = etype
        if etype == "session.updated":
            summary = "session updated: " + (", ".join(sorted(detail)) or "no fields")
        elif etype == "agent.thread_context_compacted":
            summary = "context compacted"
        elif etype == "span.outcome_evaluation_end":
            # Each evaluation: iteration, result, explanation, the grader's usage (issue 18).
            usage = detail.get("usage") or {}
            summary = (f"outcome check {int(detail.get('iteration') or 0) + 1}: {detail.get('result')}"
                       f" · grader {usage.get('input_tokens', 0):,} in / {usage.get('output_tokens', 0):,} out tokens")
            if detail.get("explanation"):
                summary += f": {one_line(str(detail['explanation']), 300)}"
        self.add(at, k.TraceEntry(
            kind=k.SESSION, turn=turn, event_id=ev.get("id"), summary=summary, detail={"type": etype, **detail},
        ))

    # -- turns and costs ---------------------------------------------------------------------

    def end_turn(self, ev: dict[str, Any], at: float | None) -> None:
        turn = self.turn
        start, _ = self.turn_bounds.get(turn, (None, None))
        self.turn_bounds[turn] = (start, at)
        stop = _stop_type(ev) if ev.get("type") == "session.status_idle" else STATUS_EVENTS.get(str(ev.get("type")))
        entry = self.add(at, k.TraceEntry(kind=k.TURN, turn=turn, summary="", detail={"stop_reason": stop}))
        self.turn_end_entries[turn] = entry
        self.in_turn = False

    def costs(self) -> None:
        """Attach each ledger snapshot to its turn; usage from spans when the ledger has none."""
        per_turn: dict[int, list[TurnCost]] = {}
        loose: list[TurnCost] = []
        for snap in self.got.ledger_turns:
            turn = self._turn_of_snapshot(snap)
            if turn is None:
                loose.append(snap)
            else:
                per_turn.setdefault(turn, []).append(snap)
        for turn, entry in self.turn_end_entries.items():
            d = entry.detail
            spans = self.turn_spans.get(turn, {})
            d["model_requests"] = spans.get("model_requests", 0)
            snaps = per_turn.get(turn, [])
            if snaps:
                d["input_tokens"] = sum(s.delta.input_tokens for s in snaps)
                d["output_tokens"] = sum(s.delta.output_tokens for s in snaps)
                d["cache_read_tokens"] = sum(s.delta.cache_read_input_tokens for s in snaps)
                d["cache_write_tokens"] = sum(
                    s.delta.cache_write_5m_tokens + s.delta.cache_write_1h_tokens for s in snaps
                )
                d["active_seconds"] = float(sum((s.delta.active_seconds for s in snaps), Decimal(0)))
                d["cost_usd"] = _usd(sum((s.cost.total_usd for s in snaps), Decimal(0)))
                d["ticket_total_usd"] = _usd(snaps[-1].ticket_total_usd)
                d["usage_source"] = "ledger"
            elif turn in self.usage_at_turn:
                before = max((t for t in self.usage_at_turn
                              if t < turn and self.turn_session.get(t) == self.turn_session.get(turn)), default=None)
                delta = self.usage_at_turn[turn].minus(self.usage_at_turn[before] if before is not None else Usage())
                d["input_tokens"] = delta.input_tokens
                d["output_tokens"] = delta.output_tokens
                d["cache_read_tokens"] = delta.cache_read_input_tokens
                d["cache_write_tokens"] = delta.cache_write_5m_tokens + delta.cache_write_1h_tokens
                d["active_seconds"] = float(delta.active_seconds)
                d["cost_usd"] = (
                    _usd(Decimal(delta.list_cost_cents) / 100) if delta.list_cost_cents is not None else None
                )
                d["ticket_total_usd"] = None
                d["usage_source"] = "session usage (list cost)"
            else:
                d["input_tokens"] = spans.get("input_tokens", 0)
                d["output_tokens"] = spans.get("output_tokens", 0)
                d["cache_read_tokens"] = spans.get("cache_read_input_tokens", 0)
                d["cache_write_tokens"] = spans.get("cache_creation_input_tokens", 0)
                d["active_seconds"] = None
                d["cost_usd"] = None
                d["ticket_total_usd"] = None
                d["usage_source"] = "model requests"
            entry.summary = _turn_summary(turn, d)
        for snap in loose:
            at = snap.at.timestamp()
            d = {
                "ledger_event": snap.event_id,
                "input_tokens": snap.delta.input_tokens,
                "output_tokens": snap.delta.output_tokens,
                "active_seconds": float(snap.delta.active_seconds),
                "cost_usd": _usd(snap.cost.total_usd),
                "ticket_total_usd": _usd(snap.ticket_total_usd),
            }
            self.add(at, k.TraceEntry(
                kind=k.COST, source="ledger", detail=d,
                summary=(
                    f"cost recorded: {format_usd(snap.cost.total_usd)} · "
                    f"{format_tokens(snap.delta.input_tokens)} in / {format_tokens(snap.delta.output_tokens)} out "
                    f"(ticket {format_usd(snap.ticket_total_usd)})"
                ),
            ))

    def _turn_of_snapshot(self, snap: TurnCost) -> int | None:
        source = snap.event_id
        for candidate in (source, source.split(":", 1)[-1]):
            if candidate in self.event_turn and self.event_turn[candidate] in self.turn_end_entries:
                return self.event_turn[candidate]
        if not self.turn_end_entries:
            return None
        at = snap.at.timestamp()
        best: int | None = None
        for turn in sorted(self.turn_end_entries):
            start, _ = self.turn_bounds.get(turn, (None, None))
            if start is None or start <= at:
                best = turn
        return best if best is not None else min(self.turn_end_entries)

    # -- our own records ---------------------------------------------------------------------

    def ours(self) -> list[tuple[float | None, TraceEntry]]:
        out: list[tuple[float | None, TraceEntry]] = []
        for t in self.got.transitions:
            frm = t.from_state.value if t.from_state else None
            if frm:
                # People read the summary: state labels ("waiting on requester"), not enum values.
                label = t.from_state.label if t.from_state else frm
                summary = f"{label} → {t.to_state.label}: {self.text(t.cause, 300)}"
                if t.actor and t.actor not in summary:
                    summary += f" (by {t.actor})"
            else:
                summary = "ticket opened" + (f" by {t.actor}" if t.actor else "")
            out.append((t.at, k.TraceEntry(
                kind=k.TICKET, source="ticket", actor=t.actor, summary=summary,
                detail={"from": frm, "to": t.to_state.value, "cause": self.text(t.cause, 300)},
            )))
        for f in self.got.follows:
            reason = str(f.get("reason") or "")
            takeover = record.is_takeover(reason)
            worker = self.text(f.get("worker"), 200)
            summary = (f"taken over by worker {worker}" if takeover else f"followed by worker {worker}")
            summary += f" (reason {reason}, lease fence {f.get('fence')})"
            out.append((_epoch(f.get("at")), k.TraceEntry(
                kind=k.TAKEOVER if takeover else k.WORKER, source="worker", summary=summary,
                detail={"worker": worker, "reason": reason, "fence": f.get("fence")},
            )))
        for w in self.got.webhooks:
            out.append((_epoch(w.get("at")), k.TraceEntry(
                kind=k.WEBHOOK, source="webhook",
                summary=f"webhook {w.get('type')}: {w.get('action')}",
                detail={"webhook_id": w.get("id"), "type": w.get("type"), "action": w.get("action")},
            )))
        out.extend((_epoch(st.get("at")), self.stream(st)) for st in self.got.streams)
        out.sort(key=lambda pair: pair[0] or 0.0)
        return out

    def stream(self, st: dict[str, Any]) -> TraceEntry:
        event = self.text(st.get("event"), 50)
        raw = st.get("detail")
        detail = clip_data(self.s.data(raw)) if isinstance(raw, dict) else {}
        return k.TraceEntry(
            kind=k.STREAM, source="slack", summary=_stream_summary(event, detail), detail={**detail, "event": event},
        )

    # -- result --------------------------------------------------------------------------------

    def run(self) -> list[TraceEntry]:
        self.session_events()
        self.costs()
        session_side = self.entries  # already in the session's own order (queued messages last)
        ours = self.ours()
        merged: list[TraceEntry] = []
        i = 0
        for at, entry in session_side:
            while i < len(ours) and at is not None and (ours[i][0] or 0.0) < at:
                merged.append(ours[i][1])
                i += 1
            merged.append(entry)
        merged.extend(e for _, e in ours[i:])
        # Session-side entries keep the session's order; ledger-only cost entries sort by time.
        times = {id(e): a for a, e in (*session_side, *ours)}
        for n, entry in enumerate(merged, 1):
            entry.seq = n
            entry.at = iso(times.get(id(entry)))
        return merged


def _stop_type(ev: dict[str, Any]) -> str:
    return str((ev.get("stop_reason") or {}).get("type") or "end_turn")


def _stream_summary(event: str, d: dict[str, Any]) -> str:
    """One line for a stream event recorded by the renderer (`app.render.stream`)."""
    message = f" (message {d['ts']})" if d.get("ts") else ""
    if event == "rotated":
        age = d.get("age_seconds")
        after = f" after {format_duration(age)}" if isinstance(age, int | float) else ""
        return f"Slack stream rotated{after}{message}"
    if event == "expired":
        return f"Slack stream expired before it was stopped; finished with chat.update{message}"
    if event == "refused":
        scope = " for the workspace" if d.get("scope") == "workspace" else ""
        return f"Slack refused streaming{scope} ({d.get('error') or 'no error given'}); fell back to an edited message"
    if event == "adopted":
        return f"stopped a Slack stream a dead worker left open{message}"
    if event == "congested":
        waited = d.get("waited_seconds")
        within = f" within {format_duration(waited)}" if isinstance(waited, int | float) else ""
        return f"no Slack stream start{within}; posted a message instead{message}"
    return f"Slack stream {event or 'event'}{message}"


def _turn_summary(turn: int, d: dict[str, Any]) -> str:
    parts = [f"turn {turn} ended ({d.get('stop_reason')})"]
    n = d.get("model_requests") or 0
    parts.append(f"{n} model request{'s' if n != 1 else ''}")
    parts.append(f"{format_tokens(d.get('input_tokens') or 0)} in / {format_tokens(d.get('output_tokens') or 0)} out")
    if d.get("active_seconds"):
        parts.append(f"{format_duration(d['active_seconds'])} active")
    if d.get("cost_usd") is not None:
        cost = f"{format_usd(Decimal(d['cost_usd']))}"
        if d.get("ticket_total_usd") is not None:
            cost += f" (ticket {format_usd(Decimal(d['ticket_total_usd']))})"
        parts.append(cost)
    return " · ".join(parts)


def ticket_header(ticket: Ticket, scrubber: Scrubber) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "ref": ticket.ref,
        "number": ticket.number,
        "team_id": ticket.team_id,
        "channel_id": ticket.channel_id,
        "thread_ts": ticket.thread_ts,
        "title": scrubber.text(ticket.title),
        "state": ticket.state.value,
        "environment": ticket.environment,
        "requester_id": ticket.requester_id,
        "session_id": ticket.session_id,
        "agent_status": ticket.agent_status,
        "stop_reason": ticket.stop_reason,
        "created_at": iso(ticket.created_at),
        "resolved_at": iso(ticket.resolved_at),
        "session_deleted_at": iso(ticket.session_deleted_at),
    }


def assemble(got: Gathered, scrubber: Scrubber, console_workspace: str = "default") -> Trace:
    entries = _Assembler(got, scrubber).run()
    # Belt and braces: whatever slipped into a detail dict passes the scrubber once more.
    clean = [TraceEntry.model_validate(scrubber.data(e.model_dump())) for e in entries]
    totals = dict(got.ledger_total)
    totals["turns_in_history"] = sum(1 for e in clean if e.kind == k.TURN)
    totals["tool_calls"] = sum(1 for e in clean if e.kind == k.TOOL_CALL)
    totals["errors"] = sum(1 for e in clean if e.kind == k.ERROR)
    return Trace(
        ticket=ticket_header(got.ticket, scrubber),
        session=got.session,
        console_url=(
            console_url(got.ticket.session_id, console_workspace) if not got.ticket.session_deleted_at else None
        ),
        totals=totals,
        warnings=[scrubber.text(w) for w in got.warnings],
        entries=clean,
    )


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
