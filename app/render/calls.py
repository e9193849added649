"""Slack Web API calls through the shared token buckets, retried through 429s and blips."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.render.content import Batch
from app.render.ratelimit import TokenBuckets
from app.render.turn import RenderStats
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

Built = tuple[dict[str, Any], Batch | None]


class SlackCalls:
    def __init__(self, slack: AsyncWebClient, buckets: TokenBuckets | None, stats: RenderStats) -> None:
        self.slack = slack
        self.buckets = buckets
        self.stats = stats

    async def call(
        self,
        ticket: Ticket,
        method: str,
        build: Callable[[], Built | None],
        *,
        max_wait: float | None = None,
        priority: int = 1,
        before_send: Callable[[Batch | None], Awaitable[None]] | None = None,
    ) -> Built | None:
        """One Web API call; 429s wait (`Retry-After`, for every process) and rebuild the payload.

        `build` runs once the token is granted (so the payload holds everything pending) and
        returns the keyword arguments and the batch they carry, or None for nothing to send.
        """
        fn = getattr(self.slack, method.replace(".", "_"))
        transient = 0
        while True:
            if not await self._acquire(ticket, method, max_wait, priority):
                return None
            built = build()
            if built is None:
                return None
            kwargs, batch = built
            if before_send is not None:
                await before_send(batch)
            self.stats.calls[method] += 1
            try:
                response = await fn(**kwargs)
            except SlackApiError as exc:
                if exc.response.status_code != 429:
                    raise
                self.stats.rate_limited += 1
                retry_after = _retry_after(exc.response)
                log.info("slack rate limited", extra={"method": method, "retry_after": retry_after})
                penalised = await self._penalise(ticket, method, retry_after)
                if max_wait == 0:
                    return None
                if not penalised:
                    await asyncio.sleep(retry_after)
                continue
            except (aiohttp.ClientError, TimeoutError):
                transient += 1
                if transient > 3:
                    raise
                await asyncio.sleep(0.5 * 2**transient)
                continue
            return response, batch

    async def _acquire(self, ticket: Ticket, method: str, max_wait: float | None, priority: int) -> bool:
        if self.buckets is None:
            return True
        try:
            return await self.buckets.acquire(
                ticket.team_id, method, ticket.channel_id, max_wait=max_wait, priority=priority
            )
        except RedisError as exc:  # no shared budget for now: Slack's own 429s still pace us
            log.warning("rate-limit buckets unavailable", extra={"error": type(exc).__name__})
            return True

    async def _penalise(self, ticket: Ticket, method: str, retry_after: float) -> bool:
        if self.buckets is None:
            return False
        try:
            return await self.buckets.penalise(ticket.team_id, method, ticket.channel_id, retry_after)
        except RedisError:
            return False


def _fixed(kwargs: dict[str, Any]) -> Callable[[], Built]:
    """A payload that does not depend on pending content."""
    return lambda: (kwargs, None)


def _sent(done: Built | None) -> tuple[Any, Batch]:
    """The response and batch of a call made with a batch-building payload."""
    assert done is not None and done[1] is not None
    return done[0], done[1]


def _error(exc: BaseException) -> str | None:
    if isinstance(exc, SlackApiError):
        try:
            return str(exc.response.get("error") or "") or None
        except Exception:
            return None
    return type(exc).__name__


def _retry_after(response: Any) -> float:
    headers = getattr(response, "headers", None) or {}
    value = None
    for key in ("Retry-After", "retry-after"):
        if key in headers:
            value = headers[key]
            break
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0
