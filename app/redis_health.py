"""Riding out Redis outages: one watcher per process, shared by every loop that needs Redis.

A loop that meets a connection error calls `wait_until_up()`. The first caller starts one probe
(PING with exponential backoff and jitter) and logs that Redis is unreachable; everyone else
waits on the same probe. When PING answers, one line says so and how long it took, and all of
them carry on. Nothing here ever gives up: a role does not exit because Redis went away.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import redis.asyncio as aioredis
from redis.exceptions import BusyLoadingError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.redis_conn import safe_url

log = logging.getLogger(__name__)

# What "Redis is not there" looks like; a wrong command or a script error is a bug, not an outage.
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ConnectionError,
    OSError,
)


def is_outage(exc: BaseException) -> bool:
    if isinstance(exc, REDIS_DOWN):
        return True
    # A replica promoted or a server still loading its data answers with these.
    return isinstance(exc, RedisError) and any(
        word in str(exc) for word in ("LOADING", "READONLY", "MASTERDOWN", "No connection available")
    )


class RedisUnavailable(Exception):
    """Redis could not be reached within the start-up allowance."""

    def __init__(self, url: str, waited: float, error: BaseException | None) -> None:
        self.url = url
        self.waited = waited
        detail = f": {error}" if error else ""
        super().__init__(f"cannot reach Redis at {safe_url(url)} after {waited:.0f}s{detail}")


class RedisWatch:
    def __init__(
        self,
        redis: aioredis.Redis,
        url: str,
        *,
        base_delay: float = 0.1,
        max_delay: float = 5.0,
    ) -> None:
        self.redis = redis
        self.url = url
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._probe: asyncio.Task[None] | None = None
        self.outages = 0
        self.down_since: float | None = None

    @property
    def down(self) -> bool:
        return self._probe is not None and not self._probe.done()

    async def _ping(self) -> None:
        await self.redis.ping()

    def _delay(self, attempt: int) -> float:
        # Full jitter: many processes coming back at once do not hit Redis in step.
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    async def _wait_out(self, first_error: BaseException | None) -> None:
        self.outages += 1
        self.down_since = time.monotonic()
        log.warning(
            "redis unreachable; waiting for it",
            extra={"redis": safe_url(self.url), "error": repr(first_error) if first_error else None},
        )
        attempt = 0
        while True:
            await asyncio.sleep(self._delay(attempt))
            attempt = min(attempt + 1, 30)
            try:
                await self._ping()
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("redis probe failed", extra={"error": repr(exc)})
                continue
            break
        waited = time.monotonic() - self.down_since
        self.down_since = None
        log.warning("redis reachable again", extra={"redis": safe_url(self.url), "down_seconds": round(waited, 2)})

    async def wait_until_up(self, error: BaseException | None = None) -> None:
        """Return once Redis answers PING again (at once when it already does)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._wait_out(error), name="redis-probe")
        await asyncio.shield(self._probe)

    async def wait_at_start(self, timeout: float) -> None:
        """Retry for up to `timeout` seconds at start-up, then raise `RedisUnavailable`."""
        started = time.monotonic()
        attempt = 0
        last: BaseException | None = None
        announced = False
        while True:
            try:
                await self._ping()
                if announced:
                    log.warning("redis reachable", extra={"redis": safe_url(self.url)})
                return
            except Exception as exc:
                if not is_outage(exc):
                    raise
                last = exc
            waited = time.monotonic() - started
            if waited >= timeout:
                raise RedisUnavailable(self.url, waited, last)
            if not announced:
                log.warning(
                    "redis not reachable yet; retrying",
                    extra={"redis": safe_url(self.url), "for_seconds": timeout, "error": repr(last)},
                )
                announced = True
            await asyncio.sleep(min(self._delay(attempt) + 0.05, max(timeout - waited, 0.01)))
            attempt = min(attempt + 1, 30)
