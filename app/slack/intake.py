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
from app.tickets.commit import Committed, MessageCommit
from app.tickets.model import InboxMessage
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
    ticket_id: str | None = None


def strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        text = text.replace(f"<@{bot_user_id}>", " ")
    return re.sub(r"\s+", " ", text).strip()


class Intake:
    """Decides what a message is (pure), then commits it in one atomic Redis step.

    Nothing is written for a message that is ignored; a message that is accepted is written
    whole (dedupe markers, ticket, inbox, job) or not at all, so when anything fails the
    exception reaches Bolt, Slack gets an error, and its retry redoes the delivery.
    """

    def __init__(self, store: TicketStore, queue: JobQueue, config: AppConfig) -> None:
        self.store = store
        self.queue = queue
        self.config = config
        self._commit = MessageCommit(store.redis)

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
        subtype = event.get("subtype")
        if subtype in IGNORED_SUBTYPES or event.get("hidden"):
            return IntakeResult("ignored", f"subtype {subtype}")
        why_not = self._from_other_bot(event, bot_id, bot_user_id)
        if why_not:
            return IntakeResult("ignored", why_not)
        channel = event.get("channel")
        ts = event.get("ts")
        user = event.get("user") or event.get("bot_id") or "unknown"
        if not isinstance(channel, str) or not isinstance(ts, str) or not channel or not ts:
            return IntakeResult("ignored", "no channel or ts")
        raw_text = event.get("text")
        text = raw_text if isinstance(raw_text, str) else ""
        thread_ts = event.get("thread_ts")
        thread_ts = thread_ts if isinstance(thread_ts, str) and thread_ts else ts
        mentioned = event.get("type") == "app_mention" or (
            bool(bot_user_id) and f"<@{bot_user_id}>" in text
        )
        question = strip_mention(text, bot_user_id) or "(no text)"
        committed = await self._commit(
            event_id=event_id if isinstance(event_id, str) and event_id else None,
            team_id=team_id,
            channel_id=channel,
            thread_ts=thread_ts,
            message=InboxMessage(ts=ts, user_id=str(user), text=question),
            may_open=mentioned,
            # Only an explicit channel id is resolved here; names need Slack, which the worker asks.
            environment=environment_by_id(self.config, channel) or "",
            title=question[:120],
        )
        return self._outcome(committed, channel, ts)

    def _outcome(self, committed: Committed, channel: str, ts: str) -> IntakeResult:
        status = committed.status
        if status == "duplicate_event":
            return IntakeResult("duplicate", "event already handled")
        if status == "duplicate_message":
            return IntakeResult("duplicate", "message already handled")
        if status == "no_ticket":
            return IntakeResult("ignored", "not a ticket thread and no mention")
        if status == "resolved":
            return IntakeResult("ignored", "ticket resolved; mention the bot to reopen", committed.ticket_id)
        action = "opened" if committed.created else "continued"
        log.info(
            "ticket message accepted",
            extra={"ticket": committed.ticket_id, "action": action, "channel": channel, "slack_ts": ts},
        )
        return IntakeResult(action, ticket_id=committed.ticket_id)
