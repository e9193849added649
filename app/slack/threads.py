"""Reading a ticket's thread back from Slack."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient


async def find_message(slack: AsyncWebClient, channel: str, thread_ts: str, ts: str) -> dict[str, Any] | None:
    """One message of a thread by its ts, in a single call (raises SlackApiError)."""
    response = await slack.conversations_replies(
        channel=channel, ts=thread_ts or ts, oldest=ts, latest=ts, inclusive=True, limit=10
    )
    return next((dict(m) for m in response.get("messages") or [] if m.get("ts") == ts), None)


async def thread_messages(
    slack: AsyncWebClient, channel: str, thread_ts: str, max_pages: int = 10
) -> AsyncIterator[dict[str, Any]]:
    """A thread's messages, oldest first, following the SDK's cursor pages (raises SlackApiError)."""
    first = await slack.conversations_replies(channel=channel, ts=thread_ts, limit=200)
    pages = 0
    async for page in first:
        for message in page.get("messages") or []:
            yield dict(message)
        pages += 1
        if pages >= max_pages:
            return
