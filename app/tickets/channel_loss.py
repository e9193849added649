"""When the bot can no longer reach a ticket's channel: record it and stop paying for the agent.

Slack errors that retrying cannot fix (`channel_not_found`, `not_in_channel`, `is_archived`,
the bot removed from the channel, the channel archived) leave the ticket `failed` with the cause
recorded, and the agent's running turn is interrupted: nobody can read its answer.
"""

from __future__ import annotations

import logging

from anthropic import AsyncAnthropic

from app.tickets.model import ACTIVE_STATES, Ticket, TicketState
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)


class ChannelLoss:
    def __init__(self, store: TicketStore, anthropic: AsyncAnthropic) -> None:
        self.store = store
        self.anthropic = anthropic

    async def ticket_unreachable(self, ticket: Ticket, cause: str) -> None:
        fresh = await self.store.get(ticket.id) or ticket
        if fresh.state not in ACTIVE_STATES:
            return
        await self.store.transition(fresh, TicketState.FAILED, cause)
        if fresh.session_id:
            try:
                await self.anthropic.beta.sessions.events.send(
                    fresh.session_id, events=[{"type": "user.interrupt"}]
                )
            except Exception as exc:  # the session may be idle or gone: the state is what matters
                log.info("interrupt after channel loss failed", extra={"ticket": fresh.id, "error": str(exc)})
        log.warning("ticket channel unreachable", extra={"ticket": fresh.id, "cause": cause})

    async def on_render_failure(self, ticket: Ticket, error: str) -> None:
        await self.ticket_unreachable(ticket, f"slack: {error}")

    async def channel_lost(self, team_id: str, channel_id: str, cause: str) -> int:
        count = 0
        for ticket in await self.store.channel_tickets(team_id, channel_id, limit=500):
            if ticket.state in ACTIVE_STATES:
                await self.ticket_unreachable(ticket, cause)
                count += 1
        return count
