"""The web role: Slack's HTTP endpoint, health, and whatever else mounts on the ASGI app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from app.runtime import Services
from app.webhooks import webhook_routes
from mcp_servers.asgi import allowed_hosts_from_env, mcp_mounts
from mcp_servers.auth import TokenRegistry


def build_web_app(services: Services, bolt: AsyncApp, extra_routes: list[BaseRoute] | None = None) -> Starlette:
    handler = AsyncSlackRequestHandler(bolt)

    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

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
        Route("/slack/events", slack_events, methods=["POST"]),
        Route("/slack/interactive", slack_events, methods=["POST"]),
        Route("/slack/commands", slack_events, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        *webhook_routes(services),
        *mcp_routes,
        *(extra_routes or []),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
