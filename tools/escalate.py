"""`escalate_to_human`: hand the ticket to the support team with a summary.

The ticket moves to `escalated` (the follower keeps a human's state from then on), the thread
hears that a person will follow up, and the environment's `triage_channel` gets the hand-off
summary with a link to the thread, mentioning `triage_usergroup`. The summary goes only to the
triage channel, never into the (possibly customer-facing) thread.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field
from slack_sdk.errors import SlackApiError

from app.render.slack_text import neutralise_mentions
from app.slack.blocks import section
from app.tickets.model import TicketState
from tools.base import CustomTool, ToolContext, ToolFailure, ToolInput, ToolResult

log = logging.getLogger(__name__)


class EscalateInput(ToolInput):
    summary: str = Field(
        min_length=1, max_length=3000,
        description="Hand-off for the person taking over: the problem, what was tried, what is still needed.",
    )
    reason: str | None = Field(default=None, max_length=500, description="Why a person is needed.")
    urgency: Literal["low", "normal", "high"] = Field(default="normal", description="How soon someone should look.")


class EscalateToHuman(CustomTool):
    name = "escalate_to_human"
    description = (
        "Hand this ticket to a person on the support team when you cannot solve it, the requester "
        "asks for a person, or the request needs a human decision. Give a short hand-off summary."
    )
    Input = EscalateInput

    async def run(self, ctx: ToolContext, args: EscalateInput) -> ToolResult:  # type: ignore[override]
        services = ctx.services
        store = services.store
        ticket = await store.get(ctx.ticket.id) or ctx.ticket
        if ticket.state == TicketState.RESOLVED:
            raise ToolFailure(f"Ticket {ticket.ref} is already resolved; there is nothing to escalate.")
        ticket = await store.transition(ticket, TicketState.ESCALATED, "escalated by the agent", actor="agent")
        thread_note = (
            f":raising_hand: I have handed ticket {ticket.ref} to the support team. "
            "A person will follow up in this thread."
        )
        try:
            await services.slack.chat_postMessage(
                channel=ticket.channel_id, thread_ts=ticket.thread_ts, text=thread_note, blocks=[section(thread_note)]
            )
        except SlackApiError as exc:
            log.warning("escalation note not posted", extra={"ticket": ticket.id, "error": exc.response.get("error")})
        env = services.config.environments.get(ticket.environment)
        if env is None or not env.triage_channel:
            return ToolResult(
                f"Ticket {ticket.ref} is escalated. No triage channel is configured, so the team will see it "
                "in this thread. Tell the requester a person will follow up here."
            )
        link = f"<#{ticket.channel_id}>"
        try:
            permalink = await services.slack.chat_getPermalink(channel=ticket.channel_id, message_ts=ticket.thread_ts)
            if permalink.get("permalink"):
                link = f"<{permalink['permalink']}|the thread> in <#{ticket.channel_id}>"
        except SlackApiError:
            pass
        who = f"<!subteam^{env.triage_usergroup}> " if env.triage_usergroup else ""
        urgent = {"high": " :red_circle: high urgency", "low": " (low urgency)"}.get(args.urgency, "")
        title = neutralise_mentions(ticket.title[:150]).replace("\n", " ")
        lines = [
            f"{who}:rotating_light: Ticket {ticket.ref} ({title}) was escalated by the agent{urgent}: {link}. "
            f"Requester: <@{ticket.requester_id}>.",
        ]
        if args.reason:
            lines.append(f"*Why:* {neutralise_mentions(args.reason)}")
        quoted = "\n".join(f"> {line}" for line in neutralise_mentions(args.summary).splitlines())
        lines.append("*Hand-off:*\n" + quoted)
        text = "\n".join(lines)
        try:
            await services.slack.chat_postMessage(channel=env.triage_channel, text=text, blocks=[section(text)])
        except SlackApiError as exc:
            log.warning("triage not notified", extra={"ticket": ticket.id, "error": exc.response.get("error")})
            return ToolResult(
                f"Ticket {ticket.ref} is escalated, but the triage channel could not be notified "
                f"({exc.response.get('error')}). Tell the requester a person will follow up in this thread."
            )
        return ToolResult(
            f"Ticket {ticket.ref} is escalated and the support team was notified with your summary. "
            "Tell the requester a person will follow up in this thread; do not keep working on it."
        )
