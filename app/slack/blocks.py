"""Block Kit pieces shared by the thread controls, slash commands and renderers.

Pure functions with no service dependencies, so a renderer can import them freely.
"""

from __future__ import annotations

from typing import Any

from app.tickets.model import Ticket, TicketState

ACTION_STOP = "ticket_stop"
ACTION_RESOLVE = "ticket_resolve"
ACTION_REOPEN = "ticket_reopen"
CONTROL_ACTIONS = (ACTION_STOP, ACTION_RESOLVE, ACTION_REOPEN)
ACTION_TRACE = "ticket_trace"  # staff only; handled in app.slack.trace
CONTROLS_BLOCK_ID = "ticket_controls"

# States in which the agent may be working, so Stop means something.
STOPPABLE_STATES = frozenset({TicketState.OPEN, TicketState.WORKING, TicketState.WAITING_APPROVAL})
CLOSED_STATES = frozenset({TicketState.RESOLVED, TicketState.FAILED, TicketState.ESCALATED})


def _button(action_id: str, label: str, ticket: Ticket, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label, "emoji": True},
        "value": ticket.id,
    }
    if style:
        button["style"] = style
    return button


def control_buttons(ticket: Ticket) -> list[dict[str, Any]]:
    """The buttons that make sense for the ticket's state (may be empty)."""
    if ticket.state in CLOSED_STATES:
        # A failed ticket's Reopen is a retry: same session if usable, else a new one with the transcript.
        label = "Retry" if ticket.state == TicketState.FAILED else "Reopen"
        return [_button(ACTION_REOPEN, label, ticket), _button(ACTION_TRACE, "Trace", ticket)]
    buttons = []
    if ticket.state in STOPPABLE_STATES:
        buttons.append(_button(ACTION_STOP, "Stop", ticket, style="danger"))
    buttons.append(_button(ACTION_RESOLVE, "Resolve", ticket, style="primary"))
    buttons.append(_button(ACTION_TRACE, "Trace", ticket))
    return buttons


def control_blocks(ticket: Ticket) -> list[dict[str, Any]]:
    """An actions block with Stop / Resolve / Reopen as fits the ticket's state, and Trace (staff).

    Each button's `value` is the ticket id; the handlers re-read the ticket, so a stale button
    (Stop on a ticket resolved meanwhile) gets an explanation, never a wrong action.
    """
    buttons = control_buttons(ticket)
    if not buttons:
        return []
    return [{"type": "actions", "block_id": f"{CONTROLS_BLOCK_ID}:{ticket.id}", "elements": buttons}]


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}
