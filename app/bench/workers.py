"""`support-agent bench workers --sessions K`: one worker process following K running sessions.

A real worker process (`support-agent worker`) against one redis-server; the Slack and Managed
Agents emulators run in this (the benchmark's) process. K questions open K tickets, through the
app's `Intake` called from this process (the web role is `bench intake`'s subject). Each
session's agent then says `tick <i> <question>` every `--interval` seconds (about 2 s) for the
whole run. Once the sessions run (or `--start-timeout` passed), the worker is measured for
`--window` seconds: CPU (share of one core) and RSS from /proc, its established TCP connections
by peer (Slack, Managed Agents, other; Redis is a unix socket), and for every tick emitted in the
window the delay from the emulator emitting it to the first Slack API call carrying its text.
Sessions followed: sessions with a tick in Slack during the window.

Slack's rate limits are off in the emulator and each ticket comes from a workspace of its own,
so neither Slack's limits nor the app's per-workspace budgets are what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from app.bench import bench_subparsers
from app.bench.common import Questions, cpu_percent, emit, port_of, sample, summary_ms, tcp_connections, world
from app.sandbox.stack import Stack

TICK = re.compile(r"tick (\d+) bench-s(\d+)\b")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = bench_subparsers(subparsers)
    p = sub.add_parser("workers", help="one worker process following K running sessions (an event every ~2 s)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=100, help="running sessions (default 100)")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between a session's events (default 2)")
    p.add_argument("--window", type=float, default=20.0, help="measured seconds (default 20)")
    p.add_argument("--start-timeout", type=float, default=120.0, help="how long the sessions may take to start")
    p.add_argument("--logs", type=Path, default=None, help="keep Redis data and the processes' logs in this folder")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args.sessions, interval=args.interval, window=args.window,
                             start_timeout=args.start_timeout, logs=args.logs))
    emit(result)
    return 0


async def run(sessions: int, *, interval: float = 2.0, window: float = 20.0,
              start_timeout: float = 120.0, logs: Path | None = None) -> dict[str, Any]:
    with world(logs) as (stack, redis, root):
        total = start_timeout + window + 30
        steps: list[dict[str, Any]] = []
        for i in range(int(total / interval) + 1):
            steps += [{"sleep": interval}, {"message": f"tick {i} {{user_text}}", "deltas": 1}]
        stack.agents.set_scenario({"rules": [{"match": None, "steps": steps}]})
        worker = stack.start_process("worker", log_path=root / "worker.log", WORKER_ID="bench-worker")
        assert worker.proc is not None
        pid = worker.proc.pid
        began = time.monotonic()
        questions = Questions(stack, redis.url)
        try:
            # Each ticket from a workspace of its own: the app's per-workspace Slack budgets
            # must not bind either.
            for k in range(sessions):
                await questions.ask(f"bench-s{k}", team=f"TB{k:06d}")
        finally:
            await questions.aclose()
        await _wait_running(stack, sessions, began + start_timeout)
        start_seconds = time.monotonic() - began
        started = _running(stack)
        await asyncio.sleep(min(interval, 2.0))  # every session past its first tick
        before, wall_start = sample(pid), time.time()
        emulators_before = sample(os.getpid())
        ports = {"slack": port_of(stack.slack.url), "agents": port_of(stack.agents.url)}
        connections: list[dict[str, int]] = []
        rss_peak = before.rss_mb
        while time.time() - wall_start < window:
            await asyncio.sleep(min(2.0, window / 4))
            connections.append(tcp_connections(pid, ports))
            rss_peak = max(rss_peak, sample(pid).rss_mb)
        after, wall_end = sample(pid), time.time()
        emulators_after = sample(os.getpid())
        latencies, followed, missing = _latencies(stack, wall_start, wall_end - interval)
        mid = connections[len(connections) // 2] if connections else {}
        return {
            "bench": "workers",
            "sessions": sessions,
            "sessions_running": started,
            "sessions_followed": followed,
            "start_seconds": round(start_seconds, 1),
            "window_seconds": window,
            "interval_seconds": interval,
            "events_measured": len(latencies),
            "events_not_in_slack": missing,
            "event_to_slack": summary_ms(latencies),
            "cpu_percent": cpu_percent(before, after),
            # This process: the two emulators (and the measuring). Near 100 % it is what limits.
            "emulators_cpu_percent": cpu_percent(emulators_before, emulators_after),
            "rss_mb": round(after.rss_mb, 1),
            "rss_peak_mb": round(rss_peak, 1),
            "connections": mid,
            "connections_max_total": max((c["total"] for c in connections), default=0),
            "slack_calls_per_event": _calls_per_event(stack, wall_start, wall_end, len(latencies)),
            "note": "2-core machine shared with other work; emulators and load in the bench process",
        }


async def _wait_running(stack: Stack, sessions: int, deadline: float) -> None:
    while _running(stack) < sessions and time.monotonic() < deadline:  # noqa: ASYNC110 (polls another thread)
        await asyncio.sleep(0.5)


def _running(stack: Stack) -> int:
    return sum(1 for s in stack.agents.state.sessions_snapshot() if s.get("status") == "running")


def _latencies(stack: Stack, since: float, until: float) -> tuple[list[float], int, int]:
    """Emit-to-Slack delays of the ticks emitted in [since, until], and the sessions they cover."""
    emitted: dict[tuple[str, str], float] = {}
    for session in stack.agents.state.sessions_snapshot():
        for event in stack.agents.state.events(str(session["id"])):
            if event.get("type") != "agent.message" or not event.get("processed_at"):
                continue
            text = "".join(b.get("text", "") for b in event.get("content") or [])
            match = TICK.search(text)
            at = datetime.fromisoformat(str(event["processed_at"]).replace("Z", "+00:00")).timestamp()
            if match and since <= at <= until:
                emitted[(match[1], match[2])] = at
    shown: dict[tuple[str, str], float] = {}
    for call in stack.slack.state.calls():
        if call.time < since:
            continue
        for match in TICK.finditer(json.dumps(call.params)):
            shown.setdefault((match[1], match[2]), call.time)
    delays = [max(0.0, shown[key] - at) for key, at in emitted.items() if key in shown]
    followed = len({key[1] for key in emitted if key in shown})
    return delays, followed, len(emitted) - len(delays)


def _calls_per_event(stack: Stack, since: float, until: float, events: int) -> float | None:
    calls = sum(1 for c in stack.slack.state.calls() if since <= c.time <= until)
    return round(calls / events, 2) if events else None
