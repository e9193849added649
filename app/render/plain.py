"""The simplest renderer: each agent message becomes one reply in the thread."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from app.render.base import message_text
from app.render.slack_text import neutralise_mentions, split_text
from app.tickets.model import Ticket

log = logging.getLogger(__name__)


class PlainRenderer:
    def __init__(self, slack: AsyncWebClient) -> None:
        self.slack = slack

    async def event(self, ticket: Ticket, event: Any, *, replay: bool) -> None:
        if event.type == "agent.message":
            text = message_text(event)
            if text.strip():
                await self._post(ticket, text, event_id=event.id)
        elif event.type == "session.status_running":
            await self._status(ticket, "is working on it...")

    async def delta(self, ticket: Ticket, event: Any) -> None:
        return None

    async def turn_ended(self, ticket: Ticket, stop_reason: str | None) -> None:
        await self._status(ticket, "")

    async def notice(self, ticket: Ticket, text: str) -> None:
        await self._post(ticket, text, event_id=None)

    async def _post(self, ticket: Ticket, text: str, event_id: str | None) -> None:
        for part in split_text(neutralise_mentions(text)):
            await self.slack.chat_postMessage(
                channel=ticket.channel_id,
                thread_ts=ticket.thread_ts,
                text=part,
                metadata=(
                    {"event_type": "support_agent_event", "event_payload": {"event_id": event_id}}
                    if event_id
                    else None
                ),
            )

    async def _status(self, ticket: Ticket, status: str) -> None:
        try:
            await self.slack.assistant_threads_setStatus(
                channel_id=ticket.channel_id, thread_ts=ticket.thread_ts, status=status
            )
        except Exception as exc:  # status is decoration: never fail a turn over it
            log.debug("setStatus failed", extra={"ticket": ticket.id, "error": str(exc)})
