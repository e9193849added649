"""The web role: Slack's HTTP endpoint, health, and whatever else mounts on the ASGI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.internals import extract_team_id
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from app.http_limits import BodyLimits
from app.runtime import Services, freeze_heap
from app.slack.bolt_app import HANDLED_EVENTS, SingleTeamAuthorize
from app.slack.edge import MessageHandler, SlackEdge
from app.slack.intake import Intake
from app.webhooks import webhook_routes
from mcp_servers.asgi import allowed_hosts_from_env, mcp_mounts
from mcp_servers.auth import TokenRegistry

log = logging.getLogger(__name__)

SLACK_PATHS = ("/slack/events", "/slack/interactive", "/slack/commands")


def slack_routes(services: Services, bolt: AsyncApp) -> list[BaseRoute]:
    """Slack's HTTP routes, only where they can be authenticated.

    Without a signing secret (Socket Mode brings Slack's requests over its own authenticated
    socket) the routes are not served at all: a request there gets 404, never a listener."""
    secret = services.settings.slack_signing_secret
    if secret is None or not secret.get_secret_value().strip():
        log.info("Slack HTTP routes not served: no SLACK_SIGNING_SECRET")
        return []
    edge = SlackEdge(bolt, secret.get_secret_value(), HANDLED_EVENTS, on_message=message_intake(services, bolt))
    return [Route(path, edge.handle, methods=["POST"]) for path in SLACK_PATHS]


def message_intake(services: Services, bolt: AsyncApp) -> MessageHandler | None:
    """Intake for messages and mentions without Bolt's dispatch (its middleware chain, a
    client and a context per request, a second signature check, listener matching), which cost
    two thirds of each request (issue 14, `bench intake`). It does what Bolt's one listener for
    these events does, with the bot's ids from the same once-per-process auth.test. None (Bolt
    handles them) unless Bolt authorizes with our single-team authorize."""
    authorize = getattr(bolt, "_async_authorize", None)
    if not isinstance(authorize, SingleTeamAuthorize):
        return None
    intake = Intake(services.store, services.queue(), services.config)

    async def on_message(payload: dict[str, Any]) -> None:
        auth = await authorize.auth_test()
        bot_id = auth.get("bot_id")
        await intake.handle(
            event_id=payload.get("event_id"),
            team_id=extract_team_id(payload) or payload.get("team_id") or "",
            event=payload["event"],
            # As Bolt's AuthorizeResult.from_auth_test_response: a bot token's user is the bot.
            bot_user_id=auth.get("user_id") if bot_id is not None else None,
            bot_id=bot_id,
        )

    return on_message


def build_web_app(services: Services, bolt: AsyncApp, extra_routes: list[BaseRoute] | None = None) -> ASGIApp:
    async def healthz(request: Request) -> Response:
        try:
            await services.redis.ping()
        except Exception:
            return JSONResponse({"ok": False, "redis": "unreachable"}, status_code=503)
        return JSONResponse({"ok": True})

    mcp_routes, mcp_lifespan = mcp_mounts(
        tokens=TokenRegistry.from_env(),
        redis_factory=lambda: services.redis,
        allowed_hosts=[services.config.public_base_url or "", *allowed_hosts_from_env()],
    )

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        # Mounted MCP apps need their session managers running inside the web app's lifespan.
        async with mcp_lifespan(app):
            yield

    routes: list[BaseRoute] = [
        *slack_routes(services, bolt),
        Route("/healthz", healthz, methods=["GET"]),
        *webhook_routes(services),
        *mcp_routes,
        *(extra_routes or []),
    ]
    # Every body under /slack, /webhooks and /mcp is size- and time-bounded before it is read.
    app = BodyLimits(Starlette(routes=routes, lifespan=lifespan))
    freeze_heap()
    return app
