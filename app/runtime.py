"""Builds the process's clients in one place and hands them around.

Every client takes its base URL from settings, so pointing a test or the sandbox at the
emulators is a matter of settings, never of patching.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from anthropic import AsyncAnthropic
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from app.config.model import AppConfig, load_config
from app.config.settings import Settings
from app.jobs.lease import LeaseManager
from app.jobs.queue import JobQueue
from app.observability.scrub import Scrubber
from app.redact import RedactingWebClient
from app.redis_conn import EmbeddedRedis, connect, redis_url_or_embedded
from app.redis_health import RedisWatch
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)


def make_scrubber(settings: Settings, config: AppConfig | None = None) -> Scrubber:
    """A scrubber that knows every secret value this process holds."""
    scrubber = Scrubber(
        [
            settings.slack_bot_token,
            settings.slack_signing_secret,
            settings.slack_app_token,
            settings.anthropic_api_key,
            settings.anthropic_webhook_signing_key,
            settings.sentry_dsn,
            settings.redis_url,
        ]
    )
    if config is not None:
        for env in config.environments.values():
            for server in env.mcp_servers.values():
                if server.token_env:
                    scrubber.add(os.environ.get(server.token_env))
    return scrubber


def make_slack_client(settings: Settings) -> AsyncWebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {"token": token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url
    # Everything posted passes the redactor (app/redact.py): no credential shape reaches Slack.
    client = RedactingWebClient(**kwargs)
    client.scrubber = make_scrubber(settings)
    # Rate limits are handled by our own renderer (it must keep pending text); only retry
    # failures that did not reach Slack's handler.
    client.retry_handlers = [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]
    return client


def make_anthropic_client(settings: Settings) -> AsyncAnthropic:
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    return AsyncAnthropic(
        api_key=key,
        base_url=settings.anthropic_base_url,
        webhook_key=(
            settings.anthropic_webhook_signing_key.get_secret_value()
            if settings.anthropic_webhook_signing_key
            else None
        ),
        max_retries=3,
    )


@dataclass
class Services:
    """Everything a role (web, worker) needs, created once per process."""

    settings: Settings
    config: AppConfig
    redis: aioredis.Redis
    slack: AsyncWebClient
    anthropic: AsyncAnthropic
    scrubber: Scrubber
    worker_id: str
    redis_watch: RedisWatch
    embedded: EmbeddedRedis | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> TicketStore:
        return TicketStore(self.redis)

    def queue(self) -> JobQueue:
        return JobQueue(self.redis, consumer=self.worker_id)

    def leases(self) -> LeaseManager:
        return LeaseManager(self.redis, self.worker_id, self.settings.lease_seconds)

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.anthropic.close()
        if self.embedded is not None:
            self.embedded.close()


def build_services(settings: Settings, config: AppConfig | None = None) -> Services:
    config = config or load_config(settings.config_path)
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    url, embedded = redis_url_or_embedded(redis_url, settings.redis_data_dir)
    worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    redis = connect(
        url, max_connections=settings.redis_max_connections, pool_timeout=settings.redis_pool_timeout
    )
    return Services(
        settings=settings,
        config=config,
        redis=redis,
        redis_watch=RedisWatch(redis, url),
        slack=make_slack_client(settings),
        anthropic=make_anthropic_client(settings),
        scrubber=make_scrubber(settings, config),
        worker_id=worker_id,
        embedded=embedded,
    )
