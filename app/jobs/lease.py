"""Per-ticket leases: at most one worker follows a ticket's session at a time.

A lease is a Redis key with an expiry, renewed by its holder. Each grant carries a fencing
number that only grows, so a worker that lost its lease (paused, partitioned) cannot overwrite
the progress of the worker that took over: writes check the fence first.
A sorted set of active tickets, scored by lease expiry, lets live workers find the tickets
whose holder died and take them over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.jobs.wake import wake_key

ACTIVE = "sa:active"

# A grant also consumes the ticket's wake-up mark (`app.jobs.wake`): the new holder reads the
# session after this, so it sees whatever the waker did before marking.
# Fences only grow, even across a Redis that came back empty: a new grant's fence is at least
# Redis's clock in milliseconds, so it is above every fence granted before the data was lost.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if fence < now then
    redis.call('SET', KEYS[2], now)
    fence = now
  end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
  redis.call('DEL', KEYS[4])
  return fence
end
return 0
"""

# Renew our lease; or, when its key is gone (it lapsed while we could not reach Redis, or Redis
# lost it) and nobody was granted the ticket since (the fence did not move past ours), take it
# back. Anyone else's grant, live or since released, means we lost it.
_RENEW = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  return 1
end
if current then return 0 end
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
local ours = tonumber(ARGV[5])
if fence > ours then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if fence < ours then redis.call('SET', KEYS[3], ARGV[5]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 2
"""

# ARGV[2]: 1 the ticket is done (leave the active set), 0 keep it there as it was, 2 hand it
# off (score 0: any live worker's reaper takes it on its next pass, not after the lease time).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], ARGV[3]) end
  if ARGV[2] == '2' then redis.call('ZADD', KEYS[2], 0, ARGV[3]) end
  return 1
end
return 0
"""


@dataclass
class Lease:
    ticket_id: str
    holder: str
    fence: int


class LeaseManager:
    def __init__(self, redis: aioredis.Redis, worker_id: str, ttl_seconds: float) -> None:
        self.redis = redis
        self.worker_id = worker_id
        self.ttl_ms = int(ttl_seconds * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def _holder(self, fence_hint: str = "") -> str:
        return f"{self.worker_id}:{fence_hint or time.monotonic_ns()}"

    async def acquire(self, ticket_id: str) -> Lease | None:
        holder = self._holder()
        fence = await self._acquire(
            keys=[f"sa:lease:{ticket_id}", f"sa:fence:{ticket_id}", ACTIVE, wake_key(ticket_id)],
            args=[holder, self.ttl_ms, self._expiry_score(), ticket_id],
        )
        return Lease(ticket_id, holder, int(fence)) if fence else None

    async def renew(self, lease: Lease) -> bool:
        """Extend the lease (or take it back if it lapsed and nobody else got it)."""
        return bool(
            await self._renew(
                keys=[f"sa:lease:{lease.ticket_id}", ACTIVE, f"sa:fence:{lease.ticket_id}"],
                args=[lease.holder, self.ttl_ms, self._expiry_score(), lease.ticket_id, lease.fence],
            )
        )

    async def release(self, lease: Lease, done: bool, handoff: bool = False) -> bool:
        """Give the lease up; `done` also drops the ticket from the active set, `handoff` marks
        it for the next live worker at once (a graceful shutdown)."""
        mode = "1" if done else ("2" if handoff else "0")
        return bool(
            await self._release(
                keys=[f"sa:lease:{lease.ticket_id}", ACTIVE],
                args=[lease.holder, mode, lease.ticket_id],
            )
        )

    async def still_holds(self, lease: Lease) -> bool:
        return await self.redis.get(f"sa:lease:{lease.ticket_id}") == lease.holder

    async def current_fence(self, ticket_id: str) -> int:
        return int(await self.redis.get(f"sa:fence:{ticket_id}") or 0)

    async def orphans(self, limit: int = 20) -> list[str]:
        """Active tickets whose lease ran out: their worker is gone."""
        ids = await self.redis.zrangebyscore(ACTIVE, "-inf", time.time() * 1000, start=0, num=limit)
        orphaned = []
        for raw in ids:
            ticket_id = str(raw)
            if not await self.redis.exists(f"sa:lease:{ticket_id}"):
                orphaned.append(ticket_id)
        return orphaned

    async def mark_active(self, ticket_id: str) -> None:
        """Put a ticket in the active set so some worker picks it up even if no job reaches one."""
        await self.redis.zadd(ACTIVE, {ticket_id: 0}, nx=True)

    def _expiry_score(self) -> float:
        return time.time() * 1000 + self.ttl_ms
