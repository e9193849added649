"""Intake: turn Slack messages into ticket work, durably, before Slack is acknowledged.

Runs inside Bolt's request handling with `process_before_response`, so a 200 goes back to
Slack only after the message is in Redis. It never calls Anthropic; it makes no Slack call in
the common path, so acknowledging stays well under Slack's 3 seconds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from app.config.model import AppConfig
from app.jobs.queue import JobQueue
from app.slack.channels import environment_by_id
from app.tickets.model import InboxMessage, Ticket, TicketState
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)

# Message subtypes that are edits, deletions or housekeeping, never a new question.
IGNORED_SUBTYPES = frozenset(
    {
        "message_changed",
        "message_deleted",
        "message_replied",
        "channel_join",
        "channel_leave",
        "channel_topic",
        "channel_purpose",
        "channel_name",
        "bot_add",
        "bot_remove",
        "thread_broadcast_deleted",
        "ekm_access_denied",
        "group_join",
        "group_leave",
    }
)


@dataclass
class IntakeResult:
    action: str  # "ignored" | "duplicate" | "opened" | "continued"
    reason: str = ""
    ticket: Ticket | None = None


def strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = text.replace(f"<@{bot_user_id}>", " ")
    return re.sub(r"\s+", " ", text).strip()


class Intake:
    def __init__(self, store: TicketStore, queue: JobQueue, config: AppConfig) -> None:
        self.store = store
        self.queue = queue
        self.config = config

    def _from_other_bot(self, event: dict[str, Any], bot_id: str | None, bot_user_id: str | None) -> str | None:
        if event.get("user") and event.get("user") == bot_user_id:
            return "own message"
        event_bot = event.get("bot_id")
        if event_bot and event_bot == bot_id:
            return "own message"
        if event_bot or event.get("subtype") == "bot_message":
            if event_bot not in self.config.slack.allow_bots:
                return "message from another bot"
        return None

    async def handle(
        self,
        *,
        event_id: str | None,
        team_id: str,
        event: dict[str, Any],
        bot_user_id: str | None,
        bot_id: str | None,
    ) -> IntakeResult:
        if event_id and not await self.store.claim_event(event_id):
            return IntakeResult("duplicate", "event already handled")
        subtype = event.get("subtype")
        if subtype in IGNORED_SUBTYPES or event.get("hidden"):
            return IntakeResult("ignored", f"subtype {subtype}")
        why_not = self._from_other_bot(event, bot_id, bot_user_id)
        if why_not:
            return IntakeResult("ignored", why_not)
        channel = event.get("channel")
        ts = event.get("ts")
        user = event.get("user") or event.get("bot_id") or "unknown"
        if not channel or not ts:
            return IntakeResult("ignored", "no channel or ts")
        text = event.get("text") or ""
        thread_ts = event.get("thread_ts") or ts
        mentioned = event.get("type") == "app_mention" or (
            bool(bot_user_id) and f"<@{bot_user_id}>" in text
        )
        existing = await self.store.by_thread(team_id, channel, thread_ts)
        if existing is None and not mentioned:
            return IntakeResult("ignored", "not a ticket thread and no mention")
        if not await self.store.claim_message(channel, ts):
            return IntakeResult("duplicate", "message already handled")
        try:
            return await self._accept(existing, team_id, channel, thread_ts, ts, user, text, bot_user_id, mentioned)
        except Exception:
            # Let Slack's retry redo the whole thing rather than lose the message.
            await self.store.release_message(channel, ts)
            raise

    async def _accept(
        self,
        existing: Ticket | None,
        team_id: str,
        channel: str,
        thread_ts: str,
        ts: str,
        user: str,
        text: str,
        bot_user_id: str | None,
        mentioned: bool,
    ) -> IntakeResult:
        question = strip_mention(text, bot_user_id) or "(no text)"
        if existing is None:
            # Only an explicit channel id is resolved here; names need Slack, which the worker asks.
            environment = environment_by_id(self.config, channel) or ""
            ticket, created = await self.store.open_ticket(
                team_id=team_id,
                channel_id=channel,
                thread_ts=thread_ts,
                requester_id=user,
                environment=environment,
                title=question[:120],
            )
            action = "opened" if created else "continued"
        else:
            ticket, action = existing, "continued"
        # A reply in a resolved thread is chatter; a mention asks again (the worker reopens it).
        if ticket.state == TicketState.RESOLVED and not mentioned:
            return IntakeResult("ignored", "ticket resolved; mention the bot to reopen", ticket)
        await self.store.push_message(ticket.id, InboxMessage(ts=ts, user_id=user, text=question))
        await self.queue.enqueue(ticket.id, "message")
        log.info(
            "ticket message accepted",
            extra={"ticket": ticket.id, "action": action, "channel": channel, "slack_ts": ts},
        )
        return IntakeResult(action, ticket=ticket)
