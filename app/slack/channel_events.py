"""Channel events that end tickets: the bot removed, the channel archived, or shared externally.

`channel_shared` (Slack: "A shared channel invite was accepted") turns a channel into one an
external organisation reads: its cached sharing status is dropped, and every open ticket in it
served by an environment not marked for external parties ends, with a notice in its thread.
New messages are then resolved afresh, failing closed (see `app.slack.channels`).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError

from app.runtime import Services
from app.slack.channels import forget_channel
from app.tickets.channel_loss import ChannelLoss
from app.tickets.model import ACTIVE_STATES

log = logging.getLogger(__name__)

SHARED_NOTICE = (
    ":no_entry: This channel is now shared with another organisation, and it is not configured for "
    "external support, so this ticket is closed. An admin can add the channel to an environment for "
    "external parties in support-agent.yml."
)


async def channel_became_shared(services: Services, team_id: str, channel_id: str) -> int:
    """End the open tickets an internal environment serves in a newly shared channel."""
    await forget_channel(services.redis, channel_id)
    loss = ChannelLoss(services.store, services.anthropic)
    ended = 0
    for ticket in await services.store.channel_tickets(team_id, channel_id, limit=500):
        env = services.config.environments.get(ticket.environment)
        if ticket.state not in ACTIVE_STATES or (env is not None and env.external):
            continue
        await loss.ticket_unreachable(ticket, "channel shared with another organisation")
        ended += 1
        try:
            await services.slack.chat_postMessage(channel=channel_id, thread_ts=ticket.thread_ts, text=SHARED_NOTICE)
        except SlackApiError as exc:
            error = exc.response.get("error")
            log.info("shared-channel notice not posted", extra={"ticket": ticket.id, "error": error})
    log.warning("channel became shared", extra={"channel": channel_id, "tickets_ended": ended})
    return ended


def register(bolt: AsyncApp, services: Services) -> None:
    loss = ChannelLoss(services.store, services.anthropic)

    async def member_left(event: dict[str, Any], context: AsyncBoltContext) -> None:
        if event.get("user") and event.get("user") == context.bot_user_id:
            team = event.get("team") or context.team_id or ""
            await loss.channel_lost(team, event.get("channel", ""), "bot removed from the channel")

    async def archived(event: dict[str, Any], context: AsyncBoltContext) -> None:
        await loss.channel_lost(context.team_id or "", event.get("channel", ""), "channel archived")

    async def shared(event: dict[str, Any], context: AsyncBoltContext) -> None:
        channel = event.get("channel")
        if isinstance(channel, str) and channel:
            await channel_became_shared(services, context.team_id or "", channel)

    async def unshared(event: dict[str, Any]) -> None:
        channel = event.get("channel")
        if isinstance(channel, str) and channel:
            await forget_channel(services.redis, channel)

    bolt.event("member_left_channel")(member_left)
    bolt.event("channel_archive")(archived)
    bolt.event("channel_shared")(shared)
    bolt.event("channel_unshared")(unshared)
