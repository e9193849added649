"""The Bolt app: Slack's requests in, our listeners registered in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext

from app.runtime import Services
from app.slack.intake import Intake

log = logging.getLogger(__name__)

Registrar = Callable[[AsyncApp, Services], None]


def build_bolt_app(services: Services, extra_listeners: list[Registrar] | None = None) -> AsyncApp:
    settings = services.settings
    signing_secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    )
    bolt = AsyncApp(
        client=services.slack,
        signing_secret=signing_secret,
        # Intake must reach Redis before Slack hears "ok": ack after the listener returns.
        process_before_response=True,
        request_verification_enabled=signing_secret is not None,
        raise_error_for_unhandled_request=False,
    )
    intake = Intake(services.store, services.queue(), services.config)

    async def on_message_event(body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext) -> None:
        result = await intake.handle(
            event_id=body.get("event_id"),
            team_id=context.team_id or body.get("team_id") or "",
            event=event,
            bot_user_id=context.bot_user_id,
            bot_id=context.bot_id,
        )
        log.debug("intake", extra={"action": result.action, "reason": result.reason})

    bolt.event("app_mention")(on_message_event)
    bolt.event("message")(on_message_event)

    from app.slack import (
        approvals,
        budget_actions,
        channel_events,
        commands,
        controls,
        feedback,
        home,
        trace,
    )

    registrars = (
        controls.register,
        commands.register,
        approvals.register,
        budget_actions.register,
        home.register,
        trace.register,
        feedback.register,
        channel_events.register,
        *(extra_listeners or []),
    )
    for register in registrars:
        register(bolt, services)
    _acknowledge_remaining(bolt)
    return bolt


# Every subscribed event needs a listener, or Bolt answers 404 and Slack keeps retrying.
SUBSCRIBED_EVENTS = (
    "reaction_added",
    "app_home_opened",
    "member_left_channel",
    "channel_archive",
    "app_uninstalled",
    "tokens_revoked",
)


def _acknowledge_remaining(bolt: AsyncApp) -> None:
    async def noop() -> None:
        return None

    for name in SUBSCRIBED_EVENTS:
        bolt.event(name)(noop)
