"""Links to tickets' threads (`chat.getPermalink`), cached in Redis.

A thread's permalink never changes, so each is asked of Slack once and kept with the ticket
(`sa:ticket:<id>:permalink`). Lists that show many tickets (the App Home) ask for the missing
ones a few at a time; a ticket whose link Slack will not give (channel gone, bot removed)
simply has none, and is asked again later.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.tickets.model import Ticket

log = logging.getLogger(__name__)

CONCURRENCY = 4


def _key(ticket_id: str) -> str:
    return f"sa:ticket:{ticket_id}:permalink"


async def permalinks(slack: AsyncWebClient, redis: aioredis.Redis, tickets: list[Ticket]) -> dict[str, str]:
    """Ticket id -> link to its thread, for those Slack gives a link for."""
    if not tickets:
        return {}
    cached = await redis.mget([_key(t.id) for t in tickets])
    links = {t.id: str(link) for t, link in zip(tickets, cached, strict=True) if link}
    missing = [t for t in tickets if t.id not in links]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def fetch(ticket: Ticket) -> None:
        async with gate:
            try:
                response = await slack.chat_getPermalink(channel=ticket.channel_id, message_ts=ticket.thread_ts)
            except SlackApiError as exc:
                log.info("no permalink", extra={"ticket": ticket.id, "error": exc.response.get("error")})
                return
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.info("no permalink", extra={"ticket": ticket.id, "error": repr(exc)})
                return
        link = str(response.get("permalink") or "")
        if link:
            links[ticket.id] = link
            await redis.set(_key(ticket.id), link)

    await asyncio.gather(*(fetch(t) for t in missing))
    return links
