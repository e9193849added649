"""Anthropic webhooks at `/webhooks/anthropic`: wake a ticket whose follower missed its session.

A follower normally sees every session event on its stream. If no worker follows the ticket
(its job was lost, its follower ended early, the process died between turns), a session that
goes idle, needs an approval, hits its budget, terminates or gets a grader's verdict
(`session.outcome_evaluation_ended`, issue 18) would sit unnoticed. The webhook
for those changes enqueues a job for the ticket; the worker that takes it catches up from
the session's history (which renders what was missed and moves the ticket's state).

Verification (nothing is acted on unless all pass, else 401):
- the Standard Webhooks signature over the *raw* body, checked by the SDK's
  `client.beta.webhooks.unwrap` with `ANTHROPIC_WEBHOOK_SIGNING_KEY` (`whsec_...`);
- the timestamp inside the replay window (5 minutes, enforced by the same check);
- the webhook id (and the event id) never seen before: a signed repeat inside the window is
  Anthropic's own retry, acknowledged (2xx, "duplicate") and ignored. Ids are kept for 24 h,
  far past the window, after which the timestamp refuses it.
If handling fails after the claim, the claim is dropped and the answer is 500, so Anthropic's
retry (same ids) is processed.

Answers: 200 `{"ok": true, "action": ...}` with action one of `woken` (job enqueued),
`following` (a worker holds the ticket's lease and sees the event itself), `closed` (the
ticket is resolved or escalated), `unknown_session`, `ignored` (an event type we do not act on).
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.runtime import Services
from app.tickets.model import TicketState
from app.trace.record import record_webhook
from app.webhook_shape import malformed_reason

log = logging.getLogger(__name__)

PATH = "/webhooks/anthropic"
WAKE_TYPES = frozenset(
    {"session.status_idled", "session.requires_action", "session.budget_reached", "session.status_terminated",
     # A grader's verdict nobody followed (issue 18): the catch-up records it and hands off if unmet.
     "session.outcome_evaluation_ended"}
)
SEEN_TTL_SECONDS = 24 * 3600
CLOSED_STATES = frozenset({TicketState.RESOLVED, TicketState.ESCALATED})


def _refuse(reason: str, **extra: Any) -> Response:
    log.warning("anthropic webhook refused", extra={"reason": reason, **extra})
    return JSONResponse({"ok": False, "error": "unauthorized"}, status_code=401)


class AnthropicWebhooks:
    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def key(self) -> str | None:
        secret = self.services.settings.anthropic_webhook_signing_key
        return secret.get_secret_value() if secret else None

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        key = self.key
        if not key:
            log.error("anthropic webhook received but ANTHROPIC_WEBHOOK_SIGNING_KEY is not set")
            return _refuse("no signing key configured")
        try:
            payload = raw.decode("utf-8")
            event = self.services.anthropic.beta.webhooks.unwrap(payload, headers=dict(request.headers), key=key)
        except Exception as exc:  # bad signature, expired, malformed: all the same to the sender
            return _refuse(type(exc).__name__, detail=str(exc)[:200])
        if problem := malformed_reason(event):  # signed, but not a webhook event (#16)
            log.warning("anthropic webhook refused", extra={"reason": problem})
            return JSONResponse({"ok": False, "error": "bad_request"}, status_code=400)
        webhook_id = request.headers.get("webhook-id", "")
        claims = [f"sa:webhook:seen:{webhook_id}"]
        if event.id and event.id != webhook_id:
            claims.append(f"sa:webhook:seen:{event.id}")
        claimed: list[str] = []
        for claim in claims:
            if not await self.services.redis.set(claim, "1", nx=True, ex=SEEN_TTL_SECONDS):
                for done in claimed:  # a partial claim must not block a later genuine delivery
                    await self.services.redis.delete(done)
                # Anthropic retries a delivery with the same id (its webhooks guide): a signed
                # duplicate inside the window is acknowledged, so the retries stop, and ignored.
                log.info("anthropic webhook redelivered", extra={"webhook_id": webhook_id, "event_id": event.id})
                return JSONResponse({"ok": True, "action": "duplicate"})
            claimed.append(claim)
        try:
            action = await self.act(webhook_id or event.id, event)
        except Exception:
            log.exception("anthropic webhook handling failed", extra={"webhook_id": webhook_id})
            for done in claimed:
                await self.services.redis.delete(done)
            return JSONResponse({"ok": False, "error": "internal"}, status_code=500)
        return JSONResponse({"ok": True, "action": action})

    async def act(self, webhook_id: str, event: Any) -> str:
        data = event.data
        etype = str(getattr(data, "type", ""))
        session_id = str(getattr(data, "id", "") or "")
        extra: dict[str, Any] = {"webhook_id": webhook_id, "webhook_type": etype, "session": session_id}
        if etype not in WAKE_TYPES or not session_id:
            log.info("anthropic webhook ignored", extra=extra)
            return "ignored"
        store = self.services.store
        ticket = await store.by_session(session_id)
        if ticket is None:
            log.info("anthropic webhook for a session with no ticket", extra=extra)
            return "unknown_session"
        extra["ticket"] = ticket.id
        if ticket.state in CLOSED_STATES:
            action = "closed"
        elif await self.services.redis.exists(f"sa:lease:{ticket.id}"):
            # Its follower is live: the event reaches it on the stream, or on reconnect catch-up.
            action = "following"
        else:
            await self.services.queue().enqueue(ticket.id, f"webhook:{etype}")
            action = "woken"
        await record_webhook(self.services.redis, ticket.id, webhook_id=webhook_id, event_type=etype, action=action)
        log.info("anthropic webhook", extra={**extra, "action": action})
        return action


def webhook_routes(services: Services) -> list[BaseRoute]:
    hooks = AnthropicWebhooks(services)
    return [Route(PATH, hooks.handle, methods=["POST"])]
