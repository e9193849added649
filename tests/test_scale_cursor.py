"""Issue 14 item 2: the cursor's per-event Redis work is batched, with the same guarantees.

Counted with Redis's own command statistics (`INFO commandstats`) on the real test Redis.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from app.jobs.lease import LeaseManager
from app.sessions import cursor as cursor_mod
from app.sessions.cursor import Cursor, StaleLease, batcher_for


async def _calls(redis: aioredis.Redis, command: str) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def _lease(redis: aioredis.Redis, ticket: str) -> int:
    lease = await LeaseManager(redis, "w1", ttl_seconds=30).acquire(ticket)
    assert lease is not None
    return lease.fence


async def test_seen_answers_from_memory(redis: aioredis.Redis) -> None:
    await redis.sadd("sa:rendered:s1", "ev-old-1", "ev-old-2")
    cursor = Cursor(redis, "T1-1", "s1", await _lease(redis, "T1-1"))
    assert await cursor.processed_at() is None
    before = await _calls(redis, "sismember")
    assert await cursor.seen("ev-old-1") and await cursor.seen("ev-old-2")
    assert not any([await cursor.seen(f"ev-new-{i}") for i in range(100)])
    await cursor.mark("ev-new-1", None)
    assert await cursor.seen("ev-new-1")
    assert await _calls(redis, "sismember") == before  # no per-event lookups


async def test_a_set_too_large_to_read_falls_back_to_lookups(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cursor_mod, "SNAPSHOT_LIMIT", 1)
    await redis.sadd("sa:rendered:s1", "ev-1", "ev-2")
    cursor = Cursor(redis, "T1-1", "s1", await _lease(redis, "T1-1"))
    assert await cursor.seen("ev-2")
    assert not await cursor.seen("ev-3")


async def test_concurrent_marks_share_round_trips_and_are_durable_when_they_return(redis: aioredis.Redis) -> None:
    cursors = [Cursor(redis, f"T1-{n}", f"s{n}", await _lease(redis, f"T1-{n}")) for n in range(5)]
    batcher = batcher_for(redis)
    trips, scripts = batcher.round_trips, batcher.script_calls

    async def mark(c: Cursor, i: int) -> None:
        await c.mark(f"ev-{i}", None)
        assert await redis.sismember(c._rendered, f"ev-{i}")  # durable once mark returns

    await asyncio.gather(*(mark(c, i) for c in cursors for i in range(40)))
    for c in cursors:
        assert await redis.scard(c._rendered) == 40
    # 200 marks: the first goes alone, the rest wait for it and go together.
    assert batcher.round_trips - trips <= 3
    assert batcher.script_calls - scripts <= 3 * len(cursors)


async def test_the_cursor_moves_only_with_every_earlier_mark(redis: aioredis.Redis) -> None:
    cursor = Cursor(redis, "T1-1", "s1", await _lease(redis, "T1-1"))
    content = [asyncio.create_task(cursor.mark(f"ev-{i}", None)) for i in range(30)]
    await cursor.mark("ev-idle", "2026-01-01T00:00:05Z")
    members = await redis.smembers("sa:rendered:s1")
    assert {f"ev-{i}" for i in range(30)} <= members  # marked before the cursor moved
    assert await redis.hget("sa:cursor:s1", "processed_at") == "2026-01-01T00:00:05Z"
    assert await redis.hget("sa:cursor:s1", "event_id") == "ev-idle"
    await asyncio.gather(*content)
    # The cursor never moves back.
    await cursor.mark("ev-late", "2026-01-01T00:00:01Z")
    assert await redis.hget("sa:cursor:s1", "processed_at") == "2026-01-01T00:00:05Z"


async def test_a_stale_holder_writes_nothing_even_batched_with_a_live_one(redis: aioredis.Redis) -> None:
    old_fence = await _lease(redis, "T1-1")
    await redis.delete("sa:lease:T1-1")
    assert await LeaseManager(redis, "w2", ttl_seconds=30).acquire("T1-1") is not None  # moved the fence
    stale = Cursor(redis, "T1-1", "s1", old_fence)
    live = Cursor(redis, "T1-2", "s2", await _lease(redis, "T1-2"))
    results = await asyncio.gather(
        *(stale.mark(f"ev-{i}", "2026-01-01T00:00:09Z") for i in range(5)),
        *(live.mark(f"ev-{i}", None) for i in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(r, StaleLease) for r in results[:5])
    assert results[5:] == [None] * 5
    assert await redis.scard("sa:rendered:s1") == 0
    assert await redis.hget("sa:cursor:s1", "processed_at") is None
    assert await redis.scard("sa:rendered:s2") == 5
    with pytest.raises(StaleLease):  # fences only grow: refused from then on
        await stale.mark("ev-9", None)


async def test_marks_survive_a_redis_that_forgot_the_script(redis: aioredis.Redis) -> None:
    cursor = Cursor(redis, "T1-1", "s1", await _lease(redis, "T1-1"))
    await cursor.mark("ev-1", None)
    await redis.script_flush()
    await cursor.mark("ev-2", "2026-01-01T00:00:02Z")
    assert await redis.smembers("sa:rendered:s1") == {"ev-1", "ev-2"}
