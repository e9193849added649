"""Sentry set-up: only with a DSN, and every event passes the scrubber first."""

from __future__ import annotations

from typing import Any

import sentry_sdk
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

from app.observability.scrub import Scrubber

EXTRA_DENYLIST = [
    "slack_bot_token",
    "bot_token",
    "slack_app_token",
    "app_token",
    "signing_secret",
    "slack_signing_secret",
    "anthropic_api_key",
    "api_key",
    "access_token",
    "refresh_token",
    "client_secret",
    "x-api-key",
    "mcp_token",
    "bearer",
    "webhook_signing_key",
    "redis_url",
]


def sentry_options(scrubber: Scrubber) -> dict[str, Any]:
    def before_send(event: Any, hint: Any) -> Any:
        return scrubber.data(event)

    def before_breadcrumb(crumb: Any, hint: Any) -> Any:
        return scrubber.data(crumb)

    return {
        "send_default_pii": False,
        "event_scrubber": EventScrubber(denylist=DEFAULT_DENYLIST + EXTRA_DENYLIST, recursive=True),
        "before_send": before_send,
        "before_send_transaction": before_send,
        "before_breadcrumb": before_breadcrumb,
    }


def init_sentry(dsn: str | None, scrubber: Scrubber, environment: str = "production", **extra: Any) -> bool:
    if not dsn:
        return False
    sentry_sdk.init(dsn=dsn, environment=environment, **sentry_options(scrubber), **extra)
    return True
