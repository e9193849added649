"""Follow one ticket's Managed Agents session until its turn is over.

The loop, per connection: open the SSE stream first, then list the history since the saved
cursor and handle what was not handled yet, then send the ticket's queued user messages (each
exactly once, in order), then read the live stream. A dropped stream reconnects with capped
backoff and the same catch-up, so nothing is lost or shown twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import anthropic
import httpx2
import sentry_sdk
from anthropic import AsyncAnthropic

from app.config.model import AppConfig
from app.cost.budget import budget_cents_of, budget_param
from app.render.base import Renderer
from app.sessions import resources, thread_events
from app.sessions.cursor import Cursor, StaleLease
from app.sessions.memory import session_resources
from app.tickets.inbox_signal import FALLBACK_POLL_SECONDS
from app.tickets.model import InboxMessage, Ticket, TicketState
from app.tickets.outcome_record import events_for, request_text
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)

# Stop reasons after which the agent waits for us, not for the requester.
WAITING_ON_US = "requires_action"
# Answers to a `requires_action` stop's events: a person's confirmation, or a custom tool's result.
ANSWER_TYPES: list[Any] = ["user.tool_confirmation", "user.custom_tool_result"]
# Paused at its budget: replies wait in the inbox until an approver lets the session go on
# (issue 15 item 3; whether the API queues or refuses a message then is not documented).
BUDGET_PAUSE = "budget_reached"
HELD_NOTICE = (
    "The agent is paused at this ticket's budget. Your message will reach it once an approver "
    "raises the budget."
)
STREAM_DELTAS: list[Any] = ["agent.message"]

END_EVENTS = ("session.status_idle", "session.status_terminated", "session.deleted")
CONTENT_EVENTS = frozenset({
    "agent.message", "agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use",
    "agent.tool_result", "agent.mcp_tool_result",
    # A grader's check is a task, and its verdict may release a held answer (issue 18).
    "span.outcome_evaluation_start", "span.outcome_evaluation_end",
})

EventHook = Callable[[Ticket, Any], Awaitable[None]]

# After an idle event, `sessions.retrieve` can still read running for a moment
# (anthropics/skills managed-agents-client-patterns.md section 6, "Post-idle status-write
# race"): while the stream stays silent the status is asked again after these waits (doubling).
SETTLE_FIRST_WAIT = 0.2
SETTLE_MAX_WAIT = 2.0
# "Raising the budget ... resumes the work on its own" (Managed Agents budgets doc), but not
# necessarily before `retrieve` says so: a follower woken by the raise that finds the session
# still idle at `budget_reached`, with its cap now above what it spent, waits this long for it
# to run again before it takes the pause as still standing.
BUDGET_RESUME_WAIT_SECONDS = 30.0


class TurnFailed(Exception):
    """The session cannot go on (deleted, archived, permanently refused)."""


def iso(dt: datetime | str | None) -> str | None:
    if dt is None:
        return None
    if isinstance(dt, str):
        return dt
    return dt.astimezone(UTC).isoformat()


def is_permanent(exc: Exception) -> bool:
    """Errors that retrying cannot fix: 4xx other than 408, 409 and 429."""
    if isinstance(exc, anthropic.APIStatusError):
        return 400 <= exc.status_code < 500 and exc.status_code not in (408, 409, 429)
    return False


class SessionFollower:
    """Drives one ticket: session creation, message delivery, event following."""

    def __init__(
        self,
        *,
        client: AsyncAnthropic,
        store: TicketStore,
        config: AppConfig,
        renderer: Renderer,
        ticket: Ticket,
        fence: int,
        still_leased: Callable[[], Awaitable[bool]],
        hooks: dict[str, EventHook] | None = None,
        max_backoff: float = 10.0,
        inbox_signal: asyncio.Event | None = None,
        slack: Any = None,
    ) -> None:
        self.client = client
        self.store = store
        self.config = config
        self.renderer = renderer
        self.ticket = ticket
        self.fence = fence
        self.still_leased = still_leased
        self.hooks = hooks or {}
        self.max_backoff = max_backoff
        self.cursor: Cursor | None = None
        self._last_stop: str | None = None
        # The events a `requires_action` stop waits on that no answer was seen for yet.
        self._blocking: set[str] = set()
        # When this follower first saw a budget pause whose budget had been raised (see
        # BUDGET_RESUME_WAIT_SECONDS); None once the session runs again.
        self._resume_expected_since: float | None = None
        # The turn stopped on a person's decision and this follower let the ticket go.
        self.parked = False
        self._send_lock = asyncio.Lock()
        # Events given to the renderer by this follower (a reconnect must not show them again).
        self._handed: set[str] = set()
        self._marking: set[asyncio.Task[None]] = set()
        # With a renderer that reports what reached Slack, content counts as shown only then.
        self.defer_content_marks = hasattr(renderer, "on_visible")
        # Set when a message is pushed to this ticket's inbox (`app.tickets.inbox_signal`);
        # without it, the inbox is polled often enough for a reply to reach a working agent.
        self.inbox_signal = inbox_signal
        self.slack = slack  # asks Slack a requester's home team (customer memory, issue 19)
        self.inbox_poll_seconds = FALLBACK_POLL_SECONDS if inbox_signal is not None else 0.5
        self.reconnects = 0

    @property
    def log_extra(self) -> dict[str, Any]:
        return {"ticket": self.ticket.id, "session": self.ticket.session_id, "team": self.ticket.team_id}

    # -- session ----------------------------------------------------------------------

    async def ensure_session(self) -> str:
        if self.ticket.session_id:
            return self.ticket.session_id
        env_name = self.ticket.environment
        redis = self.store.redis
        agent = await resources.agent_id(self.client, redis, self.config, env_name)
        env_id = await resources.environment_id(self.client, redis, self.config, env_name)
        vaults = await resources.vault_ids(redis, env_name, self.client, self.config)
        kwargs: dict[str, Any] = {}
        budget = budget_param(self.config.environments[env_name])
        if budget is not None:
            kwargs["budget"] = budget
        if vaults:
            kwargs["vault_ids"] = vaults
        # Memory stores attach only at creation (issue 19; app/sessions/memory.py).
        memory_stores = await session_resources(self.client, redis, self.config, self.ticket, self.slack)
        if memory_stores:
            kwargs["resources"] = memory_stores
        session = await self.client.beta.sessions.create(
            agent=agent,
            environment_id=env_id,
            title=f"{self.ticket.ref} {self.ticket.title}"[:200],
            metadata={
                "ticket_id": self.ticket.id,
                "team_id": self.ticket.team_id,
                "channel_id": self.ticket.channel_id,
                "thread_ts": self.ticket.thread_ts,
                "environment": env_name,
            },
            **kwargs,
        )
        self.ticket.session_id = session.id
        self.ticket.agent_status = session.status
        sentry_sdk.set_tag("session", session.id)
        await self.store.save(self.ticket)
        log.info("session created", extra=self.log_extra)
        return session.id

    # -- main loop --------------------------------------------------------------------

    async def run(self) -> None:
        """Follow until the turn is over and nothing is queued; raises StaleLease on takeover."""
        session_id = await self.ensure_session()
        self.cursor = Cursor(self.store.redis, self.ticket.id, session_id, self.fence)
        backoff = 0.5
        while True:
            try:
                finished = await self._follow_once(session_id)
                if finished:
                    return
                backoff = 0.5
            except StaleLease:
                raise
            except TurnFailed:
                raise
            except (anthropic.APIConnectionError, httpx2.HTTPError, anthropic.APIStatusError) as exc:
                if is_permanent(exc):
                    raise TurnFailed(self._describe(exc)) from exc
                if isinstance(exc, anthropic.ConflictError) and await self._session_closed(session_id):
                    raise TurnFailed("the agent session is archived") from exc
                self.reconnects += 1
                log.warning(
                    "event stream interrupted; reconnecting",
                    extra={**self.log_extra, "error": type(exc).__name__, "backoff": backoff},
                )
            if not await self.still_leased():
                raise StaleLease(self.ticket.id)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _follow_once(self, session_id: str) -> bool:
        assert self.cursor is not None
        stream = await self.client.beta.sessions.events.stream(session_id, event_deltas=STREAM_DELTAS)
        async with stream:
            await self._catch_up(session_id)
            await self._send_inbox(session_id)
            if await self._turn_over(session_id):
                return True
            # Messages that arrive while the agent works go to the session right away (it queues them).
            watcher = asyncio.create_task(self._watch_inbox(session_id))
            events = stream.__aiter__()
            pending: asyncio.Future[Any] | None = None
            settle = SETTLE_FIRST_WAIT
            try:
                while True:
                    if pending is None:
                        pending = asyncio.ensure_future(events.__anext__())
                    # After an end event whose idle `retrieve` did not confirm yet, a silent
                    # stream is not waited on forever: the documented race (the idle event
                    # reaches the stream before the queryable status) is re-checked with backoff.
                    settling = self._ended_unconfirmed()
                    done, _ = await asyncio.wait(
                        {pending, watcher}, timeout=settle if settling else None,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if watcher in done:  # it only ever ends by failing
                        raise watcher.exception() or RuntimeError("the inbox watcher stopped")
                    if pending not in done:
                        if settling:
                            if await self._turn_over(session_id):
                                return True
                            settle = min(settle * 2, SETTLE_MAX_WAIT)
                        continue
                    next_event, pending = pending, None
                    try:
                        event = next_event.result()
                    except StopAsyncIteration:
                        break
                    if event.type in ("event_start", "event_delta"):
                        # A preview of an event the catch-up already handled (the stream was
                        # opened before the listing) would show that text again.
                        if _preview_of(event) not in self._handed:
                            await self.renderer.delta(self.ticket, event)
                        continue
                    await self._handle(event, replay=False)
                    if event.type in END_EVENTS:
                        settle = SETTLE_FIRST_WAIT
                        await self._send_inbox(session_id)
                        if await self._turn_over(session_id):
                            return True
            finally:
                watcher.cancel()
                if pending is not None:
                    pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
                if pending is not None:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await pending
        # The server closed the stream without an end: reconnect and catch up.
        raise anthropic.APIConnectionError(request=httpx2.Request("GET", "stream-closed"))

    def _ended_unconfirmed(self) -> bool:
        """The stream said the turn ended (or waits on a decision nobody gave yet), but the last
        `retrieve` still read running."""
        if self._last_stop is None or (self._last_stop == WAITING_ON_US and not self._blocking):
            return False
        if self._last_stop == BUDGET_PAUSE and self._resume_expected_since is not None:
            return True
        return self.ticket.agent_status in ("running", "rescheduling")

    async def _watch_inbox(self, session_id: str) -> None:
        while True:
            if self.inbox_signal is None:
                await asyncio.sleep(self.inbox_poll_seconds)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.inbox_signal.wait(), self.inbox_poll_seconds)
                # Cleared before looking, so a push after the look sets it again for the next wait.
                self.inbox_signal.clear()
            if await self.store.pending_messages(self.ticket.id):
                await self._send_inbox(session_id)

    async def _catch_up(self, session_id: str) -> None:
        assert self.cursor is not None
        since = await self.cursor.processed_at()
        kwargs: dict[str, Any] = {"order": "asc", "limit": 1000}
        if since:
            kwargs["created_at_gte"] = since
        async for event in self.client.beta.sessions.events.list(session_id, **kwargs):
            await self._handle(event, replay=True)

    async def _handle(self, event: Any, *, replay: bool) -> None:
        assert self.cursor is not None
        etype = event.type
        # Ids and types only: event bodies are customer data.
        sentry_sdk.add_breadcrumb(category="agent.event", message=etype, data={"id": event.id, "replay": replay})
        self._track_status(event)
        if event.id in self._handed:
            return
        seen = await self.cursor.seen(event.id)
        self._handed.add(event.id)
        if seen:
            return
        if etype.startswith("user.") and etype != "user.define_outcome":
            pass  # our own messages echoed back: nothing to show (an outcome's echo names its id)
        else:
            await self.renderer.event(self.ticket, event, replay=replay)
            hook = self.hooks.get(etype)
            if hook is not None:
                await hook(self.ticket, event)
            await self._apply_state(event)
            if etype in thread_events.THREAD_ENDS:  # a specialist stopped: its calls and cost (issue 19)
                await thread_events.thread_stopped(self, event)
        if self.defer_content_marks and etype in CONTENT_EVENTS:
            return  # marked seen once the renderer reports it visible in Slack (see `visible`)
        # The listing cursor moves only at turn ends: by then the renderer has put the whole turn
        # in Slack, so a takeover that lists from here re-shows only what never became visible.
        at = iso(getattr(event, "processed_at", None)) if etype in END_EVENTS else None
        await self.cursor.mark(event.id, at)

    def visible(self, events: list[Any]) -> None:
        """The renderer's report that these events' content is in Slack: now they count as shown."""
        if self.cursor is None:
            return
        for event in events:
            # A delta shows part of a message; only the buffered event itself counts as shown.
            if getattr(event, "type", None) in ("event_start", "event_delta") or not getattr(event, "id", None):
                continue
            task = asyncio.create_task(self._mark_visible(str(event.id)))
            self._marking.add(task)
            task.add_done_callback(self._marking.discard)

    async def _mark_visible(self, event_id: str) -> None:
        assert self.cursor is not None
        try:
            await self.cursor.mark(event_id, None)
        except StaleLease:
            log.warning("visible mark after losing the lease", extra=self.log_extra)

    def _track_status(self, event: Any) -> None:
        etype = event.type
        if etype == "session.status_running":
            self._last_stop = None
            self._resume_expected_since = None
            self._blocking.clear()
            self.ticket.agent_status = "running"
        elif etype in ("user.tool_confirmation", "user.custom_tool_result"):
            self._blocking.discard(_answered(event))
        elif etype == "session.status_idle":
            self._last_stop = event.stop_reason.type if event.stop_reason else "end_turn"
            if self._last_stop == WAITING_ON_US:
                self._blocking = {str(i) for i in getattr(event.stop_reason, "event_ids", None) or []}
            self.ticket.agent_status = "idle"
            self.ticket.stop_reason = self._last_stop
        elif etype == "session.status_rescheduled":
            self.ticket.agent_status = "rescheduling"
        elif etype in ("session.status_terminated", "session.deleted"):
            self._last_stop = "terminated"
            self.ticket.agent_status = "terminated"

    async def _refresh(self) -> None:
        """Re-read the ticket: controls (Stop, Resolve) may have changed it since we loaded it."""
        fresh = await self.store.get(self.ticket.id)
        if fresh is not None:
            fresh.agent_status = self.ticket.agent_status
            fresh.stop_reason = self.ticket.stop_reason
            fresh.session_id = fresh.session_id or self.ticket.session_id
            self.ticket = fresh

    async def _move(self, state: TicketState, cause: str) -> None:
        await self._refresh()
        closed = self.ticket.state in (TicketState.RESOLVED, TicketState.ESCALATED)
        # A failed ticket stays failed until a new turn actually starts (a user tried again).
        failed = self.ticket.state == TicketState.FAILED and state != TicketState.WORKING
        if closed or failed:
            await self.store.save(self.ticket)  # keep the state a human or a failure set
            return
        await self.store.transition(self.ticket, state, cause)

    async def _apply_state(self, event: Any) -> None:
        etype = event.type
        if etype == "session.status_running":
            await self._move(TicketState.WORKING, "agent running")
        elif etype == "session.error":
            retry = getattr(getattr(event.error, "retry_status", None), "type", None)
            if retry == "terminal":
                await self._move(TicketState.FAILED, f"agent error: {event.error.type}")
        elif etype == "session.status_idle":
            stop = self._last_stop
            if stop == "end_turn":
                await self._move(TicketState.WAITING_REQUESTER, "agent answered")
            elif stop == "requires_action":
                await self._move(TicketState.WAITING_APPROVAL, "agent needs a tool confirmation")
            elif stop == "budget_reached":
                await self._move(TicketState.WAITING_APPROVAL, "budget reached")
            elif stop == "retries_exhausted":
                await self._move(TicketState.WAITING_REQUESTER, "turn failed: retries exhausted")
            elif stop == "refusal":
                await self._move(TicketState.WAITING_REQUESTER, "agent declined")
            else:  # a stop reason this SDK does not know yet: the agent is idle, not working
                await self._move(TicketState.WAITING_REQUESTER, f"agent stopped ({stop})")
            await self.renderer.turn_ended(self.ticket, stop)
        elif etype in ("session.status_terminated", "session.deleted"):
            await self._move(TicketState.FAILED, f"session {etype.split('.')[-1]}")
            await self.renderer.turn_ended(self.ticket, "terminated")

    async def _send_inbox(self, session_id: str) -> None:
        async with self._send_lock:
            for message in await self.store.pending_messages(self.ticket.id):
                if await self.store.was_sent(self.ticket.id, message.ts):
                    await self.store.mark_sent(self.ticket.id, message)
                    continue
                if self._last_stop == BUDGET_PAUSE:
                    await self._hold(message)
                    continue
                await self._send(session_id, message)
                await self.store.mark_sent(self.ticket.id, message)
                self._last_stop = None

    async def _hold(self, message: InboxMessage) -> None:
        """Keep a reply in the inbox while the session is paused at its budget; say so once."""
        key = f"sa:ticket:{self.ticket.id}:held:{message.ts}"
        if await self.store.redis.set(key, "1", nx=True, ex=7 * 24 * 3600):
            log.info("message held at the budget", extra={**self.log_extra, "slack_ts": message.ts})
            await self.renderer.notice(self.ticket, HELD_NOTICE)

    async def _send(self, session_id: str, message: InboxMessage) -> None:
        """Deliver one user message exactly once.

        The SDK would retry a POST whose response was lost, and the API has no idempotency key,
        so retries are off here. Before each attempt the message is marked in flight; if a
        previous attempt's outcome is unknown, the session's own history decides.
        """
        in_flight = f"sa:sending:{self.ticket.id}:{message.ts}"
        if await self.store.redis.get(in_flight) and await self._session_has(session_id, message):
            log.info("message already reached the session", extra={**self.log_extra, "slack_ts": message.ts})
            return
        await self.store.redis.set(in_flight, "1", ex=7 * 24 * 3600)
        # A user.message, or the user.define_outcome that starts an outcome round (issue 18).
        events = await events_for(self.store.redis, self.config, self.ticket, message)
        begin_turn = getattr(self.renderer, "begin_turn", None)
        if begin_turn is not None:
            await begin_turn(self.ticket, message.user_id)
        await self.client.with_options(max_retries=0).beta.sessions.events.send(
            session_id,
            events=events,  # type: ignore[arg-type]
        )
        log.info("message sent to session", extra={**self.log_extra, "slack_ts": message.ts})

    async def _session_has(self, session_id: str, message: InboxMessage) -> bool:
        """Whether the session holds this message more often than we know we delivered it."""
        page = await self.client.beta.sessions.events.list(
            session_id, order="desc", limit=100, types=["user.message", "user.define_outcome"]
        )
        in_session = sum(1 for e in page.data if (request_text(e) or _event_text(e)) == message.text)
        delivered = await self.store.count_sent_with_text(self.ticket.id, message.text)
        return in_session > delivered

    async def _turn_over(self, session_id: str) -> bool:
        """True when the agent is not working and nothing of ours is waiting to be sent, or when
        it waits on a person's decision (then the follower lets go: see `_parked`)."""
        if self._last_stop is None:
            return False
        if self._last_stop == WAITING_ON_US:
            return await self._parked(session_id)
        # Replies held at the budget wait for the raise (a new follow job), not for this one.
        if self._last_stop != BUDGET_PAUSE and await self.store.pending_messages(self.ticket.id):
            return False
        if self._last_stop == "terminated":
            return True
        session = await self.client.beta.sessions.retrieve(session_id)
        self.ticket.agent_status = session.status
        if session.status != "idle" or await self._unprocessed_user_messages(session_id):
            return False
        if self._last_stop == BUDGET_PAUSE and budget_lifted(session):
            now = time.monotonic()
            self._resume_expected_since = self._resume_expected_since or now
            if now - self._resume_expected_since < BUDGET_RESUME_WAIT_SECONDS:
                return False  # re-asked while the stream stays silent (`_ended_unconfirmed`)
            log.warning("budget raised but the session did not resume", extra=self.log_extra)
        # Later turns may have finished before the stream delivered them: show them before leaving.
        await self._catch_up(session_id)
        return self._last_stop not in (None, WAITING_ON_US)

    async def _parked(self, session_id: str) -> bool:
        """At `requires_action`: whether the session waits on a person (a tool confirmation, a
        bridged call's approval), so this follower may let the ticket go, its stream and lease
        with it; the decision wakes the ticket (`app.jobs.wake`) and a worker follows it again.
        Not while any answer of ours is on its way (custom tool results the hooks just sent) or
        every waiting event was answered: the session is about to run again."""
        if not self._blocking or await self.store.pending_messages(self.ticket.id):
            return False
        session = await self.client.beta.sessions.retrieve(session_id)
        self.ticket.agent_status = session.status
        if session.status != "idle":
            return False  # re-asked while the stream stays silent (`_ended_unconfirmed`)
        page = await self.client.beta.sessions.events.list(
            session_id, order="desc", limit=100, types=ANSWER_TYPES
        )
        for answer in page.data:
            self._blocking.discard(_answered(answer))
        if not self._blocking:
            return False
        self.parked = True
        log.info("waiting on a decision; the ticket is let go until it comes", extra=self.log_extra)
        return True

    async def _unprocessed_user_messages(self, session_id: str) -> bool:
        """A queued user message the session has not processed yet means more turns are coming."""
        page = await self.client.beta.sessions.events.list(
            session_id, order="desc", limit=20, types=["user.message"]
        )
        return any(getattr(e, "processed_at", None) is None for e in page.data)

    async def _session_closed(self, session_id: str) -> bool:
        """A 409 is retryable in general, but never succeeds on an archived or terminated session."""
        try:
            session = await self.client.beta.sessions.retrieve(session_id)
        except anthropic.NotFoundError:
            return True
        except anthropic.APIError:
            return False
        return bool(session.archived_at) or session.status == "terminated"

    def _describe(self, exc: Exception) -> str:
        if isinstance(exc, anthropic.NotFoundError):
            return "the agent session no longer exists"
        if isinstance(exc, anthropic.ConflictError):
            return "the agent session is archived"
        if isinstance(exc, anthropic.APIStatusError):
            return f"the agent service refused the request ({exc.status_code})"
        return "the agent service could not be reached"


def budget_lifted(session: Any) -> bool:
    """Whether a session paused at its budget may spend again: the cap removed, or raised
    above the list cost it has consumed (`usage.list_cost`, what the budget is enforced
    against). Unknown consumption is not taken as room to spend."""
    budget = getattr(session, "budget", None)
    cap = budget_cents_of(budget)
    if budget is None or cap is None:
        return budget is None
    spent = getattr(getattr(getattr(session, "usage", None), "list_cost", None), "amount", None)
    return spent is not None and cap > int(Decimal(str(spent)))


def _preview_of(event: Any) -> str | None:
    """The id of the event an `event_start` / `event_delta` frame previews."""
    if event.type == "event_start":
        return getattr(getattr(event, "event", None), "id", None)
    return getattr(event, "event_id", None)


def _answered(event: Any) -> str:
    """The waiting event a confirmation or a custom tool result answers."""
    return str(getattr(event, "tool_use_id", None) or getattr(event, "custom_tool_use_id", None) or "")


def _event_text(event: Any) -> str:
    return "".join(getattr(b, "text", "") for b in getattr(event, "content", None) or [])
