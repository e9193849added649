"""People and channels by name: `@alice`, `#support`, instead of `U0001` and `C0001`.

Names come from `users.info` / `conversations.info` and are cached in Redis for an hour, so
the places people read (trace, costs, App Home, thread messages) cost one Slack call per id per
hour across every process. A lookup that fails falls back to the id: a name is a nicety, never a
reason for a trace or a report to fail.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PREFIX = "sa:name:"
TTL_SECONDS = 3600


class Names:
    def __init__(self, redis: Any, slack: Any) -> None:
        self.redis = redis
        self.slack = slack

    async def user(self, user_id: str) -> str:
        """`@display-name` of a Slack user, else the id."""
        if not user_id or not user_id.startswith(("U", "W")):
            return user_id
        name = await self._cached(f"u:{user_id}")
        if name is None:
            name = await self._lookup_user(user_id)
        return f"@{name}" if name else user_id

    async def channel(self, channel_id: str) -> str:
        """`#name` of a channel, else the id."""
        if not channel_id or not channel_id.startswith(("C", "G")):
            return channel_id
        name = await self._cached(f"c:{channel_id}")
        if name is None:
            name = await self._lookup_channel(channel_id)
        return f"#{name}" if name else channel_id

    async def _cached(self, key: str) -> str | None:
        try:
            value = await self.redis.get(PREFIX + key)
        except Exception:  # a cache miss is fine; the lookup decides
            return None
        return value.decode() if isinstance(value, bytes) else value

    async def _store(self, key: str, name: str) -> None:
        try:
            await self.redis.set(PREFIX + key, name, ex=TTL_SECONDS)
        except Exception:
            log.debug("names.cache_failed", extra={"key": key})

    async def _lookup_user(self, user_id: str) -> str:
        try:
            response = await self.slack.users_info(user=user_id)
        except Exception:
            return ""
        user = response.get("user") or {}
        profile = user.get("profile") or {}
        name = str(profile.get("display_name") or user.get("name") or profile.get("real_name") or "")
        if name:
            await self._store(f"u:{user_id}", name)
        return name

    async def _lookup_channel(self, channel_id: str) -> str:
        try:
            response = await self.slack.conversations_info(channel=channel_id)
        except Exception:
            return ""
        name = str((response.get("channel") or {}).get("name") or "")
        if name:
            await self._store(f"c:{channel_id}", name)
        return name
