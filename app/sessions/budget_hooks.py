"""The thread hears about a budget stop: a `session.status_idle` hook, and hook combination.

When a session goes idle with `budget_reached`, the follower moves the ticket to
waiting_approval; this hook posts `budget_reached_message` in the ticket's thread, with the
"Raise budget" / "Escalate" buttons (handled in `app.slack.budget_actions`) and a mention of
the environment's approvers. Each idle event is announced once, even if it is replayed.

`combine_hooks` merges several `{event type: hook}` maps: hooks for the same event type run
in the order given (cost capture first, so the message can say what was spent).
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import anthropic
import redis.asyncio as aioredis
from anthropic import AsyncAnthropic
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.config.model import AppConfig, Environment
from app.cost.budget import budget_cents_of, budget_reached_message, suggested_raise_cents, usd_to_cents
from app.cost.ledger import CostLedger
from app.cost.slack import should_show_cost
from app.sessions.follower import EventHook
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

NOTIFIED_TTL_SECONDS = 30 * 24 * 3600
# The ts of the latest "budget reached" message per ticket (its buttons are retired on action).
MESSAGE_KEY = "sa:budget:msg:"


def combine_hooks(*maps: dict[str, EventHook]) -> dict[str, EventHook]:
    """One hook map; hooks for the same event run in order, all of them even if one fails."""
    grouped: dict[str, list[EventHook]] = {}
    for hooks in maps:
        for etype, hook in hooks.items():
            grouped.setdefault(etype, []).append(hook)
    combined: dict[str, EventHook] = {}
    for etype, chain in grouped.items():
        combined[etype] = chain[0] if len(chain) == 1 else _chain(chain)
    return combined


def _chain(chain: list[EventHook]) -> EventHook:
    async def run_all(ticket: Ticket, event: Any) -> None:
        first: BaseException | None = None
        for hook in chain:
            try:
                await hook(ticket, event)
            except Exception as exc:
                if first is None:
                    first = exc
                else:
                    log.exception("event hook failed", extra={"ticket": ticket.id})
        if first is not None:
            raise first

    return run_all


def approver_mentions(env: Environment) -> str:
    users = [f"<@{u}>" for u in env.approvers.users]
    groups = [f"<!subteam^{g}>" for g in env.approvers.usergroups]
    return " ".join(users + groups)


class BudgetNotifier:
    def __init__(
        self, slack: AsyncWebClient, redis: aioredis.Redis, client: AsyncAnthropic, config: AppConfig
    ) -> None:
        self.slack = slack
        self.redis = redis
        self.client = client
        self.config = config
        self.ledger = CostLedger(redis, config.pricing)

    def hooks(self) -> dict[str, EventHook]:
        return {"session.status_idle": self.on_idle}

    async def on_idle(self, ticket: Ticket, event: Any) -> None:
        reason = getattr(getattr(event, "stop_reason", None), "type", None)
        if reason != "budget_reached":
            return
        try:
            await self.announce(ticket, str(getattr(event, "id", "") or ""))
        except Exception:  # the ticket waits either way; a lost note must not stop the follower
            log.exception("budget note not posted", extra={"ticket": ticket.id})

    async def current_budget_cents(self, ticket: Ticket, env: Environment | None) -> int | None:
        if ticket.session_id:
            try:
                session = await self.client.beta.sessions.retrieve(ticket.session_id)
                cents = budget_cents_of(getattr(session, "budget", None))
                if cents is not None:
                    return cents
            except anthropic.APIError as exc:
                log.info("session not read for its budget", extra={"ticket": ticket.id, "error": str(exc)})
        if env is not None and env.budget_usd is not None:
            return usd_to_cents(env.budget_usd)
        return None

    async def announce(self, ticket: Ticket, event_id: str) -> str | None:
        """Post the budget note (once per idle event); returns the message ts if posted."""
        marker = f"sa:budget:notified:{ticket.id}:{event_id}"
        if event_id and not await self.redis.set(marker, "1", nx=True, ex=NOTIFIED_TTL_SECONDS):
            return None
        env = self.config.environments.get(ticket.environment)
        budget_cents = await self.current_budget_cents(ticket, env)
        if budget_cents is None:
            log.warning("budget reached but no budget known", extra={"ticket": ticket.id})
            budget_cents = 1
        totals = await self.ledger.ticket_total(ticket.id)
        spent: Decimal | None = totals.total_usd if totals.tickets else None
        show = env is not None and should_show_cost(env)
        message = budget_reached_message(
            ticket_id=ticket.id,
            ticket_ref=ticket.ref,
            budget_cents=budget_cents,
            spent_usd=spent,
            new_budget_cents=suggested_raise_cents(budget_cents, env),
            approver_mentions=approver_mentions(env) if env is not None and show else "",
            show_amounts=show,
        )
        try:
            posted = await self.slack.chat_postMessage(
                channel=ticket.channel_id, thread_ts=ticket.thread_ts, **message
            )
        except SlackApiError as exc:
            log.warning("budget note not posted", extra={"ticket": ticket.id, "error": exc.response.get("error")})
            if event_id:
                await self.redis.delete(marker)
            return None
        ts = str(posted.get("ts") or "")
        if ts:
            await self.redis.set(f"{MESSAGE_KEY}{ticket.id}", ts, ex=NOTIFIED_TTL_SECONDS)
        log.info(
            "budget reached", extra={"ticket": ticket.id, "session": ticket.session_id, "budget_cents": budget_cents}
        )
        return ts
