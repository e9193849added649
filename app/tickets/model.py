"""The ticket record: one Slack thread, one Managed Agents session, our own lifecycle."""

from __future__ import annotations

import time
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.redact import redact


class TicketState(StrEnum):
    OPEN = "open"
    WORKING = "working"
    WAITING_REQUESTER = "waiting_requester"
    WAITING_APPROVAL = "waiting_approval"
    RESOLVED = "resolved"
    ESCALATED = "escalated"
    FAILED = "failed"

    @property
    def label(self) -> str:
        return {
            "waiting_requester": "waiting on requester",
            "waiting_approval": "waiting on approval",
        }.get(self.value, self.value)


ACTIVE_STATES = frozenset(
    {TicketState.OPEN, TicketState.WORKING, TicketState.WAITING_REQUESTER, TicketState.WAITING_APPROVAL}
)


class Ticket(BaseModel):
    """Stored as JSON in Redis; `id` is `<team>-<number>`."""

    # The title is shown in Slack, Home and reports: credential shapes are redacted on every
    # write, whoever sets it (intake, /support, the agent's update_ticket).
    model_config = ConfigDict(validate_assignment=True)

    id: str
    number: int
    team_id: str
    channel_id: str
    thread_ts: str
    requester_id: str
    environment: str
    state: TicketState = TicketState.OPEN
    title: str = ""
    session_id: str | None = None
    # Managed Agents' own view, kept apart from our state: idle|running|rescheduling|terminated.
    agent_status: str | None = None
    stop_reason: str | None = None
    priority: str | None = None
    category: str | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    resolved_at: float | None = None
    # Set when retention deleted the session (its transcript is gone; our record and costs stay).
    session_deleted_at: float | None = None

    @field_validator("title")
    @classmethod
    def _redact_title(cls, title: str) -> str:
        return redact(title)

    @property
    def ref(self) -> str:
        return f"#{self.number}"


class Transition(BaseModel):
    at: float = Field(default_factory=time.time)
    from_state: TicketState | None
    to_state: TicketState
    cause: str
    actor: str | None = None


class InboxMessage(BaseModel):
    """A user message waiting to be sent to the ticket's session, identified by its Slack ts."""

    ts: str
    user_id: str
    text: str
    received_at: float = Field(default_factory=time.time)
