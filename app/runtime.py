"""Builds the process's clients in one place and hands them around.

Every client takes its base URL from settings, so pointing a test or the sandbox at the
emulators is a matter of settings, never of patching.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx2
import redis.asyncio as aioredis
from anthropic import AsyncAnthropic, DefaultAsyncHttpxClient
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)

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


# One connection pool for every Slack call of the process. Slack's Web API is one host; calls
# beyond this many at once wait for a free connection. A worker's renderers flush on a timer, so
# calls come in bursts: `bench workers` at 300 sessions followed every session with 400 (p50
# 3.2 s on a loaded machine) but fell behind with aiohttp's default of 100 (p50 13.6 s).
SLACK_MAX_CONNECTIONS = 400
# Idle connections stay open this long for the next call (Slack keeps them for about a minute).
SLACK_KEEPALIVE_SECONDS = 30.0

# The sessions one worker is sized to follow at once: each running session holds one SSE stream,
# and its requests (listing, sending, retrieving) need a few more connections at peaks. The SDK's
# default (1,000 connections, 100 kept alive) would make the 1,001st stream wait in the pool.
SESSIONS_PER_WORKER = 2_000
ANTHROPIC_REQUEST_HEADROOM = 500  # connections beyond one stream per session, for requests
ANTHROPIC_KEEPALIVE_CONNECTIONS = 500


def freeze_heap() -> None:
    """Move everything a role allocated while starting (modules, models, clients: some 300,000
    objects) out of the garbage collector's sight. A full collection otherwise walks all of it
    and stops the event loop for a few hundred milliseconds now and then: in `bench intake` one
    took 300-390 ms, every request in flight waiting behind it. Later garbage is still collected.
    Once per process: what a later start-up in the same process (a test's next app) leaves
    behind must stay collectable."""
    if gc.get_freeze_count():
        return
    gc.collect()
    gc.freeze()


class SlackPool:
    """The process's one aiohttp session for Slack, owned by the runtime.

    Created on first use inside the running event loop (services are built before the loop
    starts), closed by `Services.aclose`. After it is closed, stragglers get no session, so
    slack_sdk falls back to a session of its own per call rather than to a closed one.
    """

    def __init__(self, limit: int = SLACK_MAX_CONNECTIONS, keepalive: float = SLACK_KEEPALIVE_SECONDS) -> None:
        self.limit = limit
        self.keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.opened = 0  # sessions created: one per process (per event loop) when all goes well

    def session(self) -> aiohttp.ClientSession | None:
        if self._closed:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        if self._session is None or self._session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(limit=self.limit, keepalive_timeout=self.keepalive)
            self._session = aiohttp.ClientSession(connector=connector)
            self._loop = loop
            self.opened += 1
        return self._session

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop is asyncio.get_running_loop():
            await session.close()

    def __deepcopy__(self, memo: dict[int, Any]) -> SlackPool:
        return self  # a copy of a client shares the pool; connections are never copied


class SlackClient(RedactingWebClient):
    """Our Slack client: redacting (app/redact.py), on the runtime's shared connection pool.

    Bolt deep-copies a request's context (client included) for lazy listeners; a deep copy of
    this client is a client on the same pool, never a copy of the aiohttp session (which cannot
    be copied: it holds the event loop and its tasks)."""

    pool: SlackPool | None = None

    @property  # type: ignore[override]
    def session(self) -> aiohttp.ClientSession | None:
        if self.pool is not None:
            return self.pool.session()
        return self._own_session

    @session.setter
    def session(self, value: aiohttp.ClientSession | None) -> None:
        self._own_session = value

    def clone(self, **changes: Any) -> SlackClient:
        """A client of its own (token, team, headers) on the same pool and scrubber."""
        twin = copy.copy(self)
        twin.headers = dict(self.headers)
        twin.retry_handlers = list(self.retry_handlers)
        for name, value in changes.items():
            setattr(twin, name, value)
        return twin

    def __deepcopy__(self, memo: dict[int, Any]) -> SlackClient:
        return self.clone()


def make_slack_client(settings: Settings, pool: SlackPool | None = None) -> SlackClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    kwargs: dict[str, Any] = {"token": token}
    if settings.slack_api_url:
        kwargs["base_url"] = settings.slack_api_url
    # Everything posted passes the redactor (app/redact.py): no credential shape reaches Slack.
    client = SlackClient(**kwargs)
    client.pool = pool
    client.scrubber = make_scrubber(settings)
    # Rate limits are handled by our own renderer (it must keep pending text); only retry
    # failures that did not reach Slack's handler.
    client.retry_handlers = [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]
    return client


def make_anthropic_client(settings: Settings, *, sessions: int | None = None) -> AsyncAnthropic:
    """The Anthropic client; `sessions`: how many sessions this process follows at once (a
    worker), which sizes its connection pool. Other commands keep the SDK's defaults."""
    key = settings.anthropic_api_key.get_secret_value() if settings.anthropic_api_key else None
    extra: dict[str, Any] = {}
    if sessions:
        extra["http_client"] = DefaultAsyncHttpxClient(
            limits=httpx2.Limits(
                max_connections=sessions + ANTHROPIC_REQUEST_HEADROOM,
                max_keepalive_connections=ANTHROPIC_KEEPALIVE_CONNECTIONS,
            )
        )
    return AsyncAnthropic(
        api_key=key,
        base_url=settings.anthropic_base_url,
        webhook_key=(
            settings.anthropic_webhook_signing_key.get_secret_value()
            if settings.anthropic_webhook_signing_key
            else None
        ),
        max_retries=3,
        **extra,
    )


@dataclass
class Services:
    """Everything a role (web, worker) needs, created once per process."""

    settings: Settings
    config: AppConfig
    redis: aioredis.Redis
    slack: SlackClient
    anthropic: AsyncAnthropic
    scrubber: Scrubber
    worker_id: str
    redis_watch: RedisWatch
    embedded: EmbeddedRedis | None = None
    slack_pool: SlackPool | None = None
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
        if self.slack_pool is not None:
            await self.slack_pool.aclose()
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
    pool = SlackPool()
    return Services(
        settings=settings,
        config=config,
        redis=redis,
        redis_watch=RedisWatch(redis, url),
        slack=make_slack_client(settings, pool),
        slack_pool=pool,
        anthropic=make_anthropic_client(settings, sessions=SESSIONS_PER_WORKER),
        scrubber=make_scrubber(settings, config),
        worker_id=worker_id,
        embedded=embedded,
    )
