"""The shared Slack token buckets, on a real Redis."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.redis_conn import EmbeddedRedis, connect
from app.render.ratelimit import Limit, TokenBuckets


async def test_a_bucket_allows_its_burst_then_makes_callers_wait(redis: aioredis.Redis) -> None:
    buckets = TokenBuckets(redis, {"m": Limit(per_minute=60, burst=3)}, safety=0)
    for _ in range(3):
        assert await buckets.acquire("T1", "m", max_wait=0)
    assert not await buckets.acquire("T1", "m", max_wait=0)
    # another workspace has its own bucket; an unknown method is not limited
    assert await buckets.acquire("T2", "m", max_wait=0)
    assert await buckets.acquire("T1", "other", max_wait=0)


async def test_refill_follows_the_rate(redis: aioredis.Redis) -> None:
    buckets = TokenBuckets(redis, {"m": Limit(per_minute=60, burst=1)}, scale=20)  # 20 tokens/s
    assert await buckets.acquire("T1", "m", max_wait=0)
    assert not await buckets.acquire("T1", "m", max_wait=0)
    assert await buckets.acquire("T1", "m", max_wait=1.0)  # waits ~50 ms for the next token


async def test_per_channel_limits_are_separate(redis: aioredis.Redis) -> None:
    buckets = TokenBuckets(redis, {"post": Limit(60, 1, per_channel=True)})
    assert await buckets.acquire("T1", "post", "C1", max_wait=0)
    assert not await buckets.acquire("T1", "post", "C1", max_wait=0)
    assert await buckets.acquire("T1", "post", "C2", max_wait=0)


async def test_buckets_are_shared_between_processes(redis_server: EmbeddedRedis) -> None:
    """Two clients (as two worker processes would hold) draw from one budget."""
    one, two = connect(redis_server.url), connect(redis_server.url)
    try:
        await one.flushall()
        limits = {"m": Limit(per_minute=60, burst=4)}
        a, b = TokenBuckets(one, limits, safety=0), TokenBuckets(two, limits, safety=0)
        granted = [await x.acquire("T1", "m", max_wait=0) for x in (a, b, a, b, a, b)]
        assert granted.count(True) == 4
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_429_blocks_everyone_for_retry_after(redis: aioredis.Redis) -> None:
    limits = {"m": Limit(per_minute=6000, burst=100)}
    a, b = TokenBuckets(redis, limits), TokenBuckets(redis, limits)
    assert await a.acquire("T1", "m", max_wait=0)
    assert await a.penalise("T1", "m", None, 0.3)
    assert not await b.acquire("T1", "m", max_wait=0.1)
    assert await b.acquire("T1", "m", max_wait=2.0)
    assert not await a.penalise("T1", "unlimited", None, 1.0)


async def test_waiters_in_one_process_are_served_in_turn(redis: aioredis.Redis) -> None:
    buckets = TokenBuckets(redis, {"m": Limit(per_minute=60, burst=1)}, scale=30)  # 30/s
    order: list[int] = []

    async def take(i: int) -> None:
        await buckets.acquire("T1", "m")
        order.append(i)

    await asyncio.gather(*(take(i) for i in range(6)))
    assert order == list(range(6))


async def test_a_safety_margin_stays_below_slacks_figures(redis: aioredis.Redis) -> None:
    buckets = TokenBuckets(redis, {"m": Limit(per_minute=20, burst=20)})
    granted = [await buckets.acquire("T1", "m", max_wait=0) for _ in range(20)]
    assert granted.count(True) == 18
    assert buckets.rate(Limit(60, 60)) < 1.0


async def test_waiters_are_served_first_words_first_then_in_order(redis: aioredis.Redis) -> None:
    """A turn whose requester still waits for the first words jumps the queue of busy turns."""
    buckets = TokenBuckets(redis, {"m": Limit(per_minute=60, burst=1)}, scale=10, safety=0)  # 10/s
    assert await buckets.acquire("T1", "m")  # the bucket is empty now
    served: list[str] = []

    async def waiter(name: str, priority: int) -> None:
        await buckets.acquire("T1", "m", priority=priority)
        served.append(name)

    tasks = [asyncio.create_task(waiter(f"busy{i}", 1)) for i in range(3)]
    await asyncio.sleep(0.01)
    tasks.append(asyncio.create_task(waiter("first-words", 0)))
    await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    # busy0 was already polling Redis when the newcomer came; after it, the newcomer goes first
    assert served[:2] == ["busy0", "first-words"] and served[2:] == ["busy1", "busy2"]


async def test_a_cancelled_waiter_does_not_block_the_queue(redis: aioredis.Redis) -> None:
    buckets = TokenBuckets(redis, {"m": Limit(per_minute=60, burst=1)}, scale=20, safety=0)
    assert await buckets.acquire("T1", "m")
    first = asyncio.create_task(buckets.acquire("T1", "m"))
    second = asyncio.create_task(buckets.acquire("T1", "m"))
    await asyncio.sleep(0.005)
    second.cancel()
    assert await asyncio.wait_for(first, 2)
    assert await asyncio.wait_for(buckets.acquire("T1", "m"), 2)
