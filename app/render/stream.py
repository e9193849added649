"""Agent turns streamed into the ticket's thread, within Slack's rate and content limits.

One streamed message per agent turn (`chat.startStream` / `appendStream` / `stopStream`),
addressed to the person whose message started the turn:

- tool calls (built-in, MCP, custom) become `task_update` chunks, pending -> in_progress ->
  complete | error, titled in plain words; in `plan` display mode a `plan_update` titles them;
- the answer streams as `markdown_text` from `agent.message` deltas and is reconciled with the
  buffered `agent.message`: only the missing suffix is appended, and if the live text went
  astray the affected messages are rewritten with `chat.update` at the stop;
- `assistant.threads.setStatus` shows the agent working until the first content arrives;
- the stop carries the feedback buttons, Approve/Deny buttons for tool calls waiting on
  approval, a note for unusual stops, the caller's ticket controls and cost footer.

Nothing goes to Slack from `event()` itself: each turn has a flusher task that sends what
accumulated at most once per `flush_interval`, after taking a token from the shared Redis
buckets (`ratelimit.TokenBuckets`). The payload is built after the token is granted, so the
wait coalesces more; a 429 blocks the bucket for `Retry-After` and the same pending content
is sent on the next try.

Slack ends a stream about 5 minutes after it starts. The renderer stops a stream after
`rotate_after` seconds and opens a fresh one for what follows; a stream that died anyway
(`message_not_in_streaming_state`) is finished with `chat.update` on the same message. Each
message holds at most `max_message_chars` characters of answer (Slack's 12,000 per Markdown
payload); longer answers go on in the next message, cut at a paragraph, line or space.

Where streaming is refused (`not_allowed`, `unknown_method`, ...), the turn falls back to one
message posted with `chat.postMessage` and edited with `chat.update` on the same timer. The
same happens when no stream start can be had within `start_wait` seconds: starts are Slack's
scarcest budget (Tier 2, shared by the workspace), and under a burst of turns a message now
beats a stream in a minute.

A stream left open by a worker that died mid-turn is stopped (with a short note) by whoever
renders the ticket next, found through a per-ticket note in Redis of the live stream.

Each of those (a rotation, an expired stream, a refusal, a congested start, an adopted
orphan) is also reported to `on_stream_event(ticket, event, detail)`, which the worker records
for the ticket's trace.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.render import blocks as bk
from app.render.base import message_text
from app.render.describe import STOP_NOTES, error_title, input_preview, result_output, tool_title
from app.render.ratelimit import TokenBuckets
from app.render.slack_text import (
    MAX_TEXT,
    cut_point,
    neutralise_mentions,
    paragraph_break,
    release_point,
    split_text,
    truncate,
)
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

Footer = Callable[[Ticket], "str | Awaitable[str | None] | None"]
Controls = Callable[[Ticket], list[dict[str, Any]]]
Observer = Callable[[Ticket, list[Any]], None]
# (ticket, "rotated" | "expired" | "refused" | "congested" | "adopted", detail)
StreamObserver = Callable[[Ticket, str, dict[str, Any]], Awaitable[None]]

STREAM, UPDATE = "stream", "update"
EXPIRED = "message_not_in_streaming_state"
TOO_LONG = frozenset({"msg_too_long", "msg_blocks_too_long"})
# startStream errors meaning "no streaming here": for the whole workspace, or for this message.
REFUSED_TEAM = frozenset({
    "not_allowed", "feature_not_enabled", "unknown_method", "not_allowed_token_type",
    "missing_scope", "no_permission", "restricted_action", "method_deprecated",
})
REFUSED_HERE = frozenset({
    # channel_type_not_supported is chat.startStream's documented name (slack_methods.json).
    "channel_type_not_supported", "method_not_supported_for_channel_type", "user_not_found",
    "missing_recipient_user_id",
    "missing_recipient_team_id", "invalid_arguments", "not_implemented", "user_not_in_channel",
})
# Nothing more can be shown in this thread.
FATAL = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "token_expired", "ekm_access_denied", "team_not_found",
})
TOOL_USES = frozenset({"agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"})
TOOL_RESULTS = {"agent.tool_result": "tool_use_id", "agent.mcp_tool_result": "mcp_tool_use_id"}
MAX_CHUNKS = 40
SPLIT_WINDOW = 1_500
PLACEHOLDER = "Working on it…"


@dataclass
class RenderStats:
    calls: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    streams: int = 0
    rotations: int = 0
    expired: int = 0
    fallbacks: int = 0
    adopted: int = 0
    congested: int = 0
    fixups: int = 0
    diverged: int = 0
    dropped_chars: int = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class Task:
    id: str
    title: str
    status: str
    kind: str  # tool | custom | note
    details: str | None = None
    output: str | None = None
    args: Any = None

    def view(self) -> bk.TaskView:
        return bk.TaskView(self.id, self.title, self.status, self.output)


@dataclass
class Piece:
    """Something waiting to be shown: answer text (`mid` None for a separator) or a task."""

    kind: str  # text | task
    text: str = ""
    mid: str | None = None
    offset: int = 0
    task_id: str | None = None
    sources: list[Any] = field(default_factory=list)


@dataclass
class Part:
    """Answer text shown in a Slack message: `text` is `shown[mid][offset:offset+len]`."""

    mid: str | None
    offset: int
    text: str


@dataclass
class AgentText:
    """One `agent.message`: its raw text so far, what of it was released, its final form."""

    blocks: list[str] = field(default_factory=list)
    final: bool = False
    shown: str = ""
    canon: str | None = None
    diverged: bool = False


@dataclass
class SlackMessage:
    ts: str
    mode: str
    started: float
    parts: list[Part] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    closed: bool = False
    full: bool = False
    has_plan: bool = False
    final_blocks: list[dict[str, Any]] | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


@dataclass
class Batch:
    chunks: list[dict[str, Any]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    consumed: int = 0
    remainder: Piece | None = None
    sources: list[Any] = field(default_factory=list)
    full: bool = False
    plan: bool = False

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


class Turn:
    def __init__(self, ticket: Ticket, recipient: str, streaming: bool, cap: int) -> None:
        self.ticket = ticket
        self.recipient = recipient
        self.streaming = streaming
        self.cap = cap
        self.outbox: list[Piece] = []
        self.tasks: dict[str, Task] = {}
        self.texts: dict[str, AgentText] = {}
        self.messages: list[SlackMessage] = []
        self.wake = asyncio.Event()
        self.ending = asyncio.Event()
        self.done = asyncio.Event()
        self.stop_reason: str | None = None
        self.approvals: list[str] = []
        self.has_text = False
        self.status_wanted = False
        self.status_retry_at = 0.0
        self.status_set_at: float | None = None
        self.status_dirty = False
        self.last_flush = 0.0
        self.last_event = time.monotonic()
        self.failures = 0
        self.dead = False
        self.finished = False
        self.runner: asyncio.Task[None] | None = None

    @property
    def current(self) -> SlackMessage | None:
        if self.messages and not self.messages[-1].closed:
            return self.messages[-1]
        return None


class StreamRenderer:
    """The `Renderer` for Slack streams. One instance serves every ticket of a process.

    Per turn the caller calls `begin_turn(ticket, user_id)` when it sends a user's message to
    the session (the next stream is addressed to that user; default: the ticket's requester),
    then `event` / `delta` for what the session streams, and `turn_ended` at the idle or
    terminated status, which returns once the turn is fully shown in Slack.
    """

    def __init__(
        self,
        slack: AsyncWebClient,
        redis: aioredis.Redis | None = None,
        *,
        buckets: TokenBuckets | None = None,
        flush_interval: float = 1.0,
        rotate_after: float = 270.0,
        max_message_chars: int = MAX_TEXT,
        task_display_mode: str = "timeline",
        streaming: bool = True,
        feedback: bool = True,
        footer: Footer | str | None = None,
        controls: Controls | None = None,
        status_text: str = "is working on it…",
        loading_messages: list[str] | None = None,
        status_refresh: float = 100.0,
        max_failures: int = 3,
        start_wait: float | None = 10.0,
        idle_timeout: float = 1800.0,
        on_visible: Observer | None = None,
        on_fatal: Callable[[Ticket, str], Awaitable[None]] | None = None,
        on_stream_event: StreamObserver | None = None,
        key_prefix: str = "render",
    ) -> None:
        self.slack = slack
        self.redis = redis
        self.buckets = buckets if buckets is not None else (TokenBuckets(redis) if redis else None)
        self.flush_interval = flush_interval
        self.rotate_after = rotate_after
        self.max_message_chars = max_message_chars
        self.task_display_mode = task_display_mode
        self.streaming = streaming
        self.feedback = feedback
        self.footer = footer
        self.controls = controls
        self.status_text = status_text
        self.loading_messages = loading_messages
        self.status_refresh = status_refresh
        self.max_failures = max_failures
        self.idle_timeout = idle_timeout
        self.start_wait = start_wait
        self.on_visible = on_visible
        self.on_fatal = on_fatal
        self.on_stream_event = on_stream_event
        self.key_prefix = key_prefix
        self.stats = RenderStats()
        self._turns: dict[str, Turn] = {}
        self._recipients: dict[str, str] = {}
        self._carry: dict[str, dict[str, Task]] = {}
        self._no_stream: dict[str, float] = {}
        # Set by the worker: False once this process's lease on the ticket may have lapsed, so
        # nothing more is written for it (its new holder renders it).
        self.may_write: Callable[[str], bool] | None = None

    # ---- the Renderer protocol ----------------------------------------------------------

    async def begin_turn(self, ticket: Ticket, user_id: str | None) -> None:
        """The next stream for this ticket goes to `user_id` (whose message starts a turn)."""
        if not user_id:
            return
        _remember(self._recipients, ticket.id, user_id)
        if self.redis is not None:
            try:
                await self.redis.set(self._key("recipient", ticket.id), user_id, ex=30 * 86400)
            except RedisError:
                log.warning("could not save the turn's recipient", extra={"ticket": ticket.id})

    async def event(self, ticket: Ticket, event: Any, *, replay: bool) -> None:
        etype = str(getattr(event, "type", ""))
        if etype == "session.status_idle":
            reason = getattr(getattr(event, "stop_reason", None), "type", None)
            if reason == "requires_action":
                turn = await self._open(ticket)
                turn.approvals = [str(e) for e in getattr(event.stop_reason, "event_ids", None) or []]
            return
        if etype not in _SHOWN:
            return
        turn = await self._open(ticket)
        turn.last_event = time.monotonic()
        sources = [event] if self.on_visible else []
        if etype == "session.status_running":
            turn.status_wanted = turn.current is None
            for task in turn.tasks.values():
                if task.status == "pending" or (task.kind == "note" and task.status == "in_progress"):
                    self._set_task(turn, task, "in_progress" if task.kind != "note" else "complete")
        elif etype == "agent.thinking":
            self._agent_moved_on(turn)
            turn.status_wanted = turn.current is None
        elif etype == "agent.message":
            self._agent_moved_on(turn)
            text = turn.texts.setdefault(event.id, AgentText())
            text.blocks = [message_text(event)]
            text.final = True
            self._release(turn, event.id, text, sources)
        elif etype in TOOL_USES:
            self._agent_moved_on(turn)
            self._tool_use(turn, event, sources)
        elif etype in TOOL_RESULTS:
            self._tool_result(turn, event, str(getattr(event, TOOL_RESULTS[etype], "")), sources)
        elif etype == "session.status_rescheduled":
            note = Task(f"note-{event.id}", "A temporary problem: the agent is retrying", "in_progress", "note")
            self._add_task(turn, note, sources)
        elif etype == "session.error":
            title, status = error_title(event.error)
            self._add_task(turn, Task(f"note-{event.id}", title, status, "note"), sources)
        turn.wake.set()

    async def delta(self, ticket: Ticket, event: Any) -> None:
        etype = getattr(event, "type", None)
        if etype == "event_start":
            preview = event.event
            turn = await self._open(ticket)
            turn.last_event = time.monotonic()
            if preview.type == "agent.message":
                turn.texts.setdefault(preview.id, AgentText())
            elif turn.current is None:
                turn.status_wanted = True
            turn.wake.set()
        elif etype == "event_delta":
            live = self._turns.get(ticket.id)
            text = live.texts.get(event.event_id) if live else None
            content = event.delta.content
            if live is None or text is None or text.final or getattr(content, "type", None) != "text":
                return
            index = event.delta.index or 0
            if index == len(text.blocks):
                text.blocks.append(content.text)
            elif index < len(text.blocks):
                text.blocks[index] += content.text
            else:
                return  # a gap: wait for the buffered message
            live.last_event = time.monotonic()
            self._release(live, event.event_id, text, [event] if self.on_visible else [])
            live.wake.set()

    async def turn_ended(self, ticket: Ticket, stop_reason: str | None) -> None:
        """Show the rest of the turn and its stop; returns when Slack has it all."""
        turn = self._turns.get(ticket.id)
        if turn is None or turn.finished:
            return
        turn.ticket = ticket
        turn.stop_reason = stop_reason
        self._settle_tasks(turn, stop_reason)
        turn.ending.set()
        turn.wake.set()
        await asyncio.shield(turn.done.wait())

    async def notice(self, ticket: Ticket, text: str) -> None:
        if self.may_write is not None and not self.may_write(ticket.id):
            return
        for part in split_text(neutralise_mentions(text)):
            try:
                await self._call(
                    ticket,
                    "chat.postMessage",
                    _fixed({"channel": ticket.channel_id, "thread_ts": ticket.thread_ts, "text": part}),
                )
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.error("notice not posted", extra={"ticket": ticket.id, "error": _error(exc)})
                return

    async def aclose(self) -> None:
        """Finish every open turn (on shutdown): flush and stop their streams."""
        await asyncio.gather(
            *(self.turn_ended(t.ticket, "shutdown") for t in list(self._turns.values())),
            return_exceptions=True,
        )

    # ---- turn state -----------------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return ":".join((self.key_prefix, *parts))

    async def _open(self, ticket: Ticket) -> Turn:
        turn = self._turns.get(ticket.id)
        if turn is not None and not turn.ending.is_set():
            turn.ticket = ticket
            return turn
        # None yet, or the last one is closing (it takes nothing new): a new turn.
        recipient = await self._recipient(ticket)
        streaming = self.streaming and not await self._refused(ticket.team_id)
        turn = self._turns.get(ticket.id)
        if turn is not None and not turn.ending.is_set():
            return turn
        turn = Turn(ticket, recipient, streaming, self.max_message_chars)
        # A status only if nothing shows within a flush interval: the first text often does.
        turn.status_retry_at = time.monotonic() + self.flush_interval
        turn.tasks.update(self._carry.pop(ticket.id, {}))
        self._turns[ticket.id] = turn
        turn.runner = asyncio.create_task(self._run(turn), name=f"render-{ticket.id}")
        return turn

    async def _recipient(self, ticket: Ticket) -> str:
        user = self._recipients.get(ticket.id)
        if user is None and self.redis is not None:
            try:
                found = await self.redis.get(self._key("recipient", ticket.id))
            except RedisError:
                found = None
            user = _text(found)
        return user or ticket.requester_id

    async def _refused(self, team: str) -> bool:
        until = self._no_stream.get(team)
        if until is not None:
            if until > time.monotonic():
                return True
            del self._no_stream[team]
        if self.redis is None:
            return False
        try:
            ttl = await self.redis.ttl(self._key("nostream", team))
        except RedisError:
            return False
        if ttl and ttl > 0:
            self._no_stream[team] = time.monotonic() + ttl
            return True
        return False

    async def _refuse(self, turn: Turn, error: str) -> None:
        turn.streaming = False
        self.stats.fallbacks += 1
        log.warning(
            "streaming refused; updating one message instead",
            extra={"ticket": turn.ticket.id, "error": error},
        )
        scope = "workspace" if error in REFUSED_TEAM else "turn"
        await self._stream_event(turn, "refused", {"error": error, "scope": scope})
        if error in REFUSED_TEAM:
            self._no_stream[turn.ticket.team_id] = time.monotonic() + 3600
            if self.redis is not None:
                try:
                    await self.redis.set(self._key("nostream", turn.ticket.team_id), error, ex=3600)
                except RedisError:
                    pass

    def _release(self, turn: Turn, mid: str, text: AgentText, sources: list[Any]) -> None:
        """Queue whatever of an agent message's text can be shown now (mentions neutralised)."""
        raw = "".join(text.blocks)
        end = len(raw) if text.final else release_point(raw)
        shown = neutralise_mentions(raw[:end])
        if text.final:
            text.canon = shown
        if shown.startswith(text.shown):
            add = shown[len(text.shown) :]
        elif not text.final:
            return
        else:
            # The live text went astray (a dropped delta, a reconnect): show the rest, and
            # rewrite the message(s) with the buffered text at the stop.
            text.diverged = True
            self.stats.diverged += 1
            add = shown[len(text.shown) :] if len(shown) > len(text.shown) else ""
        if not add:
            if sources:
                self._report_when_shown(turn, mid, sources)
            return
        if not text.shown and turn.has_text:
            turn.outbox.append(Piece("text", "\n\n"))
        turn.outbox.append(Piece("text", add, mid, len(text.shown), sources=sources))
        text.shown += add
        turn.has_text = True

    def _report_when_shown(self, turn: Turn, mid: str, sources: list[Any]) -> None:
        """The buffered message adds no text: it is shown once its pending pieces are (or now)."""
        for piece in reversed(turn.outbox):
            if piece.mid == mid:
                piece.sources.extend(sources)
                return
        if self.on_visible is not None:
            self.on_visible(turn.ticket, sources)

    def _add_task(self, turn: Turn, task: Task, sources: list[Any]) -> None:
        turn.tasks[task.id] = task
        turn.outbox.append(Piece("task", task_id=task.id, sources=sources))

    def _set_task(
        self, turn: Turn, task: Task, status: str, output: str | None = None, sources: list[Any] | None = None
    ) -> None:
        task.status = status
        if output is not None:
            task.output = output
        turn.outbox.append(Piece("task", task_id=task.id, sources=sources or []))

    def _tool_use(self, turn: Turn, event: Any, sources: list[Any]) -> None:
        if event.id in turn.tasks:
            return
        etype = event.type
        permission = getattr(event, "evaluated_permission", None)
        task = Task(event.id, tool_title(event), "in_progress", "tool", args=getattr(event, "input", None))
        if etype == "agent.custom_tool_use":
            task.kind = "custom"
        elif permission == "ask":
            task.status = "pending"
            task.details = "Waiting for approval"
        elif permission == "deny":
            task.status = "error"
            task.output = "Blocked by the permission policy"
        if etype == "agent.mcp_tool_use":
            task.details = task.details or f"MCP server: {event.mcp_server_name}"
        self._add_task(turn, task, sources)

    def _tool_result(self, turn: Turn, event: Any, use_id: str, sources: list[Any]) -> None:
        task = turn.tasks.get(use_id)
        if task is None:
            task = Task(use_id, "An earlier tool call", "in_progress", "tool")
            turn.tasks[use_id] = task
        status = "error" if getattr(event, "is_error", False) else "complete"
        self._set_task(turn, task, status, result_output(event), sources)

    def _agent_moved_on(self, turn: Turn) -> None:
        """The agent went on: custom tools it was waiting for have their results."""
        for task in turn.tasks.values():
            if task.kind == "custom" and task.status == "in_progress":
                self._set_task(turn, task, "complete")

    def _settle_tasks(self, turn: Turn, reason: str | None) -> None:
        if reason == "shutdown":
            return  # the turn goes on elsewhere: its tasks are not over
        if reason == "requires_action":
            carry = {t.id: t for t in turn.tasks.values() if t.status in ("pending", "in_progress")}
            if carry:
                _remember(self._carry, turn.ticket.id, carry)
            return
        for task in turn.tasks.values():
            if task.status not in ("pending", "in_progress"):
                continue
            if reason == "end_turn" and task.kind != "tool":
                self._set_task(turn, task, "complete")
            else:
                self._set_task(turn, task, "error", "Stopped before it finished")

    # ---- the flusher ----------------------------------------------------------------------

    async def _run(self, turn: Turn) -> None:
        try:
            await self._adopt_orphan(turn)
            while not turn.finished:
                if not turn.wake.is_set():
                    await _wait(turn.wake, self._timeout(turn))
                turn.wake.clear()
                if turn.outbox and not turn.ending.is_set():
                    delay = turn.last_flush + self.flush_interval - time.monotonic()
                    if delay > 0:
                        await _wait(turn.ending, delay)
                try:
                    await self._step(turn)
                    turn.failures = 0
                except Exception as exc:
                    if not isinstance(exc, SlackApiError | aiohttp.ClientError | TimeoutError):
                        log.exception("rendering failed", extra={"ticket": turn.ticket.id})
                    await self._failed(turn, exc)
                if turn.outbox or turn.ending.is_set():
                    turn.wake.set()
        except Exception:
            log.exception("renderer stopped", extra={"ticket": turn.ticket.id})
        finally:
            turn.finished = True
            turn.done.set()
            if self._turns.get(turn.ticket.id) is turn:
                del self._turns[turn.ticket.id]

    def _timeout(self, turn: Turn) -> float | None:
        now = time.monotonic()
        deadlines = []
        msg = turn.current
        if msg is not None and msg.mode == STREAM:
            deadlines.append(msg.started + self.rotate_after)
        if msg is None and turn.status_wanted:
            deadlines.append(turn.status_retry_at)
        if msg is None and turn.status_set_at is not None:
            deadlines.append(turn.status_set_at + self.status_refresh)
        if not turn.ending.is_set():
            deadlines.append(turn.last_event + self.idle_timeout)
        return max(0.0, min(deadlines) - now) if deadlines else None

    async def _step(self, turn: Turn) -> None:
        if self.may_write is not None and not self.may_write(turn.ticket.id):
            log.warning("lease lost: leaving the turn to the ticket's new holder", extra={"ticket": turn.ticket.id})
            turn.dead = True
            turn.outbox.clear()
            turn.finished = True  # forgotten here, so a later lease of ours starts a fresh turn
            return
        if turn.dead:
            turn.outbox.clear()
            turn.finished = turn.ending.is_set()
            return
        if not turn.ending.is_set() and time.monotonic() - turn.last_event >= self.idle_timeout:
            # Nobody ended this turn (its follower went away): close it rather than keep a
            # stream and a status alive forever. Later events open a new turn.
            log.info("closing an abandoned turn", extra={"ticket": turn.ticket.id})
            turn.stop_reason = "shutdown"
            turn.ending.set()
        msg = turn.current
        if msg is not None and msg.mode == STREAM and time.monotonic() - msg.started >= self.rotate_after:
            age = time.monotonic() - msg.started
            await self._stop(turn, msg, None)
            self.stats.rotations += 1
            turn.status_wanted = not turn.ending.is_set()
            # Only once the stop went through: a stop that fails is retried, and reported once.
            await self._stream_event(turn, "rotated", {"ts": msg.ts, "age_seconds": round(age, 3)})
        if turn.ending.is_set():
            await self._finish(turn)
            return
        if turn.outbox:
            await self._deliver(turn)
            turn.last_flush = time.monotonic()
        elif turn.current is None:
            now = time.monotonic()
            if turn.status_set_at is not None and now - turn.status_set_at >= self.status_refresh:
                turn.status_wanted = True
            if turn.status_wanted and now >= turn.status_retry_at:
                await self._status(turn)

    async def _failed(self, turn: Turn, exc: Exception) -> None:
        error = _error(exc)
        if error in FATAL:
            log.error("cannot show the turn in Slack", extra={"ticket": turn.ticket.id, "error": error})
            if self.on_fatal is not None and not turn.dead:
                try:
                    await self.on_fatal(turn.ticket, str(error))
                except Exception:
                    log.exception("recording the Slack failure failed", extra={"ticket": turn.ticket.id})
            turn.dead = True
            turn.outbox.clear()
            turn.finished = turn.ending.is_set()
            return
        turn.failures += 1
        log.warning(
            "slack call failed", extra={"ticket": turn.ticket.id, "error": error, "attempt": turn.failures}
        )
        # Slack answering with an error is retried a few times; not reaching Slack, for longer.
        network = isinstance(exc, aiohttp.ClientError | TimeoutError)
        attempts = self.max_failures * 4 if network else self.max_failures
        if turn.failures < attempts:
            await asyncio.sleep(min(0.25 * 2**turn.failures, 8.0))
            return
        # Give up on what keeps failing, so the rest of the turn still gets through.
        turn.failures = 0
        msg = turn.current
        batch = self._take(turn, msg)
        consumed = max(batch.consumed, 1)
        dropped = sum(len(p.text) for p in turn.outbox[:consumed])
        turn.outbox[:consumed] = []
        self.stats.dropped_chars += dropped
        log.error("dropped turn output", extra={"ticket": turn.ticket.id, "error": error, "chars": dropped})
        if msg is not None:
            msg.closed = True
        if turn.ending.is_set() and not turn.outbox:
            turn.finished = True

    # ---- streams left open by a process that died ------------------------------------------

    def _open_stream_key(self, ticket: Ticket) -> str:
        return self._key("open-stream", ticket.id)

    async def _remember_open(self, turn: Turn, msg: SlackMessage) -> None:
        """Note the ticket's live stream, so whoever renders the ticket next can close it if we die."""
        if self.redis is None:
            return
        try:
            # Slack ends a stream itself within minutes; the note need not outlive that.
            await self.redis.set(self._open_stream_key(turn.ticket), msg.ts, ex=int(self.rotate_after) + 600)
        except RedisError:
            log.warning("open stream not noted", extra={"ticket": turn.ticket.id})

    async def _forget_open(self, turn: Turn, msg: SlackMessage) -> None:
        if self.redis is None:
            return
        try:
            key = self._open_stream_key(turn.ticket)
            if _text(await self.redis.get(key)) == msg.ts:
                await self.redis.delete(key)
        except RedisError:
            log.warning("open stream not cleared", extra={"ticket": turn.ticket.id})

    async def _adopt_orphan(self, turn: Turn) -> None:
        """Stop a stream of this ticket that a dead worker left open, so it does not stay
        "typing" in the thread for minutes; what the agent said next goes in our new message."""
        if self.redis is None:
            return
        key = self._open_stream_key(turn.ticket)
        try:
            ts = _text(await self.redis.get(key))
        except RedisError:
            return
        live = {m.ts for t in self._turns.values() for m in t.messages if not m.closed}
        if not ts or ts in live:
            return
        note = {"type": "markdown_text", "text": "\n\n_(interrupted — continued below)_"}
        try:
            await self._call(
                turn.ticket, "chat.stopStream",
                lambda: ({**self._base(turn), "ts": ts, "chunks": [note]}, None),
            )
        except SlackApiError as exc:
            log.info("orphaned stream already gone", extra={"ticket": turn.ticket.id, "error": _error(exc)})
        else:
            self.stats.adopted += 1
            await self._stream_event(turn, "adopted", {"ts": ts})
        try:
            if _text(await self.redis.get(key)) == ts:
                await self.redis.delete(key)
        except RedisError:
            pass

    async def _stream_event(self, turn: Turn, event: str, detail: dict[str, Any]) -> None:
        """Tell `on_stream_event`; its failure is logged and never stops the turn."""
        if self.on_stream_event is None:
            return
        try:
            await self.on_stream_event(turn.ticket, event, detail)
        except Exception:
            log.exception("recording a stream event failed", extra={"ticket": turn.ticket.id, "event": event})

    # ---- batches --------------------------------------------------------------------------

    def _take(self, turn: Turn, msg: SlackMessage | None) -> Batch:
        """The next payload for `msg` (None: a new message), from the front of the outbox."""
        batch = Batch()
        if msg is not None and msg.full:
            return batch
        so_far = msg.text if msg is not None else ""
        in_msg = set(msg.task_ids) if msg is not None else set()
        seen: set[str] = set()
        buf: list[str] = []

        def flush_text() -> None:
            if buf:
                batch.chunks.append({"type": "markdown_text", "text": "".join(buf)})
                buf.clear()

        for i, piece in enumerate(turn.outbox):
            if len(batch.chunks) >= MAX_CHUNKS:
                break
            if piece.kind == "text":
                if piece.mid is None and not so_far:
                    batch.consumed = i + 1  # no separator at the top of a message
                    continue
                cut = self._split(turn, so_far, piece)
                if cut is not None:
                    head, rest = piece.text[:cut], piece.text[cut:]
                    if head:
                        buf.append(head)
                        batch.parts.append(Part(piece.mid, piece.offset, head))
                    if rest:
                        batch.remainder = replace(piece, text=rest, offset=piece.offset + len(head))
                    else:
                        batch.sources.extend(piece.sources)
                    batch.consumed = i + 1
                    batch.full = True
                    break
                buf.append(piece.text)
                batch.parts.append(Part(piece.mid, piece.offset, piece.text))
                so_far += piece.text
            else:
                flush_text()
                task = turn.tasks.get(piece.task_id or "")
                if task is not None and task.id not in seen:
                    seen.add(task.id)
                    chunk: dict[str, Any] = {
                        "type": "task_update", "id": task.id, "title": task.title, "status": task.status,
                    }
                    if task.details and task.id not in in_msg:
                        chunk["details"] = task.details
                    if task.output:
                        chunk["output"] = task.output
                    batch.chunks.append(chunk)
                    batch.task_ids.append(task.id)
            batch.sources.extend(piece.sources)
            batch.consumed = i + 1
        flush_text()
        if self.task_display_mode == "plan" and batch.task_ids and not (msg and msg.has_plan):
            title = truncate(neutralise_mentions(turn.ticket.title or "Working on your request"), 150)
            batch.chunks.insert(0, {"type": "plan_update", "title": title})
            batch.plan = True
        return batch

    def _split(self, turn: Turn, so_far: str, piece: Piece) -> int | None:
        """Where `piece` must be cut to end the message, or None if it fits.

        Within `SPLIT_WINDOW` of the limit the first paragraph break ends the message, so long
        answers split between paragraphs even though they arrive a few words at a time.
        """
        total = len(so_far) + len(piece.text)
        soft = turn.cap - min(SPLIT_WINDOW, turn.cap // 4)
        if total <= soft:
            return None
        combined = so_far + piece.text
        if piece.mid is not None:
            brk = paragraph_break(combined, max(len(so_far), soft), min(total, turn.cap))
            if brk is not None:
                return brk - len(so_far)
        if total <= turn.cap:
            return None
        return cut_point(combined, turn.cap, floor=max(len(so_far), turn.cap // 2)) - len(so_far)

    def _commit(self, turn: Turn, msg: SlackMessage, batch: Batch) -> None:
        msg.parts.extend(batch.parts)
        msg.task_ids.extend(t for t in batch.task_ids if t not in msg.task_ids)
        msg.has_plan = msg.has_plan or batch.plan
        msg.full = msg.full or batch.full
        turn.outbox[: batch.consumed] = [batch.remainder] if batch.remainder else []
        if batch.sources and self.on_visible is not None:
            self.on_visible(turn.ticket, batch.sources)

    def _covers_all(self, turn: Turn, batch: Batch) -> bool:
        return batch.consumed == len(turn.outbox) and batch.remainder is None and not batch.full

    # ---- Slack calls --------------------------------------------------------------------

    async def _call(
        self,
        ticket: Ticket,
        method: str,
        build: Callable[[], tuple[dict[str, Any], Batch | None] | None],
        *,
        max_wait: float | None = None,
    ) -> tuple[Any, Batch | None] | None:
        """One Web API call through the shared buckets; 429s wait and rebuild the payload.

        `build` runs once the token is granted (so the payload holds everything pending) and
        returns the keyword arguments and the batch they carry, or None for nothing to send.
        """
        fn = getattr(self.slack, method.replace(".", "_"))
        transient = 0
        while True:
            if not await self._acquire(ticket, method, max_wait):
                return None
            built = build()
            if built is None:
                return None
            kwargs, batch = built
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

    async def _acquire(self, ticket: Ticket, method: str, max_wait: float | None) -> bool:
        if self.buckets is None:
            return True
        try:
            return await self.buckets.acquire(ticket.team_id, method, ticket.channel_id, max_wait=max_wait)
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

    def _base(self, turn: Turn) -> dict[str, Any]:
        return {"channel": turn.ticket.channel_id}

    async def _deliver(self, turn: Turn) -> None:
        msg = turn.current
        if msg is None:
            await self._open_message(turn, None)
        elif msg.mode == STREAM:
            await self._append(turn, msg)
        else:
            await self._update(turn, msg, None)

    async def _open_message(self, turn: Turn, final: list[dict[str, Any]] | None) -> SlackMessage:
        """A new message for the pending content: a stream if a start comes within
        `start_wait` (the status shows while waiting), else a posted message. With `final`,
        a posted message is also the last one (it carries the final blocks)."""
        if turn.streaming:
            first_wait = min(self.flush_interval, self.start_wait or 0.0)
            started = await self._start(turn, first_wait)
            if started is None:
                if turn.status_wanted:
                    await self._status(turn)
                started = await self._start(turn, self.start_wait)
            if started is not None:
                return started
            self.stats.congested += 1
            posted = await self._post(turn, final)
            await self._stream_event(turn, "congested", {"ts": posted.ts, "waited_seconds": self.start_wait})
            return posted
        return await self._post(turn, final)

    async def _start(self, turn: Turn, max_wait: float | None = None) -> SlackMessage | None:
        """Open a stream with the pending content. None if no start token came within
        `max_wait` (streams are Slack's scarcest budget: the caller posts a message instead)."""

        def build() -> tuple[dict[str, Any], Batch]:
            batch = self._take(turn, None)
            kwargs = {
                **self._base(turn),
                "thread_ts": turn.ticket.thread_ts,
                "recipient_user_id": turn.recipient,
                "recipient_team_id": turn.ticket.team_id,
                "task_display_mode": self.task_display_mode,
            }
            if batch.chunks:
                kwargs["chunks"] = batch.chunks
            return kwargs, batch

        try:
            done = await self._call(turn.ticket, "chat.startStream", build, max_wait=max_wait)
        except SlackApiError as exc:
            error = _error(exc)
            if error in REFUSED_TEAM or error in REFUSED_HERE:
                await self._refuse(turn, error or "")
                return await self._post(turn, None)
            raise
        if done is None:
            return None
        response, batch = _sent(done)
        msg = SlackMessage(str(response["ts"]), STREAM, time.monotonic())
        turn.messages.append(msg)
        turn.status_dirty = False
        self.stats.streams += 1
        await self._remember_open(turn, msg)
        self._commit(turn, msg, batch)
        if msg.full:
            await self._stop(turn, msg, None)
        return msg

    async def _append(self, turn: Turn, msg: SlackMessage) -> None:
        def build() -> tuple[dict[str, Any], Batch]:
            batch = self._take(turn, msg)
            return {**self._base(turn), "ts": msg.ts, "chunks": batch.chunks}, batch

        if not self._take(turn, msg).chunks:
            self._commit(turn, msg, self._take(turn, msg))  # only separators: nothing to send
            if msg.full:
                await self._stop(turn, msg, None)
            return
        try:
            done = await self._call(turn.ticket, "chat.appendStream", build)
        except SlackApiError as exc:
            error = _error(exc)
            if error == EXPIRED:
                await self._expired(turn, msg, None)
                return
            if error in TOO_LONG:
                turn.cap = max(1_000, len(msg.text))
                msg.full = True
                await self._stop(turn, msg, None)
                return
            raise
        self._commit(turn, msg, _sent(done)[1])
        if msg.full:
            await self._stop(turn, msg, None)

    async def _stop(self, turn: Turn, msg: SlackMessage, final: list[dict[str, Any]] | None) -> None:
        """End a stream with whatever pending content fits (and the final blocks)."""

        def build() -> tuple[dict[str, Any], Batch]:
            batch = self._take(turn, msg)
            kwargs: dict[str, Any] = {**self._base(turn), "ts": msg.ts}
            if batch.chunks:
                kwargs["chunks"] = batch.chunks
            if final:
                kwargs["blocks"] = final
            if final is not None:
                kwargs["metadata"] = self._metadata(turn)
            return kwargs, batch

        try:
            done = await self._call(turn.ticket, "chat.stopStream", build)
        except SlackApiError as exc:
            if _error(exc) == EXPIRED:
                await self._expired(turn, msg, final)
                return
            raise
        self._commit(turn, msg, _sent(done)[1])
        msg.final_blocks = final
        msg.closed = True
        await self._forget_open(turn, msg)

    async def _expired(self, turn: Turn, msg: SlackMessage, final: list[dict[str, Any]] | None) -> None:
        """The stream died before we stopped it: finish the same message with chat.update."""
        self.stats.expired += 1
        log.info("stream expired; finishing it with chat.update", extra={"ticket": turn.ticket.id})
        msg.mode = UPDATE
        await self._forget_open(turn, msg)
        await self._stream_event(turn, "expired", {"ts": msg.ts})
        await self._update(turn, msg, final)
        if turn.streaming:
            msg.closed = True

    async def _update(self, turn: Turn, msg: SlackMessage, final: list[dict[str, Any]] | None) -> None:
        def build() -> tuple[dict[str, Any], Batch]:
            batch = self._take(turn, msg)
            text = msg.text + batch.text
            tasks = [turn.tasks[t].view() for t in (*msg.task_ids, *batch.task_ids) if t in turn.tasks]
            kwargs = {
                **self._base(turn),
                "ts": msg.ts,
                "text": text or PLACEHOLDER,
                "blocks": bk.message_blocks(text, _unique(tasks), final),
            }
            if final is not None:
                kwargs["metadata"] = self._metadata(turn)
            return kwargs, batch

        done = await self._call(turn.ticket, "chat.update", build)
        self._commit(turn, msg, _sent(done)[1])
        if final is not None:
            msg.final_blocks = final
            msg.closed = True
        elif msg.full:
            msg.closed = True

    async def _post(self, turn: Turn, final: list[dict[str, Any]] | None) -> SlackMessage:
        """A new message that is not a stream (fallback, or final blocks on their own)."""

        def build() -> tuple[dict[str, Any], Batch]:
            batch = self._take(turn, None)
            tasks = [turn.tasks[t].view() for t in batch.task_ids if t in turn.tasks]
            text = batch.text
            kwargs = {
                **self._base(turn),
                "thread_ts": turn.ticket.thread_ts,
                "text": text or (PLACEHOLDER if final is None else "Approval needed." if turn.approvals else "Done."),
                "blocks": bk.message_blocks(text, tasks, final) or [bk.context_block(PLACEHOLDER)],
            }
            if final is not None:
                kwargs["metadata"] = self._metadata(turn)
            return kwargs, batch

        done = await self._call(turn.ticket, "chat.postMessage", build)
        response, batch = _sent(done)
        msg = SlackMessage(str(response["ts"]), UPDATE, time.monotonic())
        turn.messages.append(msg)
        turn.status_dirty = False
        self._commit(turn, msg, batch)
        if final is not None:
            msg.final_blocks = final
            msg.closed = True
        elif msg.full:
            msg.closed = True
        return msg

    async def _status(self, turn: Turn) -> None:
        def build() -> tuple[dict[str, Any], None]:
            kwargs: dict[str, Any] = {
                "channel_id": turn.ticket.channel_id,
                "thread_ts": turn.ticket.thread_ts,
                "status": self.status_text,
            }
            if self.loading_messages:
                kwargs["loading_messages"] = self.loading_messages
            return kwargs, None

        turn.status_retry_at = time.monotonic() + max(self.flush_interval, 1.0)
        try:
            done = await self._call(turn.ticket, "assistant.threads.setStatus", build, max_wait=0)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("setStatus failed", extra={"ticket": turn.ticket.id, "error": _error(exc)})
            turn.status_wanted = False
            return
        if done is not None:
            turn.status_wanted = False
            turn.status_set_at = time.monotonic()
            turn.status_dirty = True

    # ---- the end of a turn ----------------------------------------------------------------

    async def _finish(self, turn: Turn) -> None:
        while turn.outbox and not self._covers_all(turn, self._take(turn, turn.current)):
            await self._deliver(turn)
        final = await self._final_blocks(turn)
        msg = turn.current
        if msg is None and turn.outbox and any(p.kind == "task" or p.mid for p in turn.outbox):
            msg = await self._open_message(turn, final)
        if msg is not None and msg.final_blocks is not None:
            pass  # posted together with the final blocks
        elif msg is not None and not msg.closed:
            if msg.mode == STREAM:
                await self._stop(turn, msg, final)
            else:
                await self._update(turn, msg, final)
        elif final and (turn.approvals or turn.has_text or turn.stop_reason in STOP_NOTES):
            await self._post(turn, final)
        turn.outbox.clear()
        await self._fixups(turn)
        if turn.status_dirty:
            await self._clear_status(turn)
        turn.finished = True

    async def _final_blocks(self, turn: Turn) -> list[dict[str, Any]]:
        ticket, reason = turn.ticket, turn.stop_reason
        out: list[dict[str, Any]] = []
        if reason == "requires_action":
            waiting = [turn.tasks[e] for e in turn.approvals if e in turn.tasks and turn.tasks[e].kind == "tool"]
            for task in waiting[: bk.MAX_APPROVALS]:
                out += bk.approval_blocks(ticket.id, task.id, task.title, input_preview(task.args))
            if len(waiting) > bk.MAX_APPROVALS:
                out.append(bk.context_block(f"…and {len(waiting) - bk.MAX_APPROVALS} more calls waiting."))
            return out
        if reason in STOP_NOTES:
            out.append(bk.context_block(STOP_NOTES[reason]))
        if reason == "shutdown":
            return out
        if self.feedback and turn.has_text and reason != "terminated":
            out.append(bk.feedback_block(ticket.id))
        if self.controls is not None:
            out += self.controls(ticket)
        footer = await self._footer(ticket)
        if footer:
            out.append(bk.context_block(footer))
        return out

    async def _footer(self, ticket: Ticket) -> str | None:
        if self.footer is None or isinstance(self.footer, str):
            return self.footer
        try:
            value = self.footer(ticket)
            if inspect.isawaitable(value):
                value = await value
        except Exception:
            log.exception("cost footer failed", extra={"ticket": ticket.id})
            return None
        return value

    def _metadata(self, turn: Turn) -> dict[str, Any]:
        payload = {"ticket_id": turn.ticket.id}
        if turn.ticket.session_id:
            payload["session_id"] = turn.ticket.session_id
        return {"event_type": "support_agent_turn", "event_payload": payload}

    async def _fixups(self, turn: Turn) -> None:
        """Rewrite the messages whose live text diverged from the buffered agent messages."""
        bad = {mid for mid, t in turn.texts.items() if t.diverged and t.canon is not None}
        if not bad:
            return
        last: dict[str, tuple[int, int]] = {}
        for mi, msg in enumerate(turn.messages):
            for pi, part in enumerate(msg.parts):
                if part.mid in bad:
                    last[part.mid] = (mi, pi)
        for mi, msg in enumerate(turn.messages):
            if not any(p.mid in bad for p in msg.parts):
                continue
            parts = []
            for pi, part in enumerate(msg.parts):
                if part.mid in bad:
                    canon = turn.texts[part.mid].canon or ""
                    end = None if last[part.mid] == (mi, pi) else part.offset + len(part.text)
                    part = Part(part.mid, part.offset, canon[part.offset : end])
                parts.append(part)
            msg.parts = parts
            text = msg.text
            pieces = split_text(text, turn.cap) if text else [""]
            tasks = [turn.tasks[t].view() for t in msg.task_ids if t in turn.tasks]
            blocks = bk.message_blocks(pieces[0], tasks, msg.final_blocks)
            self.stats.fixups += 1
            update = {**self._base(turn), "ts": msg.ts, "text": pieces[0] or PLACEHOLDER, "blocks": blocks}
            await self._call(turn.ticket, "chat.update", _fixed(update))
            for extra in pieces[1:]:
                post = {
                    **self._base(turn),
                    "thread_ts": turn.ticket.thread_ts,
                    "text": extra,
                    "blocks": bk.message_blocks(extra, []),
                }
                await self._call(turn.ticket, "chat.postMessage", _fixed(post))

    async def _clear_status(self, turn: Turn) -> None:
        try:
            clear = {"channel_id": turn.ticket.channel_id, "thread_ts": turn.ticket.thread_ts, "status": ""}
            await self._call(turn.ticket, "assistant.threads.setStatus", _fixed(clear), max_wait=0)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.debug("clearing the status failed", extra={"ticket": turn.ticket.id, "error": _error(exc)})
        turn.status_dirty = False


_SHOWN = frozenset({
    "session.status_running", "agent.thinking", "agent.message", "session.status_rescheduled",
    "session.error", *TOOL_USES, *TOOL_RESULTS,
})


Built = tuple[dict[str, Any], Batch | None]


def _fixed(kwargs: dict[str, Any]) -> Callable[[], Built]:
    """A payload that does not depend on pending content."""
    return lambda: (kwargs, None)


def _sent(done: tuple[Any, Batch | None] | None) -> tuple[Any, Batch]:
    """The response and batch of a call made with a batch-building payload."""
    assert done is not None and done[1] is not None
    return done[0], done[1]


def _remember(store: dict[str, Any], key: str, value: Any, limit: int = 10_000) -> None:
    """Set `store[key]`, forgetting the oldest entries past `limit`."""
    store.pop(key, None)
    store[key] = value
    while len(store) > limit:
        store.pop(next(iter(store)))


def _unique(tasks: list[bk.TaskView]) -> list[bk.TaskView]:
    seen: set[str] = set()
    out = []
    for task in tasks:
        if task.id not in seen:
            seen.add(task.id)
            out.append(task)
    return out


async def _wait(event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set, or at most `seconds`."""
    if seconds is None:
        await event.wait()
        return
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass


def _text(value: Any) -> str | None:
    """A Redis reply as text, whether the client decodes replies or not."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


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
