"""Channel events that end tickets: the bot removed from a channel, the channel archived."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from app.runtime import Services
from app.tickets.channel_loss import ChannelLoss


def register(bolt: AsyncApp, services: Services) -> None:
    loss = ChannelLoss(services.store, services.anthropic)

    async def member_left(event: dict[str, Any], context: AsyncBoltContext) -> None:
        if event.get("user") and event.get("user") == context.bot_user_id:
            team = event.get("team") or context.team_id or ""
            await loss.channel_lost(team, event.get("channel", ""), "bot removed from the channel")

    async def archived(event: dict[str, Any], context: AsyncBoltContext) -> None:
        await loss.channel_lost(context.team_id or "", event.get("channel", ""), "channel archived")

    bolt.event("member_left_channel")(member_left)
    bolt.event("channel_archive")(archived)
