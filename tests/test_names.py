"""Names from the Slack emulator (users.info / conversations.info), cached in Redis."""

from __future__ import annotations

import redis.asyncio as aioredis
from slack_sdk.web.async_client import AsyncWebClient

from app.names import PREFIX, Names
from app.sandbox.stack import BOT_TOKEN, Stack


async def test_ids_become_names_and_are_cached(stack: Stack, redis: aioredis.Redis) -> None:
    slack = AsyncWebClient(token=BOT_TOKEN, base_url=stack.slack.api_url)
    names = Names(redis, slack)
    assert await names.user("U0001") == "@alice"
    assert await names.channel("C0001") == "#support"
    assert await redis.get(PREFIX + "u:U0001") in ("alice", b"alice")
    # Unknown ids fall back to the id, never an error.
    assert await names.user("U9999") == "U9999"
    assert await names.channel("C9999") == "C9999"
