"""Slack rate limits shared by every process: token buckets in Redis, per workspace and method.

Slack meters each Web API method per workspace (`chat.postMessage` also per channel) and refills
continuously; a token bucket models exactly that. One Lua script takes a token or says how long
to wait, atomically and on Redis's own clock, so any number of workers on any hosts share one
budget. A 429 blocks its bucket for `Retry-After` seconds for everyone and empties it.

Why not the `limits` library (checked: 5.8 has async Redis storage): it offers fixed, moving
and sliding windows in whole seconds, not token buckets. A moving window of 20/min lets 20
starts through and then none for a minute, where Slack trickles one every 3 s; and whole-second
windows cannot express the scaled-up limits the tests and benchmark run with.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import redis.asyncio as aioredis


@dataclass(frozen=True)
class Limit:
    """`per_minute` refill; `burst` tokens at most (Slack allows a minute's budget at once)."""

    per_minute: float
    burst: float
    per_channel: bool = False


def tier(per_minute: float) -> Limit:
    return Limit(per_minute, per_minute)


# Slack's published tiers for the methods the renderer calls.
DEFAULT_LIMITS: dict[str, Limit] = {
    "chat.startStream": tier(20),
    "chat.stopStream": tier(20),
    "chat.appendStream": tier(100),
    "chat.update": tier(50),
    "chat.delete": tier(50),
    "chat.postMessage": Limit(60, 3, per_channel=True),
    "assistant.threads.setStatus": tier(50),
}

_ACQUIRE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return tostring(blocked / 1000) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return tostring(wait)
"""

_PENALISE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
redis.call('HSET', KEYS[1], 'tokens', '0', 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


class PriorityLock:
    """A lock whose waiters get it by priority, then first come first served."""

    def __init__(self) -> None:
        self._held = False
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def locked(self) -> bool:
        return self._held

    @contextlib.asynccontextmanager
    async def hold(self, priority: int = 1) -> AsyncIterator[None]:
        if self._held or self._waiters:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (priority, next(self._seq), fut)
            heapq.heappush(self._waiters, entry)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release()  # it was handed to us as we were cancelled: pass it on
                elif entry in self._waiters:
                    self._waiters.remove(entry)
                    heapq.heapify(self._waiters)
                raise
        self._held = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)  # ownership passes straight to it
                return
        self._held = False


@dataclass
class TokenBuckets:
    """Shared buckets. `scale` multiplies every refill rate, `burst_scale` every capacity
    (the Slack emulator takes the same two knobs, so tests can run a minute in a second).

    `safety` keeps a margin below Slack's figures: capacity x (1 - safety), rate x (1 -
    safety / 2). With the buckets saturated, requests reach Slack with some jitter; the
    spare tokens absorb it instead of a 429.
    """

    redis: aioredis.Redis
    limits: Mapping[str, Limit] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    scale: float = 1.0
    burst_scale: float = 1.0
    prefix: str = "slack-rl"
    max_sleep: float = 5.0
    safety: float = 0.1

    def __post_init__(self) -> None:
        self._acquire = self.redis.register_script(_ACQUIRE)
        self._penalise = self.redis.register_script(_PENALISE)
        self._locks: dict[str, PriorityLock] = {}

    def _keys(self, team: str, method: str, channel: str | None) -> tuple[list[str], Limit] | None:
        limit = self.limits.get(method)
        if limit is None or limit.per_minute <= 0:
            return None
        key = f"{self.prefix}:{team}:{method}"
        if limit.per_channel:
            key += f":{channel or '-'}"
        return [key, key + ":blocked"], limit

    def rate(self, limit: Limit) -> float:
        return limit.per_minute / 60.0 * self.scale * (1 - self.safety / 2)

    def capacity(self, limit: Limit) -> float:
        return max(1.0, limit.burst * self.burst_scale * (1 - self.safety))

    async def acquire(
        self,
        team: str,
        method: str,
        channel: str | None = None,
        *,
        max_wait: float | None = None,
        priority: int = 1,
    ) -> bool:
        """Take a token, waiting as long as needed (or at most `max_wait` seconds: then False).

        Waiters in one process queue on a lock, so only one of them polls Redis at a time; they
        are served by `priority` (lower first: a turn whose requester waits for its first
        words), then in order of arrival.
        """
        found = self._keys(team, method, channel)
        if found is None:
            return True
        keys, limit = found
        lock = self._locks.setdefault(keys[0], PriorityLock())
        if max_wait is not None and max_wait <= 0 and lock.locked():
            return False
        loop = asyncio.get_running_loop()
        deadline = None if max_wait is None else loop.time() + max_wait
        async with lock.hold(priority):
            while True:
                wait = float(
                    await self._acquire(keys=keys, args=[self.rate(limit), self.capacity(limit)])
                )
                if wait <= 0:
                    return True
                if deadline is not None and loop.time() + wait > deadline:
                    return False
                await asyncio.sleep(min(wait, self.max_sleep))

    async def penalise(self, team: str, method: str, channel: str | None, retry_after: float) -> bool:
        """Slack said 429: nobody calls `method` for `retry_after` seconds, and the bucket
        starts again from empty. False for a method without a bucket (the caller waits)."""
        found = self._keys(team, method, channel)
        if found is None:
            return False
        keys, limit = found
        block_ms = max(1, math.ceil(retry_after * 1000))
        ttl = block_ms + math.ceil(self.capacity(limit) / self.rate(limit) * 1000) + 1000
        await self._penalise(keys=keys, args=[block_ms, ttl])
        return True
