"""The Bolt app: Slack's requests in, our listeners registered in one place."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
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
        # The signature is checked on the raw body at the edge (app.slack.edge), before any
        # parsing; Bolt's own check stays on as a second net whenever there is a secret. Without
        # one the HTTP routes are not served at all (app.web), so only Socket Mode reaches Bolt.
        request_verification_enabled=signing_secret is not None,
        raise_error_for_unhandled_request=False,
    )
    quiet_bolt_body_logs()
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
    "channel_shared",
    "channel_unshared",
    "app_uninstalled",
    "tokens_revoked",
)
# Events the edge passes to Bolt; any other event type is answered 200 there and goes no further.
HANDLED_EVENTS = frozenset({"app_mention", "message", *SUBSCRIBED_EVENTS})

# Bolt loggers whose INFO/WARNING lines quote the whole request body: a badly signed request
# ("Invalid request signature detected (... body: ...)") or an unhandled one.
BODY_QUOTING_LOGGERS = ("slack_bolt.AsyncRequestVerification", "slack_bolt.AsyncSslCheck")


def quiet_bolt_body_logs() -> None:
    for name in BODY_QUOTING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _acknowledge_remaining(bolt: AsyncApp) -> None:
    """Answer what nobody else handles with a plain ack: Bolt's unhandled-request path logs the
    body and answers 404 (Slack then retries). Registered last, so real listeners match first."""

    async def noop() -> None:
        return None

    async def ack_only(ack: AsyncAck) -> None:
        await ack()

    for name in SUBSCRIBED_EVENTS:
        bolt.event(name)(noop)
    anything = re.compile(".*", re.DOTALL)
    bolt.action(anything)(ack_only)
    bolt.view(anything)(ack_only)
    bolt.shortcut(anything)(ack_only)
    bolt.command(anything)(ack_only)
