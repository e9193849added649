"""The Bolt app: Slack's requests in, our listeners registered in one place."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from app.runtime import Services, SlackClient
from app.slack.intake import Intake

log = logging.getLogger(__name__)

Registrar = Callable[[AsyncApp, Services], None]


def build_bolt_app(services: Services, extra_listeners: list[Registrar] | None = None) -> AsyncApp:
    settings = services.settings
    signing_secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    )
    bolt = AsyncApp(
        # Bolt's own client carries neither the token nor the runtime's pool. Bolt makes a
        # plain client per request from it and deep-copies that for lazy listeners (an aiohttp
        # session cannot be copied); our listeners post through `services.slack` (redacting,
        # on the shared pool), never through Bolt's per-request client. `authorize` gives each
        # request the bot's token from one auth.test per process (Bolt's single-team path makes
        # one per concurrent first request).
        client=services.slack.clone(token=None, pool=None),
        authorize=SingleTeamAuthorize(services.slack),
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


class SingleTeamAuthorize(AsyncAuthorize):
    """Bolt `authorize` for our one workspace: auth.test once per process, shared by every
    request; concurrent first requests wait for the same call. A failed call is not kept, so
    the next request tries again."""

    def __init__(self, client: SlackClient) -> None:
        super().__init__()
        self.client = client
        self.calls = 0
        self._result: AsyncSlackResponse | None = None
        self._lock: asyncio.Lock | None = None

    async def auth_test(self) -> AsyncSlackResponse:
        if self._result is not None:
            return self._result
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._result is None:
                self.calls += 1
                self._result = await self.client.auth_test()
            return self._result

    async def __call__(  # type: ignore[override]
        self, *, context: AsyncBoltContext, enterprise_id: str | None, team_id: str | None,
        user_id: str | None, **_actor: str | None,
    ) -> AuthorizeResult:
        # The request's own user stays the context's user_id (a bot token names no user).
        result = await self.auth_test()
        return AuthorizeResult.from_auth_test_response(
            auth_test_response=result, bot_token=self.client.token, bot_scopes=result.headers.get("x-oauth-scopes")
        )


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
