"""The world a chaos run happens in: one real Redis server on a fixed port, the Slack and Managed
Agents emulators on 127.0.0.1, and the web role and two worker roles as separate processes.

Every process the world starts dies with the harness (Linux `PR_SET_PDEATHSIG`), and `close()`
stops them all, so a run leaves nothing behind even when it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
import yaml

from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT, AppProcess, free_port, wait_healthy
from app.sandbox.stack import Stack

STAFF = "U0001"  # alice: opens the tickets and presses Approve
TEAM = "T0001"
CHANNEL = "C0001"
_PR_SET_PDEATHSIG = 1


def _die_with_harness() -> None:  # pragma: no cover - runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class RoleProcess(AppProcess):
    """`support-agent ROLE` through `app.chaos.entry` (the shortened stream rotation)."""

    def __init__(self, env: dict[str, str], role: str, name: str, log_path: Path) -> None:
        super().__init__(env, role=role, log_path=log_path)
        self.name = name

    def start(self, wait: bool = True) -> RoleProcess:
        args = [sys.executable, "-m", "app.chaos.entry", self.role]
        if self.port:
            args += ["--port", str(self.port)]
        self._log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            args, env=self.env, cwd=self.cwd, stdout=self._log, stderr=self._log,
            stdin=subprocess.DEVNULL, preexec_fn=_die_with_harness,
        )
        if self.port and wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 90.0) -> None:
        wait_healthy(self.url, timeout=timeout, proc=self.proc)

    def terminate(self) -> None:
        if self.alive and self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def write_config(path: Path) -> Path:
    """The shipped config, with alice as staff (she may approve tool calls)."""
    data: dict[str, Any] = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    data.setdefault("slack", {}).setdefault("staff", {})["users"] = [STAFF]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _str(value: object) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class World:
    def __init__(self, root: Path, *, rotate_after: float, lease_seconds: float = 3.0) -> None:
        self.root = root
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self.rotate_after = rotate_after
        self.lease_seconds = lease_seconds
        self.redis_server = EmbeddedRedis(root / "redis", port=free_port(), start=False)
        self.stack = Stack(
            self.redis_server.url, config_path=write_config(root / "support-agent.yml"), data_dir=root / "var"
        )
        self.web: RoleProcess | None = None
        self.workers: dict[str, RoleProcess] = {}  # worker id -> process
        self.slots: dict[str, str] = {}  # slot -> worker id of its current process
        self.generation = 0
        self.redis = redis.Redis.from_url(self.redis_server.url, decode_responses=True, socket_timeout=2)

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> World:
        self.redis_server.start()
        self.stack.start()
        # All three boot at once (importing the app takes a loaded machine a while).
        self.web = self._spawn("web", "web", wait=False)
        for slot in ("w1", "w2"):
            self.restart_worker(slot)
        self.web.wait_healthy()
        self.stack.slack.set_app_url(f"{self.web.url}/slack/events")
        for worker_id in list(self.workers):
            self.wait_started(worker_id)
        return self

    def wait_started(self, worker_id: str, timeout: float = 90.0) -> None:
        """Until the worker logs that it started (a loaded machine takes its time importing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if '"worker started"' in self.log_text(worker_id):
                return
            if not self.alive(worker_id):
                raise RuntimeError(f"worker {worker_id} exited; see {self.root / 'logs' / worker_id}.log")
            time.sleep(0.1)
        raise RuntimeError(f"worker {worker_id} did not start within {timeout}s")

    def close(self) -> None:
        procs = [*self.workers.values(), *([self.web] if self.web else [])]
        for proc in procs:  # all told at once, then each waited for
            with contextlib.suppress(Exception):
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop()
        self.workers.clear()
        with contextlib.suppress(Exception):
            self.stack.stop()
        with contextlib.suppress(Exception):
            self.redis.close()
        self.redis_server.close()

    def __enter__(self) -> World:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _env(self, **extra: str) -> dict[str, str]:
        return self.stack.env(
            LEASE_SECONDS=f"{self.lease_seconds:g}", CHAOS_ROTATE_AFTER=f"{self.rotate_after:g}",
            LOG_LEVEL="INFO", **extra,
        )

    def _spawn(self, role: str, name: str, wait: bool = True, **extra: str) -> RoleProcess:
        proc = RoleProcess(self._env(**extra), role, name, self.root / "logs" / f"{name}.log")
        return proc.start(wait=wait)

    # -- workers -------------------------------------------------------------------------------

    def restart_worker(self, slot: str) -> str:
        """Start a new worker process in `slot` (the old one, if any, is gone). Its id."""
        self.generation += 1
        worker_id = f"{slot}-g{self.generation}"
        self.workers[worker_id] = self._spawn("worker", worker_id, WORKER_ID=worker_id)
        self.slots[slot] = worker_id
        return worker_id

    def slot_of(self, worker_id: str) -> str | None:
        return next((s for s, w in self.slots.items() if w == worker_id), None)

    def alive(self, worker_id: str) -> bool:
        proc = self.workers.get(worker_id)
        return proc is not None and proc.alive

    def kill(self, worker_id: str) -> None:
        """SIGKILL: no cleanup, no lease release."""
        proc = self.workers.get(worker_id)
        if proc is not None:
            proc.kill()

    def log_text(self, name: str) -> str:
        path = self.root / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- what Redis says -----------------------------------------------------------------------

    def ticket_of(self, thread_ts: str) -> dict[str, Any] | None:
        """The ticket record of a thread, or None (not opened yet, or Redis unreachable)."""
        try:
            ticket_id = _str(self.redis.get(f"sa:thread:{TEAM}:{CHANNEL}:{thread_ts}"))
            raw = _str(self.redis.get(f"sa:ticket:{ticket_id}")) if ticket_id else None
        except (redis.RedisError, OSError):
            return None
        return json.loads(raw) if raw else None

    def lease_holder(self, ticket_id: str) -> str | None:
        """The worker id holding the ticket's lease, or None."""
        try:
            value = _str(self.redis.get(f"sa:lease:{ticket_id}"))
        except (redis.RedisError, OSError):
            return None
        return value.rsplit(":", 1)[0] if value else None

    def is_active(self, ticket_id: str) -> bool | None:
        """Whether the ticket is in the workers' active set (None: Redis unreachable)."""
        try:
            return self.redis.zscore("sa:active", ticket_id) is not None
        except (redis.RedisError, OSError):
            return None
