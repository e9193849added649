"""The baseline for the benchmark: one Slack call per agent event.

What a bot without coalescing or shared buckets does: every delta is a `chat.appendStream`,
every tool event a `task_update`. By default it keeps slack_sdk's default retry handlers
(connection errors only), so a 429 loses that event's content; `rate_limit_retries` adds the
SDK's own 429 handler (sleep `Retry-After`, retry) instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from app.render.base import message_text
from app.render.describe import result_output, tool_title
from app.render.slack_text import neutralise_mentions
from app.tickets.model import Ticket

Observer = Callable[[Ticket, list[Any]], None]


class NaiveRenderer:
    def __init__(
        self, slack: AsyncWebClient, on_visible: Observer | None = None, rate_limit_retries: int = 0
    ) -> None:
        if rate_limit_retries > 0:
            slack.retry_handlers = [
                *slack.retry_handlers,
                AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
            ]
        self.slack = slack
        self.on_visible = on_visible
        self.streams: dict[str, str] = {}
        self.shown: dict[str, str] = {}
        self.failed_calls = 0

    async def event(self, ticket: Ticket, event: Any, *, replay: bool) -> None:
        etype = event.type
        if etype == "session.status_running":
            await self._call(
                ticket, event, self.slack.assistant_threads_setStatus,
                channel_id=ticket.channel_id, thread_ts=ticket.thread_ts, status="is working on it…",
            )
        elif etype == "agent.message":
            text = message_text(event)
            before = self.shown.get(event.id, "")
            rest = text[len(before) :] if text.startswith(before) else text
            if rest:
                await self._append(ticket, event, {"type": "markdown_text", "text": neutralise_mentions(rest)})
        elif etype in ("agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"):
            await self._append(
                ticket, event,
                {"type": "task_update", "id": event.id, "title": tool_title(event), "status": "in_progress"},
            )
        elif etype in ("agent.tool_result", "agent.mcp_tool_result"):
            use_id = getattr(event, "tool_use_id", None) or getattr(event, "mcp_tool_use_id", "")
            status = "error" if event.is_error else "complete"
            chunk = {"type": "task_update", "id": use_id, "title": "Tool call", "status": status,
                     "output": result_output(event)}
            await self._append(ticket, event, chunk)

    async def delta(self, ticket: Ticket, event: Any) -> None:
        if event.type != "event_delta":
            return
        text = event.delta.content.text
        self.shown[event.event_id] = self.shown.get(event.event_id, "") + text
        await self._append(ticket, event, {"type": "markdown_text", "text": neutralise_mentions(text)})

    async def turn_ended(self, ticket: Ticket, stop_reason: str | None) -> None:
        ts = self.streams.pop(ticket.id, None)
        if ts is not None:
            await self._call(ticket, None, self.slack.chat_stopStream, channel=ticket.channel_id, ts=ts)

    async def notice(self, ticket: Ticket, text: str) -> None:
        await self._call(
            ticket, None, self.slack.chat_postMessage,
            channel=ticket.channel_id, thread_ts=ticket.thread_ts, text=neutralise_mentions(text),
        )

    async def _append(self, ticket: Ticket, event: Any, chunk: dict[str, Any]) -> None:
        ts = self.streams.get(ticket.id)
        if ts is None:
            response = await self._call(
                ticket, event, self.slack.chat_startStream,
                channel=ticket.channel_id, thread_ts=ticket.thread_ts, chunks=[chunk],
                recipient_user_id=ticket.requester_id, recipient_team_id=ticket.team_id,
            )
            if response is not None:
                self.streams[ticket.id] = str(response["ts"])
            return
        await self._call(ticket, event, self.slack.chat_appendStream,
                         channel=ticket.channel_id, ts=ts, chunks=[chunk])

    async def _call(self, ticket: Ticket, event: Any, fn: Any, **kwargs: Any) -> Any:
        try:
            response = await fn(**kwargs)
        except SlackApiError:
            self.failed_calls += 1
            return None
        if event is not None and self.on_visible is not None:
            self.on_visible(ticket, [event])
        return response
