"""Agent turns shown in the ticket's thread: the `Renderer` the follower talks to.

Per turn: a `Layout` (app/render/layout.py, pure) folds the session's events into the wanted
content; a flusher task hands what accumulated to the `Delivery` (app/render/delivery.py) at
most once per `flush_interval`, which makes Slack show it (one stream per turn where Slack
allows it, rotated before Slack ends it, else a posted message edited in place) and records
what Slack shows (app/render/records.py). Nothing goes to Slack from `event()` itself.

When a turn begins, the ticket's record says whether another process (or an earlier life of
this one) was showing it: if so the new turn adopts those messages (app/render/adopt.py) and
sends only what is missing, in place. Events already shown by a finished turn of this process
are not shown again even if a replay brings them back (a Redis restart that lost their marks).

Each unusual delivery (a rotation, an expired stream, a refusal, a congested start, an adopted
orphan) is reported to `on_stream_event(ticket, event, detail)` for the ticket's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.render import thread_status
from app.render.adopt import adopt
from app.render.calls import _error, _fixed
from app.render.delivery import TOO_LONG, Controls, Decisions, Delivery, Footer, Observer, Options, StreamObserver
from app.render.ending import finish
from app.render.layout import SHOWN, Layout, Task
from app.render.outcome_tasks import outcome_view
from app.render.prefs import TurnPrefs, remember
from app.render.ratelimit import TokenBuckets
from app.render.rewrite import rewrite
from app.render.slack_errors import FATAL, REFUSED_HERE, REFUSED_TEAM, kind
from app.render.slack_text import MAX_TEXT, neutralise_mentions, split_text
from app.render.turn import STREAM, UPDATE, RenderStats, Turn
from app.tickets.model import Ticket

__all__ = ["FATAL", "REFUSED_HERE", "REFUSED_TEAM", "STREAM", "TOO_LONG", "UPDATE", "StreamRenderer"]

log = logging.getLogger(__name__)

SHOWN_TICKETS, SHOWN_PER_TICKET = 1_000, 2_000


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
        decisions: Decisions | None = None,
        working_controls: Controls | None = None,
        working_after: float = 15.0,
    ) -> None:
        self.redis = redis
        self.options = Options(
            flush_interval=flush_interval, rotate_after=rotate_after, task_display_mode=task_display_mode,
            streaming=streaming, feedback=feedback, footer=footer, controls=controls,
            status_text=status_text, loading_messages=loading_messages, start_wait=start_wait,
            key_prefix=key_prefix, decisions=decisions, working_controls=working_controls,
            working_after=working_after,
        )
        self.stats = RenderStats()
        buckets = buckets if buckets is not None else (TokenBuckets(redis) if redis else None)
        self.delivery = Delivery(slack, redis, buckets, self.options, self.stats)
        self.delivery.on_visible = on_visible
        self.delivery.on_stream_event = on_stream_event
        self.max_message_chars = max_message_chars
        self.status_refresh = status_refresh
        self.max_failures = max_failures
        self.idle_timeout = idle_timeout
        self.on_fatal = on_fatal
        self._turns: dict[str, Turn] = {}
        self._opening: dict[str, asyncio.Lock] = {}
        self.prefs = TurnPrefs(redis, key_prefix, self.options.no_stream)
        self._carry: dict[str, dict[str, Task]] = {}
        # Per ticket, the events its finished turns showed (a replay must not show them again).
        self._shown: dict[str, set[str]] = {}
        # Set by the worker: False once this process's lease on the ticket may have lapsed, so
        # nothing more is written for it (its new holder renders it).
        self.may_write: Callable[[str], bool] | None = None
        # Set by the worker: True once another worker surely has the ticket (a renewal that is
        # only late, on a loaded machine, holds the output back instead).
        self.lease_lost: Callable[[str], bool] | None = None

    @property
    def on_visible(self) -> Observer | None:
        return self.delivery.on_visible

    @on_visible.setter
    def on_visible(self, observer: Observer | None) -> None:
        self.delivery.on_visible = observer

    # ---- the Renderer protocol ----------------------------------------------------------

    async def begin_turn(self, ticket: Ticket, user_id: str | None) -> None:
        """A user's message starts a turn: its stream goes to `user_id` (default: the ticket's
        requester), and the thread shows the agent at work right away."""
        if user_id:
            await self.prefs.set_recipient(ticket, user_id)
        turn = await self._open(ticket)
        if turn.current is None:
            turn.status_wanted = True
            turn.status_retry_at = time.monotonic()
            turn.wake.set()

    async def event(self, ticket: Ticket, event: Any, *, replay: bool) -> None:
        etype = str(getattr(event, "type", ""))
        if etype not in SHOWN and not _waits_for_approval(event):
            return
        if str(getattr(event, "id", "")) in self._shown.get(ticket.id, ()):
            self._report(ticket, [event])  # shown by an earlier turn here; its mark was lost
            return
        turn = await self._open(ticket)
        turn.last_event = time.monotonic()
        if etype in ("session.status_running", "agent.thinking"):
            turn.status_wanted = turn.current is None
        self._report(ticket, turn.layout.apply(event, track=self.on_visible is not None))
        if getattr(event, "id", None):
            turn.events.add(str(event.id))
        turn.wake.set()

    async def delta(self, ticket: Ticket, event: Any) -> None:
        etype = getattr(event, "type", None)
        if etype == "event_start":
            preview = event.event
            if str(preview.id) in self._shown.get(ticket.id, ()):
                return
            turn = await self._open(ticket)
            turn.last_event = time.monotonic()
            if preview.type == "agent.message":
                turn.layout.preview_started(preview.id)
            elif turn.current is None:
                turn.status_wanted = True
            turn.wake.set()
        elif etype == "event_delta":
            live = self._turns.get(ticket.id)
            if live is not None and live.layout.apply_delta(event, track=self.on_visible is not None):
                live.last_event = time.monotonic()
                live.wake.set()

    async def turn_ended(self, ticket: Ticket, stop_reason: str | None) -> None:
        """Show the rest of the turn and its stop; returns when Slack has it all."""
        turn = self._turns.get(ticket.id)
        if turn is None or turn.finished:
            return
        turn.ticket = ticket
        turn.stop_reason = stop_reason
        carry = turn.layout.settle(stop_reason)
        if carry:
            remember(self._carry, ticket.id, carry)
        turn.ending.set()
        turn.wake.set()
        await asyncio.shield(turn.done.wait())

    async def notice(self, ticket: Ticket, text: str) -> None:
        if self.may_write is not None and not self.may_write(ticket.id):
            return
        turn = self._turns.get(ticket.id)
        if turn is not None and not turn.messages and not turn.outbox and not turn.ending.is_set():
            await self.turn_ended(ticket, "failed")  # only a status so far: the notice replaces it
        for part in split_text(neutralise_mentions(text)):
            kwargs = {"channel": ticket.channel_id, "thread_ts": ticket.thread_ts, "text": part}
            try:
                await self.delivery.call(ticket, "chat.postMessage", _fixed(kwargs))
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.error("notice not posted", extra={"ticket": ticket.id, "error": _error(exc)})
                return

    async def aclose(self) -> None:
        """Finish every open turn (on shutdown): flush and stop their streams."""
        await asyncio.gather(
            *(self.turn_ended(t.ticket, "shutdown") for t in list(self._turns.values())),
            return_exceptions=True,
        )

    # ---- turns ----------------------------------------------------------------------------

    def _report(self, ticket: Ticket, events: list[Any]) -> None:
        if events and self.on_visible is not None:
            self.on_visible(ticket, events)

    async def _open(self, ticket: Ticket) -> Turn:
        turn = self._turns.get(ticket.id)
        if turn is not None and not turn.ending.is_set():
            turn.ticket = ticket
            return turn
        lock = self._opening.setdefault(ticket.id, asyncio.Lock())
        async with lock:
            turn = self._turns.get(ticket.id)
            if turn is not None and not turn.ending.is_set():
                return turn
            # None yet, or the last one is closing (it takes nothing new): a new turn.
            if turn is not None:
                await asyncio.shield(turn.done.wait())  # its record must be final before we read it
            turn = await self._new_turn(ticket)
            self._turns[ticket.id] = turn
        self._opening.pop(ticket.id, None)
        turn.runner = asyncio.create_task(self._run(turn), name=f"render-{ticket.id}")
        return turn

    async def _new_turn(self, ticket: Ticket) -> Turn:
        recipient = await self.prefs.recipient(ticket)
        streaming = self.options.streaming and not await self.prefs.refused(ticket.team_id)
        plan = ticket.title if self.options.task_display_mode == "plan" else None
        turn = Turn(ticket, recipient, streaming, Layout(self.max_message_chars, plan_title=plan))
        turn.layout.outcome = await outcome_view(self.redis, ticket.id)  # issue 18: checks and drafts
        # A status only if nothing shows within a flush interval: the first text often does.
        turn.status_retry_at = time.monotonic() + self.options.flush_interval
        turn.layout.tasks.update(self._carry.pop(ticket.id, {}))
        live = {m.ts for t in self._turns.values() for m in t.messages if not m.closed}
        try:
            await adopt(self.delivery, turn, live)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("could not adopt the ticket's turn", extra={"ticket": ticket.id, "error": _error(exc)})
        return turn

    # ---- the flusher ----------------------------------------------------------------------

    async def _run(self, turn: Turn) -> None:
        try:
            while not turn.finished:
                if not turn.wake.is_set():
                    await _wait(turn.wake, self._timeout(turn))
                turn.wake.clear()
                if turn.outbox and not turn.ending.is_set():
                    delay = turn.last_flush + self.options.flush_interval - time.monotonic()
                    if delay > 0:
                        await _wait(turn.ending, delay)
                try:
                    await self._step(turn)
                    turn.failures = 0
                except Exception as exc:
                    if not isinstance(exc, SlackApiError | aiohttp.ClientError | TimeoutError):
                        log.exception("rendering failed", extra={"ticket": turn.ticket.id})
                    await self._failed(turn, exc)
                if turn.outbox or turn.ending.is_set() or turn.stale:
                    turn.wake.set()
        except Exception:
            log.exception("renderer stopped", extra={"ticket": turn.ticket.id})
        finally:
            await self._forget(turn)

    async def _forget(self, turn: Turn) -> None:
        turn.finished = True
        ticket_id = turn.ticket.id
        self.stats.diverged += turn.layout.diverged
        if turn.lost:
            self.delivery.records.forget(ticket_id)  # the record is its new holder's now
        elif turn.stop_reason in ("shutdown", "requires_action") or not turn.ending.is_set():
            # The turn goes on elsewhere, or after the approval: whoever goes on adopts its
            # messages from the record (a task waiting for approval is finished where it is shown).
            if turn.stop_reason == "requires_action":
                self._remember_shown(ticket_id, turn)
        else:
            await self.delivery.records.clear(ticket_id)
            self._remember_shown(ticket_id, turn)
        turn.done.set()
        if self._turns.get(ticket_id) is turn:
            del self._turns[ticket_id]

    def _remember_shown(self, ticket_id: str, turn: Turn) -> None:
        shown = self._shown.pop(ticket_id, set()) | turn.events
        while len(shown) > SHOWN_PER_TICKET:
            shown.pop()
        remember(self._shown, ticket_id, shown, limit=SHOWN_TICKETS)

    def _timeout(self, turn: Turn) -> float | None:
        now = time.monotonic()
        deadlines = []
        msg = turn.current
        if msg is not None and msg.mode == STREAM:
            deadlines.append(msg.started + self.options.rotate_after)
        if msg is None and turn.status_wanted:
            deadlines.append(turn.status_retry_at)
        if msg is None and turn.status_set_at is not None:
            deadlines.append(turn.status_set_at + self.status_refresh)
        if not turn.ending.is_set():
            deadlines.append(turn.last_event + self.idle_timeout)
            if turn.controls_ts is None and self.options.working_controls is not None and turn.messages:
                deadlines.append(turn.started + self.options.working_after)
        return max(0.0, min(deadlines) - now) if deadlines else None

    async def _step(self, turn: Turn) -> None:
        d = self.delivery
        if self.may_write is not None and not self.may_write(turn.ticket.id):
            if self.lease_lost is not None and not self.lease_lost(turn.ticket.id):
                await asyncio.sleep(0.2)  # the renewal is late: write once it confirms the lease
                return
            log.warning("lease lost: leaving the turn to the ticket's new holder", extra={"ticket": turn.ticket.id})
            turn.dead = turn.lost = True
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
        for old in turn.messages:  # adopted, or closed with a task that moved on since
            if old.ts in turn.stale and (old.closed or old is not turn.current):
                await rewrite(d, turn, old)
        msg = turn.current
        if msg is not None and msg.ts in turn.stale and not (turn.outbox or turn.ending.is_set()):
            await rewrite(d, turn, msg)
        if msg is not None and msg.mode == STREAM and time.monotonic() - msg.started >= self.options.rotate_after:
            age = time.monotonic() - msg.started
            await d.stop(turn, msg, None)
            self.stats.rotations += 1
            turn.status_wanted = not turn.ending.is_set()
            # Only once the stop went through: a stop that fails is retried, and reported once.
            await d.stream_event(turn, "rotated", {"ts": msg.ts, "age_seconds": round(age, 3)})
        if turn.ending.is_set():
            await finish(d, turn)
            turn.finished = True
            return
        if turn.outbox:
            await d.deliver(turn)
            turn.last_flush = time.monotonic()
        if turn.messages and turn.controls_ts is None and time.monotonic() - turn.started >= self.options.working_after:
            await thread_status.show_working_controls(d, turn)
        elif turn.current is None:
            now = time.monotonic()
            if turn.status_set_at is not None and now - turn.status_set_at >= self.status_refresh:
                turn.status_wanted = True
            if turn.status_wanted and now >= turn.status_retry_at:
                await thread_status.show_status(d, turn)

    async def _failed(self, turn: Turn, exc: Exception) -> None:
        error = _error(exc)
        what = kind("", error) if isinstance(exc, SlackApiError) else "transient"
        if what == "fatal":
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
        log.warning("slack call failed", extra={"ticket": turn.ticket.id, "error": error, "attempt": turn.failures})
        # Slack's own trouble, or not reaching Slack, is retried for longer than a refusal.
        attempts = self.max_failures * 4 if what == "transient" else self.max_failures
        if turn.failures < attempts:
            await asyncio.sleep(min(0.25 * 2**turn.failures, 8.0))
            return
        # Give up on what keeps failing, so the rest of the turn still gets through, and say so.
        turn.failures = 0
        turn.stale.clear()
        msg = turn.current
        batch = self.delivery.take(turn, msg)
        consumed = max(batch.consumed, 1)
        dropped = sum(len(p.text) for p in turn.outbox[:consumed])
        turn.outbox[:consumed] = []
        self.stats.dropped_chars += dropped
        log.error("dropped turn output", extra={"ticket": turn.ticket.id, "error": error, "chars": dropped})
        await self.delivery.stream_event(turn, "dropped", {"error": error, "chars": dropped})
        if msg is not None:
            msg.closed = True
        turn.go_plain()  # whatever Slack refused, plain text is its best chance
        note = {"channel": turn.ticket.channel_id, "thread_ts": turn.ticket.thread_ts,
                "text": f":warning: Part of this answer could not be shown in Slack ({error})."}
        with contextlib.suppress(SlackApiError, aiohttp.ClientError, TimeoutError):
            await self.delivery.call(turn.ticket, "chat.postMessage", _fixed(note))
        if turn.ending.is_set() and not turn.outbox:
            turn.finished = True


def _waits_for_approval(event: Any) -> bool:
    reason = getattr(getattr(event, "stop_reason", None), "type", None)
    return getattr(event, "type", None) == "session.status_idle" and reason == "requires_action"


async def _wait(event: asyncio.Event, seconds: float | None) -> None:
    """Until `event` is set, or at most `seconds`."""
    if seconds is None:
        await event.wait()
        return
    try:
        await asyncio.wait_for(event.wait(), seconds)
    except TimeoutError:
        pass
