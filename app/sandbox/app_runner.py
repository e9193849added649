"""Run the whole app (web + worker) against emulators: in this process, or as a subprocess.

The in-process runner gives tests and benchmarks a fast loop; the subprocess runner is the real
`support-agent` command line, for restart and kill tests.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2

from app.config.model import AppConfig
from app.config.settings import Settings
from app.runtime import build_services

ROOT = Path(__file__).resolve().parents[2]


def free_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening-ready socket bound to `port` (0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def free_port() -> int:
    with free_socket() as sock:
        return int(sock.getsockname()[1])


def wait_healthy(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode} before becoming healthy")
        try:
            if httpx2.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"app at {url} did not become healthy in {timeout}s")


class InProcessApp:
    """Web + worker on a background thread with its own event loop."""

    def __init__(
        self, settings: Settings, config: AppConfig, *, web: bool = True, worker: bool = True, port: int = 0
    ) -> None:
        self.settings = settings
        self.config = config
        self.web = web
        self.worker = worker
        self._sock = free_socket(port=port)
        self.port = int(self._sock.getsockname()[1])
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.services: Any = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        from app.service import serve

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self.services = build_services(self.settings, self.config)
            await serve(self.services, web=self.web, worker=self.worker, stop=self._stop, listen_socket=self._sock)

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc

    def start(self) -> InProcessApp:
        self._thread = threading.Thread(target=self._run, name="app", daemon=True)
        self._thread.start()
        if self.web:
            try:
                wait_healthy(self.url)
            except RuntimeError:
                if self.error is not None:  # say why, not only that it never answered
                    raise RuntimeError(f"app failed to start: {self.error!r}") from self.error
                raise
        return self

    def run_coroutine(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the app's loop (to use its clients) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.error is not None and not isinstance(self.error, asyncio.CancelledError):
            raise self.error

    def __enter__(self) -> InProcessApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AppProcess:
    """`support-agent <role>` as a child process, with settings passed in its environment."""

    def __init__(
        self, env: dict[str, str], role: str = "run", cwd: Path | None = None, log_path: Path | None = None
    ) -> None:
        self.role = role
        # Bound now and held until the child inherits it: the port cannot be taken meanwhile.
        self._sock = free_socket() if role in ("run", "web") else None
        self.port: int | None = self._sock.getsockname()[1] if self._sock else None
        self.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
        self.cwd = cwd or ROOT
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> AppProcess:
        """Spawn the role; with a port, wait (unless `wait` is false) until it answers /healthz.

        The port's socket is bound here and inherited by the child, so nothing else can take the
        port between choosing it and the child's bind (a child that lost that race, with another
        process answering /healthz on its port, once made a benchmark count none of its events)."""
        args = [sys.executable, "-m", "app.cli", self.role]
        sock = None
        if self.port:
            sock, self._sock = self._sock or free_socket(port=self.port), None  # a restart binds again
            sock.set_inheritable(True)
            args += ["--port", str(self.port), "--fd", str(sock.fileno())]
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()  # a restart after a kill
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(args, env=self.env, cwd=self.cwd, stdout=self._log, stderr=self._log,
                                         pass_fds=(sock.fileno(),) if sock else ())
        finally:
            if sock is not None:
                sock.close()  # the child holds its own copy
        if self.port and wait:
            wait_healthy(self.url, proc=self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release: the way a crashed worker leaves."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
        if self._sock is not None:  # never started
            self._sock.close()
            self._sock = None
