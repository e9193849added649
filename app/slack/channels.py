"""Which environment serves a channel: fail closed for anything shared with another organisation.

The sharing status comes from Slack (`conversations.info`), cached briefly; an explicit channel
id in the config is trusted without asking Slack only for environments marked for external
parties, because an internal id may have become a Slack Connect channel since it was listed.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.config.model import AppConfig

log = logging.getLogger(__name__)
CACHE_SECONDS = 600


def cache_key(channel_id: str) -> str:
    return f"sa:channelinfo:{channel_id}"


def environment_by_id(config: AppConfig, channel_id: str) -> str | None:
    """An environment for external parties listing this id: safe whatever the channel's sharing.

    Intake calls this without asking Slack; any other id is resolved by the worker, with the
    channel's sharing status (see `resolve_environment`)."""
    for name, env in config.environments.items():
        if env.external and channel_id in env.channels.ids:
            return name
    return None


def is_external_channel(channel: dict[str, Any]) -> bool:
    """Shared with another organisation (Slack Connect), now or pending.

    Slack's conversation object: `is_ext_shared` (Slack Connect), `is_pending_ext_shared`
    (invitation out), `is_shared` (shared with another workspace: external unless the other
    workspace is in the same Enterprise org, `is_org_shared`). Unknown shapes fail closed."""
    if channel.get("is_ext_shared") or channel.get("is_pending_ext_shared"):
        return True
    return bool(channel.get("is_shared")) and not channel.get("is_org_shared")


async def _dm_is_external(slack: AsyncWebClient, channel: dict[str, Any], team_id: str | None) -> bool:
    """A DM with someone from another organisation (a Slack Connect DM)."""
    user = channel.get("user")
    if not isinstance(user, str) or not user:
        return True  # a DM whose other side we cannot tell: fail closed
    try:
        response = await slack.users_info(user=user)
    except SlackApiError as exc:
        log.warning("users.info failed; DM treated as external", extra={"error": exc.response.get("error")})
        return True
    info = response.get("user") or {}
    if not info or info.get("is_stranger"):
        return True
    other_team = info.get("team_id")
    return bool(team_id and other_team and other_team != team_id)


async def channel_info(
    slack: AsyncWebClient, redis: aioredis.Redis, channel_id: str, team_id: str | None = None
) -> dict[str, object]:
    key = cache_key(channel_id)
    cached = await redis.get(key)
    if cached:
        return dict(json.loads(cached))
    try:
        response = await slack.conversations_info(channel=channel_id)
        channel = response.get("channel") or {}
        external = is_external_channel(channel)
        if not external and channel.get("is_im"):
            external = await _dm_is_external(slack, channel, team_id)
        info = {"name": channel.get("name"), "is_ext_shared": external}
    except SlackApiError as exc:
        log.warning("conversations.info failed", extra={"channel": channel_id, "error": exc.response.get("error")})
        return {}
    await redis.set(key, json.dumps(info), ex=CACHE_SECONDS)
    return info


async def forget_channel(redis: aioredis.Redis, channel_id: str) -> None:
    """Drop the cached sharing status (the channel was just shared or unshared)."""
    await redis.delete(cache_key(channel_id))


async def resolve_environment(
    slack: AsyncWebClient, redis: aioredis.Redis, config: AppConfig, channel_id: str, team_id: str | None = None
) -> str | None:
    found = environment_by_id(config, channel_id)
    if found:
        return found
    info = await channel_info(slack, redis, channel_id, team_id)
    if not info:
        log.warning("channel not served: its sharing status is unknown", extra={"channel": channel_id})
        return None  # unknown sharing status: never guess an environment for it
    name = info.get("name")
    shared = bool(info.get("is_ext_shared"))
    env = config.environment_for_channel(channel_id, str(name) if name else None, is_shared=shared)
    if env is None:
        log.warning(
            "channel not served",
            extra={
                "channel": channel_id,
                "reason": "shared with another organisation and no environment for external parties matches"
                if shared
                else "no environment lists it and there is no default",
            },
        )
    return env
