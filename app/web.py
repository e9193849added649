"""The web role: Slack's HTTP endpoint, health, and whatever else mounts on the ASGI app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from app.http_limits import BodyLimits
from app.runtime import Services
from app.slack.bolt_app import HANDLED_EVENTS
from app.slack.edge import SlackEdge
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
    edge = SlackEdge(bolt, secret.get_secret_value(), HANDLED_EVENTS)
    return [Route(path, edge.handle, methods=["POST"]) for path in SLACK_PATHS]


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
    return BodyLimits(Starlette(routes=routes, lifespan=lifespan))
