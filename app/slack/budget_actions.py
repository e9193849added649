"""The "Raise budget" and "Escalate" buttons of a ticket that stopped at its budget.

Only approvers may press them: the environment's approvers (users and user groups), support
staff and admins. Anyone else gets an ephemeral explanation and nothing changes.

- Raise budget updates the session's budget (`sessions.update(budget=...)`) to the amount on
  the button, or more if the session's budget has moved on since. The session then resumes the
  paused turn on its own; a worker is asked to follow the ticket again so the rest of the turn
  reaches the thread. The thread gets `budget_raised_message`.
- Escalate moves the ticket to escalated and, when the environment names a `triage_channel`,
  posts a hand-off note there with a link to the thread.

Both acknowledge Slack at once and work in a Bolt lazy listener; the buttons of the budget
note are retired once one of them has acted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
from pydantic import ValidationError
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from app.cost.budget import (
    BUDGET_BLOCK_ID,
    ESCALATE_ACTION,
    RAISE_BUDGET_ACTION,
    BudgetAction,
    budget_cents_of,
    budget_param_cents,
    budget_raised_message,
    suggested_raise_cents,
)
from app.cost.model import format_usd
from app.cost.slack import should_show_cost
from app.jobs.wake import wake
from app.render.slack_text import neutralise_mentions
from app.runtime import Services
from app.sessions.budget_hooks import MESSAGE_KEY
from app.slack.approvals import blocks_hold_whole_message
from app.slack.blocks import CLOSED_STATES, section
from app.slack.permissions import may_approve
from app.slack.threads import find_message
from app.tickets.model import Ticket, TicketState

log = logging.getLogger(__name__)

LOCK_SECONDS = 30
FOLLOWER_WAIT_SECONDS = 3.0


def refusal(ticket: Ticket) -> str:
    return (
        f"Only approvers for this channel, support staff and admins can raise the budget of ticket "
        f"{ticket.ref} or escalate it."
    )


@dataclass
class Outcome:
    ok: bool
    text: str
    ticket: Ticket | None = None


class BudgetActions:
    def __init__(self, services: Services, *, follower_wait_seconds: float = FOLLOWER_WAIT_SECONDS) -> None:
        self.services = services
        self.store = services.store
        self.redis = services.redis
        self.slack = services.slack
        self.client = services.anthropic
        self.config = services.config
        self.follower_wait_seconds = follower_wait_seconds

    async def run(
        self,
        action_id: str,
        ticket: Ticket,
        user_id: str,
        value: BudgetAction,
        clicked: dict[str, Any] | None = None,
    ) -> Outcome:
        """`clicked` is the message the button was on (from the payload), to retire its buttons."""
        what = "raise" if action_id == RAISE_BUDGET_ACTION else "escalate"
        if not await may_approve(self.slack, self.redis, self.config, ticket, user_id):
            log.info("budget action refused", extra={"ticket": ticket.id, "user": user_id, "control": what})
            return Outcome(False, refusal(ticket), ticket)
        lock = f"sa:ticket:{ticket.id}:control"
        if not await self.redis.set(lock, user_id, nx=True, ex=LOCK_SECONDS):
            return Outcome(False, f"Another action on ticket {ticket.ref} is in progress; try again in a moment.")
        try:
            fresh = await self.store.get(ticket.id) or ticket
            if fresh.state in CLOSED_STATES:
                return Outcome(False, f"Ticket {fresh.ref} is already {fresh.state.label}.", fresh)
            if action_id == RAISE_BUDGET_ACTION:
                outcome = await self.raise_budget(fresh, user_id, value, clicked)
            else:
                outcome = await self.escalate(fresh, user_id, clicked)
        finally:
            await self.redis.delete(lock)
        log.info("budget action", extra={"ticket": ticket.id, "user": user_id, "control": what, "ok": outcome.ok})
        return outcome

    # -- Raise budget -------------------------------------------------------------------------

    async def raise_budget(
        self, ticket: Ticket, actor: str, value: BudgetAction, clicked: dict[str, Any] | None = None
    ) -> Outcome:
        if not ticket.session_id:
            return Outcome(False, f"Ticket {ticket.ref} has no agent session to raise the budget of.", ticket)
        env = self.config.environments.get(ticket.environment)
        sessions = self.client.beta.sessions
        try:
            session = await sessions.retrieve(ticket.session_id)
            current = budget_cents_of(getattr(session, "budget", None))
            target = value.budget_cents or 0
            if current is not None and target <= current:
                # The button is older than the session's budget: raise from where it is now.
                target = suggested_raise_cents(current, env)
            if target <= 0:
                target = suggested_raise_cents(current or 1, env)
            await sessions.update(ticket.session_id, budget=budget_param_cents(target))  # type: ignore[arg-type]
        except anthropic.NotFoundError:
            return Outcome(False, f"The agent session of ticket {ticket.ref} no longer exists.", ticket)
        except anthropic.BadRequestError as exc:
            log.info("budget not raised", extra={"ticket": ticket.id, "error": str(exc)})
            return Outcome(
                False,
                f"The budget of ticket {ticket.ref} could not be raised: {_api_message(exc)}",
                ticket,
            )
        except anthropic.APIError as exc:
            log.warning("budget raise failed", extra={"ticket": ticket.id, "error": type(exc).__name__})
            return Outcome(False, "I could not reach the agent service to raise the budget. Please try again.", ticket)
        cause = f"budget raised to {format_usd(Decimal(target) / 100)} by {actor}"
        if ticket.state == TicketState.WAITING_APPROVAL:
            ticket = await self.store.transition(ticket, TicketState.WORKING, cause, actor=actor)
        log.info("budget raised", extra={"ticket": ticket.id, "user": actor, "budget_cents": target})
        # The session resumes by itself; make sure a worker follows it to the end of the turn.
        await self._wait_follower(ticket.id)
        await wake(self.redis, ticket.id, "budget-raised")
        show = env is not None and should_show_cost(env)
        if show:
            message = budget_raised_message(ticket.ref, target, actor)
        else:
            text = f":arrow_forward: <@{actor}> let work on ticket {ticket.ref} continue."
            message = {"text": text, "blocks": [section(text)]}
        await self._retire_buttons(ticket, f"Budget raised by <@{actor}>.", clicked)
        await self._post(ticket.channel_id, ticket.thread_ts, message["text"], message["blocks"])
        return Outcome(True, message["text"], ticket)

    async def _wait_follower(self, ticket_id: str) -> None:
        """Let a follower that is just finishing the budget stop let go of the ticket first."""
        deadline = time.monotonic() + self.follower_wait_seconds
        while time.monotonic() < deadline:
            if not await self.redis.exists(f"sa:lease:{ticket_id}"):
                return
            await asyncio.sleep(0.1)

    # -- Escalate -----------------------------------------------------------------------------

    async def escalate(self, ticket: Ticket, actor: str, clicked: dict[str, Any] | None = None) -> Outcome:
        env = self.config.environments.get(ticket.environment)
        ticket = await self.store.transition(
            ticket, TicketState.ESCALATED, f"escalated by {actor} at the budget", actor=actor
        )
        text = (
            f":raising_hand: <@{actor}> escalated ticket {ticket.ref} to a person. "
            "Someone from the support team will follow up in this thread."
        )
        await self._retire_buttons(ticket, f"Escalated by <@{actor}>.", clicked)
        await self._post(ticket.channel_id, ticket.thread_ts, text, [section(text)])
        if env is not None and env.triage_channel:
            await self._notify_triage(ticket, actor, env.triage_channel, env.triage_usergroup)
        return Outcome(True, text, ticket)

    async def _notify_triage(self, ticket: Ticket, actor: str, channel: str, usergroup: str | None) -> None:
        link = f"<#{ticket.channel_id}>"
        try:
            permalink = await self.slack.chat_getPermalink(channel=ticket.channel_id, message_ts=ticket.thread_ts)
            if permalink.get("permalink"):
                link = f"<{permalink['permalink']}|the thread> in <#{ticket.channel_id}>"
        except SlackApiError:
            pass
        who = f"<!subteam^{usergroup}> " if usergroup else ""
        title = neutralise_mentions(ticket.title[:150]).replace("\n", " ")
        text = (
            f"{who}:rotating_light: Ticket {ticket.ref} ({title}) reached its budget and was escalated by "
            f"<@{actor}>: {link}. Requester: <@{ticket.requester_id}>."
        )
        await self._post(channel, None, text, [section(text)])

    # -- Slack --------------------------------------------------------------------------------

    async def _retire_buttons(self, ticket: Ticket, note: str, clicked: dict[str, Any] | None) -> None:
        """Replace the buttons of the budget note (the clicked one, else the latest) with who acted."""
        stored = await self.redis.get(f"{MESSAGE_KEY}{ticket.id}")
        latest = (stored.decode() if isinstance(stored, bytes) else str(stored)) if stored else None
        message = clicked if clicked and clicked.get("ts") else await self._find(ticket, latest)
        if message is None:
            return
        ts = str(message["ts"])
        # The budget note is ours, posted whole with chat.postMessage (`budget_hooks`); any other
        # message is rewritten only when its blocks are all it shows.
        if ts != latest and not blocks_hold_whole_message(message):
            # A streamed message's blocks are not all it shows (see `app.slack.approvals`):
            # never rewrite it. The note that follows in the thread says who acted.
            log.info("budget buttons left on a streamed message", extra={"ticket": ticket.id})
            return
        if not any(b.get("block_id") == BUDGET_BLOCK_ID for b in message.get("blocks") or []):
            return  # not the budget note: nothing of ours to replace
        blocks = [b for b in message.get("blocks") or [] if b.get("block_id") != BUDGET_BLOCK_ID]
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
        try:
            await self.slack.chat_update(
                channel=ticket.channel_id, ts=ts, text=message.get("text") or note, blocks=blocks
            )
        except SlackApiError as exc:
            log.info("budget buttons not retired", extra={"ticket": ticket.id, "error": exc.response.get("error")})
            return
        if ts == latest:
            await self.redis.delete(f"{MESSAGE_KEY}{ticket.id}")

    async def _find(self, ticket: Ticket, ts: str | None) -> dict[str, Any] | None:
        """A message of the ticket's thread by ts."""
        if not ts:
            return None
        try:
            return await find_message(self.slack, ticket.channel_id, ticket.thread_ts, ts)
        except SlackApiError as exc:
            log.info("thread not read", extra={"ticket": ticket.id, "error": exc.response.get("error")})
        return None

    async def _post(self, channel: str, thread_ts: str | None, text: str, blocks: list[dict[str, Any]]) -> None:
        try:
            kwargs: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks}
            if thread_ts:
                kwargs["thread_ts"] = thread_ts
            await self.slack.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            log.warning("budget note not posted", extra={"channel": channel, "error": exc.response.get("error")})

    async def explain(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        try:
            await self.slack.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as exc:
            log.info("ephemeral not posted", extra={"channel": channel, "error": exc.response.get("error")})


def _api_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    return str((error or {}).get("message") or exc.message)


# -- Bolt wiring ------------------------------------------------------------------------------


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register(bolt: AsyncApp, services: Services) -> None:
    actions = BudgetActions(services)

    async def on_budget_action(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        action_id = str(action.get("action_id") or "")
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container.get("channel_id") or ""
        message = body.get("message") or {}
        thread_ts = container.get("thread_ts") or message.get("thread_ts") or container.get("message_ts")
        user = (body.get("user") or {}).get("id") or ""
        try:
            try:
                value = BudgetAction.decode(str(action.get("value") or ""))
            except (ValueError, ValidationError):
                await actions.explain(channel, user, "This button is not valid any more.", thread_ts)
                return
            ticket = await services.store.get(value.ticket_id)
            if ticket is None or (channel and ticket.channel_id != channel):
                await actions.explain(channel, user, "I could not find the ticket for this button.", thread_ts)
                return
            outcome = await actions.run(action_id, ticket, user, value, body.get("message"))
            if not outcome.ok:
                await actions.explain(channel, user, outcome.text, ticket.thread_ts)
        except Exception:
            log.exception("budget action failed", extra={"action": action_id, "channel": channel})
            await actions.explain(
                channel, user, "Something went wrong handling that button; please try again.", thread_ts
            )

    for action_id in (RAISE_BUDGET_ACTION, ESCALATE_ACTION):
        bolt.action(action_id)(ack=_ack, lazy=[on_budget_action])
