"""Make Slack show what a turn's layout wants: streams, rotation, expiry, fallback, limits.

One streamed message per turn where Slack allows it (`chat.startStream` / `appendStream` /
`stopStream`), else one posted message edited with `chat.update`. Every call goes through the
shared Redis buckets (`ratelimit.TokenBuckets`); its payload is built once the token is granted
so the wait coalesces more, and a 429 blocks the bucket for `Retry-After` and sends the same
pending content on the next try. Around each write the turn's record is saved
(`app/render/records.py`): the intent before, the outcome after.

A message shows a task in one place: a task update for a task of an earlier, closed message is
applied to that message with `chat.update`, not repeated in the current one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.render import blocks as bk
from app.render import thread_status
from app.render.calls import Built, SlackCalls, _error, _fixed, _sent
from app.render.layout import PLACEHOLDER, Batch
from app.render.ratelimit import TokenBuckets
from app.render.records import ShownRecords, intent_for, snapshot
from app.render.slack_errors import REFUSED_TEAM, kind
from app.render.turn import STREAM, UPDATE, RenderStats, SlackMessage, Turn
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

Footer = Callable[[Ticket], "str | Awaitable[str | None] | None"]
Controls = Callable[[Ticket], list[dict[str, Any]]]
Observer = Callable[[Ticket, list[Any]], None]
# (ticket, tool use ids) -> a line per decided approval ("Approved by @alice")
Decisions = Callable[[Ticket, list[str]], Awaitable[list[str]]]
# (ticket, "rotated" | "expired" | "refused" | "congested" | "adopted", detail)
StreamObserver = Callable[[Ticket, str, dict[str, Any]], Awaitable[None]]

# Slack's documented refusal to a too-long append; older emulators said msg_too_long.
TOO_LONG = frozenset({"msg_too_long", "msg_blocks_too_long"})


@dataclass
class Options:
    flush_interval: float = 1.0
    rotate_after: float = 270.0
    task_display_mode: str = "timeline"
    streaming: bool = True
    feedback: bool = True
    footer: Footer | str | None = None
    controls: Controls | None = None
    status_text: str = "is working on it…"
    loading_messages: list[str] | None = None
    start_wait: float | None = 10.0
    key_prefix: str = "render"
    decisions: Decisions | None = None
    # Controls for a turn in progress (Stop), shown once a turn has run `working_after` seconds
    # and deleted when it ends, so no Stop outlives the work it stops.
    working_controls: Controls | None = None
    working_after: float = 15.0
    no_stream: dict[str, float] = field(default_factory=dict)


class Delivery:
    def __init__(
        self,
        slack: AsyncWebClient,
        redis: aioredis.Redis | None,
        buckets: TokenBuckets | None,
        options: Options,
        stats: RenderStats,
    ) -> None:
        self.slack = slack
        self.redis = redis
        self.calls = SlackCalls(slack, buckets, stats)
        self.o = options
        self.stats = stats
        self.records = ShownRecords(redis, options.key_prefix)
        self.on_visible: Observer | None = None
        self.on_stream_event: StreamObserver | None = None

    # ---- payloads -------------------------------------------------------------------------

    def take(self, turn: Turn, msg: SlackMessage | None) -> Batch:
        """The next payload for `msg` (None: a new message), from the front of the outbox."""
        elsewhere = frozenset(t for m in turn.messages if m.closed and m is not msg for t in m.task_ids)
        if msg is None:
            return turn.layout.take("", set(), elsewhere=elsewhere)
        return turn.layout.take(
            msg.text, set(msg.task_ids), full=msg.full, has_plan=msg.has_plan, elsewhere=elsewhere
        )

    async def commit(self, turn: Turn, msg: SlackMessage, batch: Batch) -> None:
        msg.parts.extend(batch.parts)
        msg.task_ids.extend(t for t in batch.task_ids if t not in msg.task_ids)
        msg.has_plan = msg.has_plan or batch.plan
        msg.full = msg.full or batch.full
        turn.layout.commit(batch)
        for tid in batch.moved:
            turn.stale.update(m.ts for m in turn.messages if m.closed and tid in m.task_ids)
        if batch.sources and self.on_visible is not None:
            self.on_visible(turn.ticket, batch.sources)
        await self.records.save(turn.ticket.id, snapshot(turn))

    # ---- calls ----------------------------------------------------------------------------

    async def call(
        self,
        ticket: Ticket,
        method: str,
        build: Callable[[], Built | None],
        *,
        max_wait: float | None = None,
        turn: Turn | None = None,
        msg: SlackMessage | None = None,
    ) -> Built | None:
        """One Web API call through the shared buckets (`SlackCalls.call`). With `turn`, the
        write's intent is recorded before it goes out, and a turn still waiting for its first
        words is served first."""
        before = None
        if turn is not None:
            async def before(batch: Batch | None) -> None:
                parts, tasks = (batch.parts, batch.task_ids) if batch is not None else ([], [])
                await self.records.save(ticket.id, snapshot(turn, intent_for(method, msg, parts, tasks)))

        first_words = turn is not None and not any(m.parts for m in turn.messages)
        return await self.calls.call(
            ticket, method, build, max_wait=max_wait, priority=0 if first_words else 1, before_send=before
        )

    async def stream_event(self, turn: Turn, event: str, detail: dict[str, Any]) -> None:
        """Tell `on_stream_event`; its failure is logged and never stops the turn."""
        if self.on_stream_event is None:
            return
        try:
            await self.on_stream_event(turn.ticket, event, detail)
        except Exception:
            log.exception("recording a stream event failed", extra={"ticket": turn.ticket.id, "event": event})

    # ---- writes ---------------------------------------------------------------------------

    async def deliver(self, turn: Turn) -> None:
        msg = turn.current
        if msg is None:
            await self.open_message(turn, None)
        elif msg.mode == STREAM:
            await self.append(turn, msg)
        else:
            await self.update(turn, msg, None)

    async def open_message(self, turn: Turn, final: list[dict[str, Any]] | None) -> SlackMessage:
        """A new message for the pending content: a stream if a start comes within
        `start_wait` (the status shows while waiting), else a posted message. With `final`,
        a posted message is also the last one (it carries the final blocks)."""
        if turn.streaming:
            first_wait = min(self.o.flush_interval, self.o.start_wait or 0.0)
            started = await self.start(turn, first_wait)
            if started is None:
                if turn.status_wanted:
                    await thread_status.show_status(self, turn)
                started = await self.start(turn, self.o.start_wait)
            if started is not None:
                return started
            self.stats.congested += 1
            posted = await self.post(turn, final)
            await self.stream_event(turn, "congested", {"ts": posted.ts, "waited_seconds": self.o.start_wait})
            return posted
        return await self.post(turn, final)

    async def start(self, turn: Turn, max_wait: float | None = None) -> SlackMessage | None:
        """Open a stream with the pending content. None if no start token came within
        `max_wait` (streams are Slack's scarcest budget: the caller posts a message instead)."""

        def build() -> Built:
            batch = self.take(turn, None)
            kwargs: dict[str, Any] = {
                "channel": turn.ticket.channel_id,
                "thread_ts": turn.ticket.thread_ts,
                "recipient_user_id": turn.recipient,
                "recipient_team_id": turn.ticket.team_id,
                "task_display_mode": self.o.task_display_mode,
            }
            if batch.chunks:
                kwargs["chunks"] = batch.chunks
            return kwargs, batch

        try:
            done = await self.call(turn.ticket, "chat.startStream", build, max_wait=max_wait, turn=turn)
        except SlackApiError as exc:
            error = _error(exc)
            if kind("chat.startStream", error) in ("refused", "content"):
                await self.refuse(turn, error or "")
                return await self.post(turn, None)
            raise
        if done is None:
            return None
        response, batch = _sent(done)
        msg = SlackMessage(str(response["ts"]), STREAM, time.monotonic(), streamed=True)
        turn.messages.append(msg)
        turn.status_dirty = False
        self.stats.streams += 1
        await self.commit(turn, msg, batch)
        if msg.full:
            await self.stop(turn, msg, None)
        return msg

    async def append(self, turn: Turn, msg: SlackMessage) -> None:
        def build() -> Built:
            batch = self.take(turn, msg)
            return {"channel": turn.ticket.channel_id, "ts": msg.ts, "chunks": batch.chunks}, batch

        if not self.take(turn, msg).chunks:
            await self.commit(turn, msg, self.take(turn, msg))  # only separators: nothing to send
            if msg.full:
                await self.stop(turn, msg, None)
            return
        try:
            done = await self.call(turn.ticket, "chat.appendStream", build, turn=turn, msg=msg)
        except SlackApiError as exc:
            error = _error(exc)
            what = kind("chat.appendStream", error)
            if what == "gone":
                await self.expired(turn, msg, None, error)
                return
            if error in TOO_LONG:
                turn.layout.cap = max(1_000, len(msg.text))
                msg.full = True
                await self.stop(turn, msg, None)
                return
            if what == "content":  # the rest of the turn in plain messages
                turn.go_plain()
                await self.expired(turn, msg, None, error)
                return
            if what == "not_editable":
                msg.closed = True  # what follows goes in a new message
                return
            raise
        await self.commit(turn, msg, _sent(done)[1])
        if msg.full:
            await self.stop(turn, msg, None)

    async def stop(self, turn: Turn, msg: SlackMessage, final: list[dict[str, Any]] | None) -> None:
        """End a stream with whatever pending content fits (and the final blocks)."""

        def build() -> Built:
            batch = self.take(turn, msg)
            kwargs: dict[str, Any] = {"channel": turn.ticket.channel_id, "ts": msg.ts}
            if batch.chunks:
                kwargs["chunks"] = batch.chunks
            if final:
                kwargs["blocks"] = final
            if final is not None:
                kwargs["metadata"] = _metadata(turn)
            return kwargs, batch

        try:
            done = await self.call(turn.ticket, "chat.stopStream", build, turn=turn, msg=msg)
        except SlackApiError as exc:
            error = _error(exc)
            what = kind("chat.stopStream", error)
            if what in ("gone", "content"):
                if what == "content":
                    turn.go_plain()
                await self.expired(turn, msg, final, error)
                return
            if what == "not_editable":
                msg.closed = True
                if final is not None:
                    await self.post(turn, final)  # the stop's blocks in a message of their own
                return
            raise
        msg.final_blocks = final
        msg.closed = True
        await self.commit(turn, msg, _sent(done)[1])

    async def expired(
        self, turn: Turn, msg: SlackMessage, final: list[dict[str, Any]] | None, error: str | None = None
    ) -> None:
        """The stream ended without us (or cannot go on): finish the same message with chat.update."""
        self.stats.expired += 1
        log.info("stream ended; finishing it with chat.update", extra={"ticket": turn.ticket.id, "error": error})
        msg.mode = UPDATE
        await self.stream_event(turn, "expired", {"ts": msg.ts, "error": error or "message_not_in_streaming_state"})
        await self.update(turn, msg, final)
        if turn.streaming:
            msg.closed = True

    async def update(self, turn: Turn, msg: SlackMessage, final: list[dict[str, Any]] | None) -> None:
        def build() -> Built:
            batch = self.take(turn, msg)
            text = msg.text + batch.text
            tasks = turn.layout.views([*msg.task_ids, *batch.task_ids])
            kwargs = self.content(turn, text, tasks, final, {"channel": turn.ticket.channel_id, "ts": msg.ts})
            return kwargs, batch

        try:
            done = await self.call(turn.ticket, "chat.update", build, turn=turn, msg=msg)
        except SlackApiError as exc:
            if not await self.edit_failed(turn, msg, exc):
                raise
            if final is not None and msg.closed:
                await self.post(turn, final)
            elif not msg.closed:
                await self.update(turn, msg, final)  # once more, the way the error asked for
            return
        turn.stale.discard(msg.ts)  # rewritten whole
        if final is not None:
            msg.final_blocks = final
            msg.closed = True
        elif msg.full:
            msg.closed = True
        await self.commit(turn, msg, _sent(done)[1])

    async def edit_failed(self, turn: Turn, msg: SlackMessage, exc: SlackApiError) -> bool:
        """Deal with a refused `chat.update`; False if the caller should treat it as a failure."""
        what = kind("chat.update", _error(exc))
        if what == "not_editable":
            msg.closed = True  # it stays as it is; what follows goes in a new message
            turn.stale.discard(msg.ts)
            return True
        if what == "conflict":  # still streaming: stop it first
            stop = {"channel": turn.ticket.channel_id, "ts": msg.ts}
            with contextlib.suppress(SlackApiError):
                await self.call(turn.ticket, "chat.stopStream", _fixed(stop))
            msg.mode = UPDATE
            return True
        if what == "content" and not turn.plain:
            turn.go_plain()
            return True
        return False

    def content(
        self,
        turn: Turn,
        text: str,
        tasks: list[bk.TaskView],
        final: list[dict[str, Any]] | None,
        base: dict[str, Any],
    ) -> dict[str, Any]:
        """A non-streamed message's content: blocks and metadata, or only text in plain mode."""
        fallback = "; ".join(f"{v.title}: {v.status.replace('_', ' ')}" for v in tasks)
        if turn.plain:  # `markdown_text` replaces the message's text and blocks (chat.update's reference)
            return {**base, "markdown_text": text or fallback or PLACEHOLDER}
        kwargs: dict[str, Any] = {**base, "text": text or fallback or PLACEHOLDER}
        kwargs["blocks"] = bk.message_blocks(text, tasks, final) or [bk.context_block(PLACEHOLDER)]
        if final is not None:
            kwargs["metadata"] = _metadata(turn)
        return kwargs

    async def post(self, turn: Turn, final: list[dict[str, Any]] | None) -> SlackMessage:
        """A new message that is not a stream (fallback, or final blocks on their own)."""

        def build() -> Built:
            batch = self.take(turn, None)
            text = batch.text
            if not text and final is not None:
                text = "Approval needed." if turn.layout.approvals else "Done."
            base = {"channel": turn.ticket.channel_id, "thread_ts": turn.ticket.thread_ts}
            kwargs = self.content(turn, batch.text, turn.layout.views(batch.task_ids), final, base)
            if not (batch.text or batch.task_ids):
                kwargs["markdown_text" if turn.plain else "text"] = text or PLACEHOLDER
            return kwargs, batch

        try:
            done = await self.call(turn.ticket, "chat.postMessage", build, turn=turn)
        except SlackApiError as exc:
            if kind("chat.postMessage", _error(exc)) != "content" or turn.plain:
                raise
            turn.go_plain()
            return await self.post(turn, final)
        response, batch = _sent(done)
        msg = SlackMessage(str(response["ts"]), UPDATE, time.monotonic())
        turn.messages.append(msg)
        turn.status_dirty = False
        if final is not None:
            msg.final_blocks = final
            msg.closed = True
        await self.commit(turn, msg, batch)
        if msg.full:
            msg.closed = True
        return msg

    async def refuse(self, turn: Turn, error: str) -> None:
        turn.streaming = False
        self.stats.fallbacks += 1
        log.warning("streaming refused; updating one message instead", extra={"ticket": turn.ticket.id, "error": error})
        scope = "workspace" if error in REFUSED_TEAM else "turn"
        await self.stream_event(turn, "refused", {"error": error, "scope": scope})
        if error in REFUSED_TEAM:
            self.o.no_stream[turn.ticket.team_id] = time.monotonic() + 3600
            if self.redis is not None:
                try:
                    await self.redis.set(f"{self.o.key_prefix}:nostream:{turn.ticket.team_id}", error, ex=3600)
                except RedisError:
                    pass

def _metadata(turn: Turn) -> dict[str, Any]:
    payload = {"ticket_id": turn.ticket.id}
    if turn.ticket.session_id:
        payload["session_id"] = turn.ticket.session_id
    return {"event_type": "support_agent_turn", "event_payload": payload}
