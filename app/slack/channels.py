"""Which environment serves a channel: by id from config, else by name and sharing from Slack."""

from __future__ import annotations

import json
import logging

import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.config.model import AppConfig

log = logging.getLogger(__name__)
CACHE_SECONDS = 600


def environment_by_id(config: AppConfig, channel_id: str) -> str | None:
    for name, env in config.environments.items():
        if channel_id in env.channels.ids:
            return name
    return None


async def channel_info(slack: AsyncWebClient, redis: aioredis.Redis, channel_id: str) -> dict[str, object]:
    key = f"sa:channelinfo:{channel_id}"
    cached = await redis.get(key)
    if cached:
        return dict(json.loads(cached))
    try:
        response = await slack.conversations_info(channel=channel_id)
        channel = response.get("channel") or {}
        info = {
            "name": channel.get("name"),
            "is_ext_shared": bool(channel.get("is_ext_shared") or channel.get("is_shared")),
        }
    except SlackApiError as exc:
        log.warning("conversations.info failed", extra={"channel": channel_id, "error": exc.response.get("error")})
        return {}
    await redis.set(key, json.dumps(info), ex=CACHE_SECONDS)
    return info


async def resolve_environment(
    slack: AsyncWebClient, redis: aioredis.Redis, config: AppConfig, channel_id: str
) -> str | None:
    found = environment_by_id(config, channel_id)
    if found:
        return found
    info = await channel_info(slack, redis, channel_id)
    if not info:
        return None  # unknown sharing status: never guess an environment for it
    name = info.get("name")
    return config.environment_for_channel(
        channel_id, str(name) if name else None, is_shared=bool(info.get("is_ext_shared"))
    )
