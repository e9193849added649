"""Cost capture while a session is followed: usage snapshots in, ledger and log lines out.

`session.usage` events are recorded as they come (idempotent by event id); at each turn end
the session's own usage (from `sessions.retrieve`) is recorded too, the turn is closed into one
figure, logged as a `ticket.cost` line and kept for the renderer's footer.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from anthropic import AsyncAnthropic

from app.config.model import AppConfig
from app.cost.ledger import CostLedger, TurnCost
from app.cost.logline import log_turn_cost
from app.cost.model import UnknownModel
from app.cost.slack import format_footer, should_show_cost
from app.sessions.follower import EventHook
from app.tickets.model import Ticket

log = logging.getLogger(__name__)
LAST_TURN = "sa:cost:lastturn:"


class CostCapture:
    def __init__(self, redis: aioredis.Redis, client: AsyncAnthropic, config: AppConfig) -> None:
        self.redis = redis
        self.client = client
        self.config = config
        self.ledger = CostLedger(redis, config.pricing)

    def hooks(self) -> dict[str, EventHook]:
        return {"session.usage": self.on_usage, "session.status_idle": self.on_idle}

    def _model(self, ticket: Ticket) -> str:
        if ticket.environment in self.config.environments:
            return self.config.model_for(ticket.environment)
        return self.config.agent.model

    async def _record(self, ticket: Ticket, usage: Any, source: str, at: Any = None) -> None:
        try:
            await self.ledger.record_snapshot(
                ticket, model=self._model(ticket), usage_snapshot=usage, source_event_id=source, at=at
            )
        except UnknownModel as exc:
            log.warning("no price for model; cost not recorded", extra={"ticket": ticket.id, "error": str(exc)})

    async def on_usage(self, ticket: Ticket, event: Any) -> None:
        if getattr(event, "usage", None) is not None:
            await self._record(ticket, event.usage, event.id, getattr(event, "processed_at", None))

    async def on_idle(self, ticket: Ticket, event: Any) -> None:
        reason = getattr(getattr(event, "stop_reason", None), "type", None)
        if reason == "requires_action" or not ticket.session_id:
            return
        session = await self.client.beta.sessions.retrieve(ticket.session_id)
        if session.usage is not None:
            await self._record(ticket, session.usage, f"retrieve:{event.id}")
        turn = await self.ledger.close_turn(ticket.id)
        if turn is not None:
            log_turn_cost(ticket, turn)
            await self.redis.set(f"{LAST_TURN}{ticket.id}", turn.model_dump_json(), ex=3600)

    async def footer(self, ticket: Ticket) -> str | None:
        env = self.config.environments.get(ticket.environment)
        if env is None or not should_show_cost(env):
            return None
        raw = await self.redis.getdel(f"{LAST_TURN}{ticket.id}")
        if not raw:
            return None
        turn = TurnCost.model_validate_json(raw)
        return format_footer(turn, await self.ledger.ticket_total(ticket.id))
