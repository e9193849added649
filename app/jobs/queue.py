"""Work handed from intake to workers: a Redis stream read through one consumer group.

A job only says "ticket X has something to do"; the work itself (the inbox, the cursor) lives
on the ticket, so running a job twice is harmless. Jobs a dead consumer read but never
acknowledged are reclaimed by the others after `reclaim_after_ms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

STREAM = "sa:jobs"
GROUP = "workers"


@dataclass(frozen=True)
class Job:
    id: str
    ticket_id: str
    reason: str


class JobQueue:
    def __init__(self, redis: aioredis.Redis, consumer: str, reclaim_after_ms: int = 30_000) -> None:
        self.redis = redis
        self.consumer = consumer
        self.reclaim_after_ms = reclaim_after_ms

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, ticket_id: str, reason: str) -> str:
        return str(await self.redis.xadd(STREAM, {"ticket_id": ticket_id, "reason": reason}, maxlen=100_000))

    async def take(self, count: int = 10, block_ms: int = 1000) -> list[Job]:
        reply: Any = await self.redis.xreadgroup(GROUP, self.consumer, {STREAM: ">"}, count=count, block=block_ms)
        return [_job(i, f) for _, entries in reply or [] for i, f in entries]

    async def reclaim(self, count: int = 10) -> list[Job]:
        """Jobs a vanished consumer left unacknowledged."""
        reply: Any = await self.redis.xautoclaim(
            STREAM, GROUP, self.consumer, min_idle_time=self.reclaim_after_ms, start_id="0-0", count=count
        )
        return [_job(i, f) for i, f in reply[1] if f]

    async def ack(self, job: Job) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(STREAM, GROUP, job.id)
            pipe.xdel(STREAM, job.id)
            await pipe.execute()


def _job(entry_id: str, fields: dict[str, str]) -> Job:
    return Job(id=entry_id, ticket_id=fields.get("ticket_id", ""), reason=fields.get("reason", ""))
