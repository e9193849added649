"""Word that a ticket's inbox has a new message, so its follower sends it at once.

`TicketStore.push_message` publishes the ticket id on one Redis channel. Each worker process
holds one subscription (`InboxSignals`) and sets the asyncio event of the ticket it follows,
instead of every follower polling its inbox twice a second. Pub/sub may drop a message while
the subscription reconnects, so followers still look at their inbox now and then
(`FALLBACK_POLL_SECONDS`); a signal only makes that look happen sooner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

CHANNEL = "sa:inbox:new"
FALLBACK_POLL_SECONDS = 5.0


class InboxSignals:
    """One subscription for the process; `waiter(ticket_id)` is the event a follower waits on."""

    def __init__(self, redis: aioredis.Redis, max_backoff: float = 5.0) -> None:
        self.redis = redis
        self.max_backoff = max_backoff
        self._events: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    def waiter(self, ticket_id: str) -> asyncio.Event:
        return self._events.setdefault(ticket_id, asyncio.Event())

    def release(self, ticket_id: str, event: asyncio.Event) -> None:
        if self._events.get(ticket_id) is event:
            del self._events[ticket_id]

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="inbox-signals")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _listen(self) -> None:
        backoff = 0.5
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                async for message in pubsub.listen():
                    if message.get("type") == "subscribe":  # Redis confirmed: pushes reach us now
                        self.subscribed.set()
                        backoff = 0.5
                    elif message.get("type") == "message":
                        self._wake(message.get("data"))
            except (RedisError, OSError) as exc:
                log.warning("inbox signals lost; resubscribing", extra={"error": repr(exc)})
            finally:
                self.subscribed.clear()
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            # Missed signals are covered by the followers' fallback look at their inbox.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _wake(self, data: object) -> None:
        ticket_id = data.decode() if isinstance(data, bytes) else str(data)
        event = self._events.get(ticket_id)
        if event is not None:
            event.set()
