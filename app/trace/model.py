"""A ticket's trace: its ordered timeline, one entry per thing that happened.

Entries come from the session's event history (messages, tool calls with their results,
approvals, status changes, errors), our ticket record (state transitions), the cost ledger
(usage and cost per turn) and our own records (who approved, which worker followed, webhooks,
what Slack did to the streamed replies).
Every text field has been scrubbed of secrets before it gets here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# Entry kinds.
TICKET = "ticket"  # a ticket state transition (ours)
USER_MESSAGE = "user_message"
AGENT_MESSAGE = "agent_message"
TOOL_CALL = "tool_call"  # built-in, MCP or custom, paired with its result
APPROVAL = "approval"  # a user.tool_confirmation (allow / deny), with who when we know
STATUS = "status"  # session status changes
ERROR = "error"  # session.error with its retry_status
TURN = "turn"  # a turn ended: usage and cost
COST = "cost"  # a ledger figure with no turn to attach it to (session history gone)
INTERRUPT = "interrupt"
WORKER = "worker"  # a worker started following the ticket
TAKEOVER = "takeover"  # ... after another worker lost it
WEBHOOK = "webhook"
STREAM = "stream"  # Slack rotated, expired, refused or had no start for a streamed reply
SESSION = "session"  # anything else the session reported (updates, threads, outcomes, ...)

KINDS = (
    TICKET, USER_MESSAGE, AGENT_MESSAGE, TOOL_CALL, APPROVAL, STATUS, ERROR, TURN, COST,
    INTERRUPT, WORKER, TAKEOVER, WEBHOOK, STREAM, SESSION,
)


class TraceEntry(BaseModel):
    seq: int = 0
    at: str | None = Field(default=None, description="ISO-8601 UTC; None for a queued message")
    kind: str
    summary: str
    turn: int | None = None
    source: str = "session"  # session | ticket | ledger | worker | webhook | slack
    event_id: str | None = None
    actor: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    ticket: dict[str, Any]
    session: dict[str, Any] | None = None
    console_url: str | None = None
    totals: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    entries: list[TraceEntry] = Field(default_factory=list)

    @property
    def ticket_id(self) -> str:
        return str(self.ticket.get("id", ""))
