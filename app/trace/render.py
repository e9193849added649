"""A trace as text (for people), JSON (one document) or JSON Lines (one entry per line)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from app.cost.model import format_usd
from app.trace import FORMATS as FORMATS  # re-exported
from app.trace import model as k
from app.trace.model import Trace, TraceEntry

KIND_LABELS = {
    k.TICKET: "ticket",
    k.USER_MESSAGE: "user",
    k.AGENT_MESSAGE: "agent",
    k.TOOL_CALL: "tool",
    k.APPROVAL: "approval",
    k.STATUS: "status",
    k.ERROR: "ERROR",
    k.TURN: "turn",
    k.COST: "cost",
    k.INTERRUPT: "interrupt",
    k.WORKER: "worker",
    k.TAKEOVER: "TAKEOVER",
    k.WEBHOOK: "webhook",
    k.STREAM: "stream",
    k.SESSION: "session",
}


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def header_lines(trace: Trace) -> list[str]:
    t = trace.ticket
    lines = [
        f"Ticket {t['ref']} ({t['id']}) · {t.get('state_label') or t['state']} · "
        f"environment {t['environment'] or '-'} · requester {t.get('requester') or t['requester_id']}",
        f"Title: {t['title']}",
        f"Slack: {t.get('channel') or t['channel_id']} thread {t['thread_ts']} · opened {t['created_at']}"
        + (f" · resolved {t['resolved_at']}" if t.get("resolved_at") else ""),
    ]
    if t.get("session_id"):
        line = f"Session: {t['session_id']}"
        if trace.session:
            line += f" · {trace.session.get('status')}"
        if trace.console_url:
            line += f" · {trace.console_url}"
        lines.append(line)
    totals = trace.totals
    if totals.get("cost_usd") is not None:
        lines.append(
            f"Cost: {format_usd(Decimal(str(totals['cost_usd'])))} over {_plural(totals.get('turns', 0), 'turn')} · "
            f"{totals.get('input_tokens', 0):,} in / {totals.get('output_tokens', 0):,} out tokens"
        )
    lines.append(
        f"{len(trace.entries):,} {'entry' if len(trace.entries) == 1 else 'entries'} · "
        f"{_plural(totals.get('tool_calls', 0), 'tool call')} · {_plural(totals.get('errors', 0), 'error')}"
    )
    lines.extend(f"! {w}" for w in trace.warnings)
    return lines


def _time(entry: TraceEntry) -> str:
    if not entry.at:
        return "(queued)".ljust(23)
    return entry.at.replace("T", " ").ljust(23)


def entry_lines(entry: TraceEntry, *, details: bool = True) -> list[str]:
    turn = f"t{entry.turn}" if entry.turn is not None else "  "
    label = KIND_LABELS.get(entry.kind, entry.kind)
    lines = [f"{_time(entry)}  {turn:>4}  {label:<9} {entry.summary}"]
    if not details:
        return lines
    pad = " " * 41
    d = entry.detail
    if entry.kind == k.TOOL_CALL:
        if d.get("input") not in (None, {}):
            lines.append(f"{pad}input:  {json.dumps(d['input'], ensure_ascii=False)[:1000]}")
        if d.get("result") is not None and d.get("status") == "ok":
            lines.append(f"{pad}result: {' '.join(str(d['result']).split())[:500]}")
    elif entry.kind in (k.USER_MESSAGE, k.AGENT_MESSAGE):
        text = str(d.get("text") or "")
        if len(text) > len(entry.summary) + 5:
            lines.extend(f"{pad}| {line}" for line in text.splitlines()[:40])
    return lines


def as_text(trace: Trace) -> str:
    lines = header_lines(trace)
    lines.append("")
    for entry in trace.entries:
        lines.extend(entry_lines(entry))
    return "\n".join(lines)


def as_json(trace: Trace) -> str:
    return json.dumps(trace.model_dump(mode="json"), ensure_ascii=False, indent=2)


def jsonl_records(trace: Trace) -> list[dict[str, Any]]:
    base = {"ticket_id": trace.ticket_id, "ticket_ref": trace.ticket.get("ref"),
            "session_id": trace.ticket.get("session_id")}
    return [{**base, **entry.model_dump(mode="json")} for entry in trace.entries]


def as_jsonl(trace: Trace) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in jsonl_records(trace))


def render(trace: Trace, fmt: str) -> str:
    if fmt == "json":
        return as_json(trace)
    if fmt == "jsonl":
        return as_jsonl(trace)
    return as_text(trace)
