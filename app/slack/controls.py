"""Thread controls: Stop, Resolve and Reopen buttons, and a ❌ reaction as Stop.

Each listener acknowledges Slack at once and does its work in a Bolt lazy listener, so no
Anthropic call ever sits between Slack and its 3-second deadline. Only the ticket's requester,
staff and admins may use the controls; anyone else gets an ephemeral explanation and nothing
changes. Every control that acts records a ticket transition with its cause and actor.

- Stop sends `user.interrupt` to the session and records the time under
  `sa:ticket:<id>:interrupted`: an interrupted turn ends in `end_turn` like a finished one, so
  whoever renders the end of the turn can tell the two apart with `interrupted_at()`.
- Resolve interrupts a running agent, waits (a few seconds at most) for the session to stop
  running, archives it, records its final usage in the cost ledger and posts a summary.
- Reopen continues on the same session while it is usable; after archive, termination or
  deletion it clears the ticket's session and seeds a new one with the thread's transcript.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import anthropic
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError

from app.cost.ledger import CostLedger
from app.cost.model import format_duration, format_usd
from app.cost.slack import should_show_cost
from app.render.slack_text import neutralise_mentions
from app.runtime import Services
from app.slack.blocks import (
    ACTION_REOPEN,
    ACTION_RESOLVE,
    ACTION_STOP,
    CLOSED_STATES,
    CONTROLS_BLOCK_ID,
    STOPPABLE_STATES,
    control_blocks,
    section,
)
from app.slack.permissions import may_control, refusal_text
from app.slack.threads import thread_messages
from app.tickets.model import InboxMessage, Ticket, TicketState

__all__ = ["TicketControls", "control_blocks", "interrupted_at", "register"]

log = logging.getLogger(__name__)

RUNNING_LAG_SECONDS = 2.0

STOP_REACTIONS = frozenset({"x"})
INTERRUPT_TTL_SECONDS = 7 * 24 * 3600
CONTROL_LOCK_SECONDS = 30
TRANSCRIPT_MAX_CHARS = 30_000
UNUSABLE_STATUSES = frozenset({"terminated"})
# The section of a note the controls post (stopped, reopened, ...): marks the message as ours,
# so a stale button on it can be brought up to date.
NOTE_BLOCK = "ticket_note"


def interrupted_key(ticket_id: str) -> str:
    return f"sa:ticket:{ticket_id}:interrupted"


async def interrupted_at(redis: Any, ticket_id: str) -> float | None:
    """When Stop last interrupted this ticket's session (epoch seconds), if ever."""
    raw = await redis.get(interrupted_key(ticket_id))
    return float(raw) if raw else None


@dataclass
class Outcome:
    """What a control did: `ok` false means refused or impossible; `text` explains."""

    ok: bool
    text: str
    ticket: Ticket | None = None
    stale: bool = False  # the control no longer applies to the ticket's state (a stale button)


class TicketControls:
    def __init__(
        self,
        services: Services,
        *,
        resolve_wait_seconds: float = 6.0,
        poll_seconds: float = 0.2,
        follower_wait_seconds: float = 3.0,
    ) -> None:
        self.services = services
        self.store = services.store
        self.redis = services.redis
        self.slack = services.slack
        self.client = services.anthropic
        self.resolve_wait_seconds = resolve_wait_seconds
        self.poll_seconds = poll_seconds
        self.follower_wait_seconds = follower_wait_seconds

    # -- entry point shared by buttons and reactions --------------------------------------

    async def run(self, action: str, ticket: Ticket, user_id: str, *, via: str = "button") -> Outcome:
        what = {ACTION_STOP: "stop", ACTION_RESOLVE: "resolve", ACTION_REOPEN: "reopen"}[action]
        if not await may_control(self.slack, self.redis, self.services.config, ticket, user_id):
            log.info("control refused", extra={"ticket": ticket.id, "user": user_id, "control": what})
            return Outcome(False, refusal_text(ticket, what), ticket)
        lock = f"sa:ticket:{ticket.id}:control"
        if not await self.redis.set(lock, user_id, nx=True, ex=CONTROL_LOCK_SECONDS):
            return Outcome(False, f"Another action on ticket {ticket.ref} is in progress; try again in a moment.")
        try:
            fresh = await self.store.get(ticket.id) or ticket
            if action == ACTION_STOP:
                outcome = await self.stop(fresh, user_id, via=via)
            elif action == ACTION_RESOLVE:
                outcome = await self.resolve(fresh, user_id)
            else:
                outcome = await self.reopen(fresh, user_id)
        finally:
            await self.redis.delete(lock)
        log.info(
            "control",
            extra={"ticket": ticket.id, "user": user_id, "control": what, "via": via, "ok": outcome.ok},
        )
        return outcome

    # -- Stop -------------------------------------------------------------------------------

    async def stop(self, ticket: Ticket, actor: str, *, via: str = "button") -> Outcome:
        if ticket.state not in STOPPABLE_STATES:
            return Outcome(
                False, f"Nothing to stop: the agent is not working on ticket {ticket.ref} now "
                f"({ticket.state.label}). That Stop button was out of date.", ticket, stale=True,
            )
        if not ticket.session_id:
            return Outcome(
                False, f"The agent has not started on ticket {ticket.ref} yet; nothing to stop.", ticket
            )
        cause = f"stopped by {actor}"
        try:
            await self._interrupt(ticket)
        except (anthropic.NotFoundError, anthropic.ConflictError, anthropic.BadRequestError) as exc:
            # Deleted, archived or terminated: nothing is running any more.
            log.info("interrupt refused; session already ended", extra={"ticket": ticket.id, "error": str(exc)})
            cause += " (session had already ended)"
        except anthropic.APIError as exc:
            log.warning("interrupt failed", extra={"ticket": ticket.id, "error": type(exc).__name__})
            return Outcome(False, "I could not reach the agent service to stop it. Please try again.", ticket)
        ticket = await self.store.transition(ticket, TicketState.WAITING_REQUESTER, cause, actor=actor)
        how = "with :x:" if via == "reaction" else ""
        text = (
            f":octagonal_sign: <@{actor}> stopped the agent{(' ' + how) if how else ''}. "
            "Reply in this thread to continue, or resolve the ticket."
        )
        await self._post(ticket, text, control_blocks(ticket))
        return Outcome(True, text, ticket)

    async def _interrupt(self, ticket: Ticket) -> None:
        assert ticket.session_id
        await self.redis.set(interrupted_key(ticket.id), f"{time.time():.6f}", ex=INTERRUPT_TTL_SECONDS)
        # No `session_thread_id`: "interrupts every non-archived thread in a multiagent session"
        # (SDK beta_managed_agents_user_interrupt_event_params.py), so Stop stops the specialists too.
        await self.client.beta.sessions.events.send(ticket.session_id, events=[{"type": "user.interrupt"}])

    # -- Resolve ----------------------------------------------------------------------------

    async def resolve(self, ticket: Ticket, actor: str) -> Outcome:
        if ticket.state == TicketState.RESOLVED:
            return Outcome(False, f"Ticket {ticket.ref} is already resolved.", ticket)
        note = ""
        session: Any = None
        if ticket.session_id:
            session, note = await self._archive(ticket)
        # The follower may still be finishing the last turn; let it let go before we write.
        await self._wait_follower(ticket.id)
        ticket = await self.store.get(ticket.id) or ticket
        ticket = await self.store.transition(ticket, TicketState.RESOLVED, f"resolved by {actor}", actor=actor)
        summary = await self._summary(ticket, actor, session)
        if note:
            summary += f"\n{note}"
        await self._post(ticket, summary, control_blocks(ticket))
        return Outcome(True, summary, ticket)

    async def _archive(self, ticket: Ticket) -> tuple[Any, str]:
        """Archive the session once it is not running. Returns (last session seen, note)."""
        assert ticket.session_id
        sessions = self.client.beta.sessions
        deadline = time.monotonic() + self.resolve_wait_seconds
        # Right after an idle event `retrieve` may still say running (Anthropic's client patterns:
        # poll it briefly): only a session running that long is interrupted, and `archive`
        # answering 400 meanwhile is asked again until the deadline.
        patience = min(RUNNING_LAG_SECONDS, self.resolve_wait_seconds / 3)
        running_since: float | None = None
        interrupted = False
        session: Any = None
        try:
            while True:
                session = await sessions.retrieve(ticket.session_id)
                if session.archived_at is not None:
                    return session, ""
                now = time.monotonic()
                if session.status not in ("running", "rescheduling"):
                    running_since = None
                    try:
                        session = await sessions.archive(ticket.session_id)
                        return session, ""
                    except anthropic.BadRequestError:
                        if now >= deadline:
                            raise
                else:
                    running_since = running_since if running_since is not None else now
                    if not interrupted and now - running_since >= patience:
                        await self._interrupt(ticket)
                        interrupted = True
                    if now >= deadline:
                        log.warning("session still running at resolve", extra={"ticket": ticket.id})
                        return session, "_The agent was still running, so its session was left open._"
                await asyncio.sleep(self.poll_seconds)
        except anthropic.NotFoundError:
            return session, ""
        except anthropic.APIError as exc:
            log.warning("archive failed", extra={"ticket": ticket.id, "error": type(exc).__name__})
            return session, "_The agent session could not be archived; it will expire on its own._"

    async def _wait_follower(self, ticket_id: str) -> None:
        deadline = time.monotonic() + self.follower_wait_seconds
        while time.monotonic() < deadline:
            if not await self.redis.exists(f"sa:lease:{ticket_id}"):
                return
            await asyncio.sleep(self.poll_seconds)

    async def _summary(self, ticket: Ticket, actor: str, session: Any) -> str:
        end = ticket.resolved_at or time.time()
        parts = [f"open {format_duration(max(end - ticket.created_at, 0.0))}"]
        ledger = CostLedger(self.redis, self.services.config.pricing)
        env = self.services.config.environments.get(ticket.environment)
        if session is not None and env is not None and getattr(session, "usage", None) is not None:
            try:
                await ledger.record_snapshot(
                    ticket,
                    model=self.services.config.model_for(ticket.environment),
                    usage_snapshot=session.usage,
                    source_event_id=f"resolve:{session.id}",
                )
            except Exception:  # the summary must not fail over a cost figure
                log.exception("final cost snapshot failed", extra={"ticket": ticket.id})
        totals = await ledger.ticket_total(ticket.id)
        turns = totals.turns or sum(
            1 for t in await self.store.transitions(ticket.id) if t.to_state == TicketState.WORKING
        )
        if turns:
            parts.append(f"{turns} turn{'s' if turns != 1 else ''}")
        if env is not None and should_show_cost(env) and totals.tickets:
            parts.append(f"cost {format_usd(totals.total_usd)}")
        return f":white_check_mark: Ticket {ticket.ref} resolved by <@{actor}> · " + " · ".join(parts)

    # -- Reopen -----------------------------------------------------------------------------

    async def reopen(self, ticket: Ticket, actor: str) -> Outcome:
        if ticket.state not in CLOSED_STATES:
            return Outcome(False, f"Ticket {ticket.ref} is already open ({ticket.state.label}).", ticket)
        now = time.time()
        if await self._session_usable(ticket):
            message = (
                f"The ticket was reopened by <@{actor}>. Pick up where you left off: check whether the "
                "problem is solved and what is still needed."
            )
            how = "on the same agent session"
        else:
            ticket.session_id = None
            ticket.agent_status = None
            ticket.stop_reason = None
            await self.store.save(ticket)
            transcript = await self._transcript(ticket)
            message = (
                f"Ticket {ticket.ref} was reopened by <@{actor}>. Its earlier agent session has ended; "
                "here is the Slack thread so far:\n\n"
                f"{transcript}\n\nContinue working on the ticket from here."
            )
            how = "with a new agent session (it has the thread so far)"
        ticket = await self.store.transition(ticket, TicketState.OPEN, f"reopened by {actor}", actor=actor)
        await self.store.push_message(ticket.id, InboxMessage(ts=f"reopen-{now:.6f}", user_id=actor, text=message))
        await self.services.queue().enqueue(ticket.id, "reopen")
        text = f":arrows_counterclockwise: <@{actor}> reopened ticket {ticket.ref} {how}."
        await self._post(ticket, text, control_blocks(ticket))
        return Outcome(True, text, ticket)

    async def _session_usable(self, ticket: Ticket) -> bool:
        if not ticket.session_id:
            return False
        try:
            session = await self.client.beta.sessions.retrieve(ticket.session_id)
        except anthropic.NotFoundError:
            return False
        return session.archived_at is None and session.status not in UNUSABLE_STATUSES

    async def _transcript(self, ticket: Ticket) -> str:
        """The thread as `[who] text` lines, most recent kept when it is too long."""
        lines: list[str] = []
        try:
            async for msg in thread_messages(self.slack, ticket.channel_id, ticket.thread_ts):
                text = (msg.get("text") or "").strip()
                if text:
                    who = "support agent" if msg.get("bot_id") else f"<@{msg.get('user', 'unknown')}>"
                    lines.append(f"[{who}] {text}")
        except SlackApiError as exc:
            log.warning("could not read the thread", extra={"ticket": ticket.id, "error": exc.response.get("error")})
        if not lines:
            return f"(the thread could not be read; the original question was: {ticket.title})"
        out: list[str] = []
        size = 0
        for line in reversed(lines):
            if size + len(line) + 1 > TRANSCRIPT_MAX_CHARS:
                out.append("[… earlier messages left out …]")
                break
            out.append(line)
            size += len(line) + 1
        return "\n".join(reversed(out))

    # -- Slack ------------------------------------------------------------------------------

    async def _post(self, ticket: Ticket, text: str, blocks: list[dict[str, Any]]) -> None:
        text = neutralise_mentions(text)
        try:
            await self.slack.chat_postMessage(
                channel=ticket.channel_id,
                thread_ts=ticket.thread_ts,
                text=text,
                blocks=[_note(text, ticket), *blocks],
            )
        except SlackApiError as exc:
            log.warning("control note not posted", extra={"ticket": ticket.id, "error": exc.response.get("error")})

    async def stale_button(self, ticket: Ticket, user: str, text: str, message: dict[str, Any]) -> None:
        """A control that no longer applies (Stop once nothing runs): tell the presser, in the
        thread and only them, and bring the pressed message's buttons up to date when it is one
        of our notes, so the stale button goes away right where it was pressed."""
        await self.explain(ticket.channel_id, user, text, ticket.thread_ts)
        blocks: list[dict[str, Any]] = message.get("blocks") or []
        ours = any(str(b.get("block_id") or "").startswith(f"{NOTE_BLOCK}:") for b in blocks)
        if not ours or not message.get("ts"):
            return  # the renderer's messages are the renderer's to update
        current = await self.store.get(ticket.id) or ticket
        # The same message with the controls block replaced by the ticket's current one.
        updated: list[dict[str, Any]] = []
        for block in blocks:
            if str(block.get("block_id") or "").startswith(f"{CONTROLS_BLOCK_ID}:"):
                updated += control_blocks(current)
            else:
                updated.append(block)
        try:
            await self.slack.chat_update(
                channel=ticket.channel_id, ts=message["ts"], text=message.get("text") or "", blocks=updated,
            )
        except SlackApiError as exc:
            log.info("stale controls not updated", extra={"ticket": ticket.id, "error": exc.response.get("error")})

    async def explain(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        try:
            await self.slack.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as exc:
            log.info("ephemeral not posted", extra={"channel": channel, "error": exc.response.get("error")})


# -- Bolt wiring ------------------------------------------------------------------------------


async def _ack(ack: AsyncAck) -> None:
    await ack()


def _note(text: str, ticket: Ticket) -> dict[str, Any]:
    return note_section(text, ticket)


def note_section(text: str, ticket: Ticket) -> dict[str, Any]:
    """A section that marks its message as ours (controls notes, the /support question), so
    a stale button on it can be brought up to date."""
    return {**section(text), "block_id": f"{NOTE_BLOCK}:{ticket.id}"[:255]}


def _action_target(body: dict[str, Any]) -> tuple[str, str, str, str, str | None]:
    """(action_id, value, user, channel, thread_ts) of a block_actions payload."""
    action = (body.get("actions") or [{}])[0]
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id") or ""
    message = body.get("message") or {}
    thread_ts = container.get("thread_ts") or message.get("thread_ts") or container.get("message_ts")
    user = (body.get("user") or {}).get("id") or ""
    return action.get("action_id", ""), str(action.get("value") or ""), user, channel, thread_ts


async def _ticket_for(
    services: Services, team_id: str, channel: str, ticket_id: str, thread_ts: str | None
) -> Ticket | None:
    store = services.store
    if ticket_id:
        ticket = await store.get(ticket_id)
        if ticket is not None and ticket.channel_id == channel:
            return ticket
    if thread_ts:
        return await store.by_thread(team_id, channel, thread_ts)
    return None


async def _thread_of(services: Services, channel: str, ts: str) -> str | None:
    try:
        response = await services.slack.conversations_replies(channel=channel, ts=ts, limit=1, inclusive=True)
    except SlackApiError:
        return None
    messages = response.get("messages") or []
    msg = next((m for m in messages if m.get("ts") == ts), messages[0] if messages else None)
    if msg is None:
        return None
    return str(msg.get("thread_ts") or msg.get("ts") or ts)


def register(bolt: AsyncApp, services: Services) -> None:
    controls = TicketControls(services)

    async def on_control(body: dict[str, Any]) -> None:
        action_id, value, user, channel, thread_ts = _action_target(body)
        team_id = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id") or ""
        try:
            ticket = await _ticket_for(services, team_id, channel, value, thread_ts)
            if ticket is None:
                await controls.explain(channel, user, "I could not find the ticket for this button.", thread_ts)
                return
            outcome = await controls.run(action_id, ticket, user)
            if outcome.stale and outcome.ticket is not None:
                await controls.stale_button(outcome.ticket, user, outcome.text, body.get("message") or {})
            elif not outcome.ok:
                await controls.explain(channel, user, outcome.text, ticket.thread_ts)
        except Exception:
            log.exception("control failed", extra={"action": action_id, "channel": channel})
            await controls.explain(
                channel, user, "Something went wrong handling that button; please try again.", thread_ts
            )

    async def on_reaction(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        if event.get("reaction") not in STOP_REACTIONS or event.get("user") == context.bot_user_id:
            return
        item = event.get("item") or {}
        channel, ts, user = item.get("channel") or "", item.get("ts") or "", event.get("user") or ""
        if item.get("type") != "message" or not channel or not ts or not user:
            return
        event_id = body.get("event_id")
        if event_id and not await services.store.claim_event(event_id):
            return
        team_id = body.get("team_id") or ""
        try:
            ticket = await services.store.by_thread(team_id, channel, ts)
            if ticket is None:
                thread_ts = await _thread_of(services, channel, ts)
                if thread_ts and thread_ts != ts:
                    ticket = await services.store.by_thread(team_id, channel, thread_ts)
            if ticket is None:
                return  # a ❌ on some other message: not ours
            outcome = await controls.run(ACTION_STOP, ticket, user, via="reaction")
            if not outcome.ok:
                await controls.explain(channel, user, outcome.text, ticket.thread_ts)
        except Exception:
            log.exception("reaction control failed", extra={"channel": channel})

    for action_id in (ACTION_STOP, ACTION_RESOLVE, ACTION_REOPEN):
        bolt.action(action_id)(ack=_ack, lazy=[on_control])
    bolt.event("reaction_added")(ack=_ack, lazy=[on_reaction])

