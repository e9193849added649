"""Shared pieces of the scale benchmarks (intake, workers, takeover): a Redis server and the
emulators for one run, process figures read from /proc, percentiles, the one JSON line."""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config.settings import Settings
from app.jobs.queue import JobQueue
from app.redis_conn import EmbeddedRedis, connect
from app.sandbox.slack import RateLimitConfig
from app.sandbox.stack import Stack
from app.slack.intake import Intake
from app.tickets.store import TicketStore

CHANNEL = "C0001"  # served by the shipped config's `internal` environment
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
DEFAULT_LEASE_SECONDS = float(Settings.model_fields["lease_seconds"].default)


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50_ms": ms(percentile(values, 50)), "p99_ms": ms(percentile(values, 99)),
            "max_ms": ms(max(values) if values else None)}


def emit(result: dict[str, Any]) -> None:
    """The benchmark's last line: one JSON object."""
    print(json.dumps(result, sort_keys=False), flush=True)


@contextmanager
def world(tmp: Path | None = None, *, unlimited_slack: bool = True) -> Iterator[tuple[Stack, EmbeddedRedis, Path]]:
    """A redis-server child and both emulators (threads of this process, so apart from the app's)."""
    with tempfile.TemporaryDirectory(prefix="sa-bench-") as name:
        root = tmp or Path(name)
        redis = EmbeddedRedis(root / "redis")
        try:
            stack = Stack(redis.url, data_dir=root / "var")
            with stack:
                if unlimited_slack:
                    # One emulated workspace stands for many: Slack's per-workspace limits must
                    # not be what is measured.
                    stack.slack.configure(rate_limits=RateLimitConfig(enabled=False), stream_lifetime=3600)
                yield stack, redis, root
        finally:
            redis.close()


@dataclass
class ProcSample:
    cpu_seconds: float
    rss_mb: float
    at: float


def sample(pid: int) -> ProcSample:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(stat[11]) + int(stat[12])) / CLK_TCK  # utime, stime
    rss_kb = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return ProcSample(cpu, rss_kb / 1024, time.monotonic())


def cpu_percent(before: ProcSample, after: ProcSample) -> float:
    wall = after.at - before.at
    return round(100 * (after.cpu_seconds - before.cpu_seconds) / wall, 1) if wall > 0 else 0.0


def tcp_connections(pid: int, ports: dict[str, int]) -> dict[str, int]:
    """The process's established TCP connections, by the remote port's name (others: 'other')."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    names = {port: name for name, port in ports.items()}
    counts = {name: 0 for name in ports} | {"other": 0}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] != "01" or parts[9] not in inodes:  # 01: ESTABLISHED
                continue
            remote_port = int(parts[2].rsplit(":", 1)[1], 16)
            counts[names.get(remote_port, "other")] += 1
    counts["total"] = sum(counts.values())
    return counts


def port_of(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1].split("/")[0])


class Questions:
    """Opens tickets the way the web role does (the app's `Intake`: ticket, inbox message and
    job in one atomic Redis step), from this process: the worker benchmarks measure workers, so
    they need no web process. The question is also stored in the Slack emulator, as the thread's
    parent message."""

    def __init__(self, stack: Stack, redis_url: str) -> None:
        self.stack = stack
        self.redis = connect(redis_url)
        store = TicketStore(self.redis)
        self.intake = Intake(store, JobQueue(self.redis, consumer="bench"), stack.config)

    async def ask(self, text: str, team: str | None = None) -> str:
        st = self.stack.slack.state
        with st.lock:
            ts = st.new_ts()
            body = f"<@{st.bot_user_id}> {text}"
            st.store_message(CHANNEL, {"type": "message", "user": "U0001", "text": body, "ts": ts,
                                       "team": st.team_id})
        team = team or st.team_id
        event = {"type": "app_mention", "user": "U0001", "text": body, "ts": ts, "channel": CHANNEL,
                 "event_ts": ts, "team": team}
        await self.intake.handle(event_id=f"Ev{uuid.uuid4().hex[:12]}", team_id=team, event=event,
                                 bot_user_id=st.bot_user_id, bot_id=st.bot_id)
        return ts

    async def aclose(self) -> None:
        await self.redis.aclose()
