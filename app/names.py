"""People and channels by name: `@alice`, `#support`, instead of `U0001` and `C0001`.

Names come from `users.info` / `conversations.info` and are cached in Redis for an hour, so
the places people read (trace, costs, App Home, thread messages) cost one Slack call per id per
hour across every process. A lookup that fails falls back to the id: a name is a nicety, never a
reason for a trace or a report to fail.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.config.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "sa:name:"
TTL_SECONDS = 3600
# Slack's mention markup: <@U123>, <@U123|name>, <#C123>, <#C123|name>.
MENTION = re.compile(r"<([@#])([UWCG][A-Z0-9]+)(?:\|([^>]*))?>")
USER_ID = re.compile(r"\b[UW](?=[A-Z0-9]*\d)[A-Z0-9]{4,}\b")  # U0001, U01ABCDEF; not UTF8


def slack_client(settings: Settings) -> Any:
    """A Slack client for name lookups when the settings have a bot token, else None (names
    then come from the cache only)."""
    if settings.slack_bot_token is None:
        return None
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), timeout=5)
    if settings.slack_api_url:
        client.base_url = settings.slack_api_url
    return client


class Names:
    """`slack` may be None: then only names cached by an earlier lookup are known."""

    def __init__(self, redis: Any, slack: Any) -> None:
        self.redis = redis
        self.slack = slack
        self._memo: dict[str, str] = {}  # this instance's answers, so a page asks once per id

    async def user(self, user_id: str) -> str:
        """`@display-name` of a Slack user, else the id."""
        if not user_id or not user_id.startswith(("U", "W")):
            return user_id
        if user_id not in self._memo:
            name = await self._cached(f"u:{user_id}")
            if name is None:
                name = await self._lookup_user(user_id)
            self._memo[user_id] = f"@{name}" if name else user_id
        return self._memo[user_id]

    async def channel(self, channel_id: str) -> str:
        """`#name` of a channel, else the id."""
        if not channel_id or not channel_id.startswith(("C", "G")):
            return channel_id
        if channel_id not in self._memo:
            name = await self._cached(f"c:{channel_id}")
            if name is None:
                name = await self._lookup_channel(channel_id)
            self._memo[channel_id] = f"#{name}" if name else channel_id
        return self._memo[channel_id]

    async def mentions(self, text: str) -> str:
        """Slack mention markup in `text` as names: `<@U0001>` -> `@alice`, `<#C0001>` -> `#support`."""
        out: list[str] = []
        last = 0
        for match in MENTION.finditer(text):
            kind, ident, label = match.groups()
            out.append(text[last:match.start()])
            if label:
                out.append(f"{kind}{label}")
            else:
                out.append(await (self.user(ident) if kind == "@" else self.channel(ident)))
            last = match.end()
        out.append(text[last:])
        return "".join(out)

    async def users_in(self, text: str) -> str:
        """Bare user ids in `text` (`resolved by U0001`) as names, plus any mention markup."""
        text = await self.mentions(text)
        out: list[str] = []
        last = 0
        for match in USER_ID.finditer(text):
            out.append(text[last:match.start()])
            out.append(await self.user(match.group(0)))
            last = match.end()
        out.append(text[last:])
        return "".join(out)

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
        if self.slack is None:
            return ""
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
        if self.slack is None:
            return ""
        try:
            response = await self.slack.conversations_info(channel=channel_id)
        except Exception:
            return ""
        name = str((response.get("channel") or {}).get("name") or "")
        if name:
            await self._store(f"c:{channel_id}", name)
        return name
