"""Leases and fences through Redis trouble: a lapsed lease nobody took is taken back, one
someone else took is lost for good, fences keep growing when Redis comes back empty, and the
pool waits for a connection instead of failing."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.jobs.lease import LeaseManager
from app.redis_conn import EmbeddedRedis, connect
from app.sessions.cursor import Cursor, StaleLease


async def test_a_lapsed_lease_nobody_took_is_taken_back(redis: aioredis.Redis) -> None:
    leases = LeaseManager(redis, "w1", ttl_seconds=5)
    lease = await leases.acquire("T1-1")
    assert lease is not None
    await redis.delete("sa:lease:T1-1")  # it lapsed while we were cut off
    assert await leases.renew(lease)
    assert await leases.still_holds(lease)


async def test_a_lease_another_worker_was_granted_is_lost_even_after_it_let_go(redis: aioredis.Redis) -> None:
    mine = LeaseManager(redis, "w1", ttl_seconds=5)
    theirs = LeaseManager(redis, "w2", ttl_seconds=5)
    lease = await mine.acquire("T1-1")
    assert lease is not None
    await redis.delete("sa:lease:T1-1")
    other = await theirs.acquire("T1-1")
    assert other is not None and other.fence > lease.fence
    assert not await mine.renew(lease)
    await theirs.release(other, done=False)
    assert not await mine.renew(lease)  # their grant moved the fence past ours
    stale = Cursor(redis, "T1-1", "sesn", lease.fence)
    try:
        await stale.mark("ev1", None)
    except StaleLease:
        pass
    else:
        raise AssertionError("a stale holder moved the cursor")


async def test_fences_keep_growing_when_redis_comes_back_empty(redis: aioredis.Redis) -> None:
    leases = LeaseManager(redis, "w1", ttl_seconds=5)
    before = await leases.acquire("T1-1")
    assert before is not None
    await redis.flushall()  # a Redis restarted without its data
    after = await LeaseManager(redis, "w2", ttl_seconds=5).acquire("T1-1")
    assert after is not None and after.fence > before.fence
    assert not await leases.renew(before)


async def test_handoff_makes_the_ticket_an_orphan_at_once(redis: aioredis.Redis) -> None:
    leases = LeaseManager(redis, "w1", ttl_seconds=30)
    lease = await leases.acquire("T1-1")
    assert lease is not None
    assert await leases.orphans() == []
    await leases.release(lease, done=False, handoff=True)
    assert await LeaseManager(redis, "w2", ttl_seconds=30).orphans() == ["T1-1"]


async def test_the_pool_waits_for_a_connection_instead_of_failing(redis_server: EmbeddedRedis) -> None:
    client = connect(redis_server.url, max_connections=2, pool_timeout=10)
    try:
        results = await asyncio.gather(*(client.execute_command("DEBUG", "SLEEP", "0.01") for _ in range(40)))
        assert len(results) == 40
    finally:
        await client.aclose()
