"""Where a session's event following got to: survives restarts and takeovers.

`processed_at` of the last handled event says where to list from after a reconnect; the set of
rendered event ids says what not to show again (listing is inclusive, and a takeover replays
everything since the cursor). Writes are fenced: a worker that lost its lease cannot move the
cursor of the worker that took over.
"""

from __future__ import annotations

import redis.asyncio as aioredis

RENDERED_TTL_SECONDS = 60 * 24 * 3600

_ADVANCE = """
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
if fence > tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
if ARGV[3] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'processed_at')
  if (not current) or ARGV[3] > current then
    redis.call('HSET', KEYS[1], 'processed_at', ARGV[3], 'event_id', ARGV[2])
  end
end
return 1
"""


class StaleLease(Exception):
    """Another worker holds a newer lease on this ticket; stop following."""


class Cursor:
    def __init__(self, redis: aioredis.Redis, ticket_id: str, session_id: str, fence: int) -> None:
        self.redis = redis
        self.ticket_id = ticket_id
        self.session_id = session_id
        self.fence = fence
        self._key = f"sa:cursor:{session_id}"
        self._rendered = f"sa:rendered:{session_id}"
        self._advance = redis.register_script(_ADVANCE)

    async def processed_at(self) -> str | None:
        value = await self.redis.hget(self._key, "processed_at")
        return str(value) if value else None

    async def seen(self, event_id: str) -> bool:
        return bool(await self.redis.sismember(self._rendered, event_id))

    async def mark(self, event_id: str, processed_at: str | None) -> None:
        ok = await self._advance(
            keys=[self._key, self._rendered, f"sa:fence:{self.ticket_id}"],
            args=[self.fence, event_id, processed_at or "", RENDERED_TTL_SECONDS],
        )
        if not ok:
            raise StaleLease(self.ticket_id)
