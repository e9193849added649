"""Per ticket and workspace, what a new turn starts from: its recipient, whether Slack streams."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.tickets.model import Ticket

log = logging.getLogger(__name__)

RECIPIENT_TTL = 30 * 86400


class TurnPrefs:
    def __init__(self, redis: aioredis.Redis | None, key_prefix: str, no_stream: dict[str, float]) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.no_stream = no_stream  # team -> until (monotonic): streaming refused there
        self._recipients: dict[str, str] = {}

    def _key(self, *parts: str) -> str:
        return ":".join((self.key_prefix, *parts))

    async def set_recipient(self, ticket: Ticket, user_id: str) -> None:
        """The next stream for this ticket goes to `user_id` (whose message starts a turn)."""
        remember(self._recipients, ticket.id, user_id)
        if self.redis is None:
            return
        try:
            await self.redis.set(self._key("recipient", ticket.id), user_id, ex=RECIPIENT_TTL)
        except RedisError:
            log.warning("could not save the turn's recipient", extra={"ticket": ticket.id})

    async def recipient(self, ticket: Ticket) -> str:
        user = self._recipients.get(ticket.id)
        if user is None and self.redis is not None:
            try:
                found = await self.redis.get(self._key("recipient", ticket.id))
            except RedisError:
                found = None
            user = _text(found)
        return user or ticket.requester_id

    async def refused(self, team: str) -> bool:
        until = self.no_stream.get(team)
        if until is not None:
            if until > time.monotonic():
                return True
            del self.no_stream[team]
        if self.redis is None:
            return False
        try:
            ttl = await self.redis.ttl(self._key("nostream", team))
        except RedisError:
            return False
        if ttl and ttl > 0:
            self.no_stream[team] = time.monotonic() + ttl
            return True
        return False


def remember(store: dict[str, Any], key: str, value: Any, limit: int = 10_000) -> None:
    """Set `store[key]`, forgetting the oldest entries past `limit`."""
    store.pop(key, None)
    store[key] = value
    while len(store) > limit:
        store.pop(next(iter(store)))


def _text(value: Any) -> str | None:
    """A Redis reply as text, whether the client decodes replies or not."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
