"""`support-agent bench takeover --kills N`: SIGKILL the worker following a ticket, N times;
how long until the ticket's thread gets its next Slack call (from the worker that took over).

Two real worker processes (`support-agent worker`) against one redis-server and the emulators
(in this process); the ticket is opened through the app's `Intake` from this process. It plays
a long agent turn (a message every half second). Each round: find the lease holder in Redis,
SIGKILL it, note the time, wait for the first Slack API call after it, start a replacement
worker. Settings are the defaults
(`LEASE_SECONDS`, the worker's reaper poll), unless `--lease-seconds` says otherwise.

Slack calls the killed process had already sent can still land a few milliseconds after the
kill: calls within `--guard` seconds of it (default 0.25 s) are not counted as the takeover.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import redis as sync_redis

from app.bench import bench_subparsers
from app.bench.common import CHANNEL, DEFAULT_LEASE_SECONDS, Questions, emit, ms, percentile, world
from app.sandbox.app_runner import AppProcess
from app.sandbox.stack import Stack

STEP_SECONDS = 0.5
START_TIMEOUT = 120.0  # a worker's start (imports) on a loaded machine


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = bench_subparsers(subparsers)
    p = sub.add_parser("takeover", help="SIGKILL the following worker N times: kill to first new Slack call",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=5, help="rounds (default 5)")
    p.add_argument("--lease-seconds", type=float, default=None,
                   help=f"LEASE_SECONDS for the workers (default: the setting's default, {DEFAULT_LEASE_SECONDS:g})")
    p.add_argument("--guard", type=float, default=0.25, help="seconds after a kill not counted (in-flight calls)")
    p.add_argument("--timeout", type=float, default=30.0, help="give up on a round after this long")
    p.add_argument("--logs", type=Path, default=None, help="keep the processes' logs in this folder")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args.kills, lease_seconds=args.lease_seconds, guard=args.guard,
                             timeout=args.timeout, logs=args.logs))
    emit(result)
    return 0 if result["errors"] == 0 else 1


async def run(kills: int, *, lease_seconds: float | None = None, guard: float = 0.25,
              timeout: float = 30.0, logs: Path | None = None) -> dict[str, Any]:
    lease = lease_seconds or DEFAULT_LEASE_SECONDS
    with tempfile.TemporaryDirectory(prefix="sa-takeover-") as tmp, world() as (stack, redis_server, _):
        log_dir = logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {"LEASE_SECONDS": f"{lease:g}", "LOG_LEVEL": "INFO"}
        # Long enough for every round, its wait and the replacement's start.
        steps: list[dict[str, Any]] = []
        for i in range(math.ceil((kills * (timeout / 2 + 4) + 20) / STEP_SECONDS)):
            steps += [{"message": f"step {i}", "deltas": 1}, {"sleep": STEP_SECONDS}]
        stack.agents.set_scenario({"rules": [{"match": None, "steps": steps}]})
        workers: dict[str, AppProcess] = {}
        serial = 0

        async def start_worker() -> None:
            nonlocal serial
            serial += 1
            name = f"bench-worker-{serial}"
            log_path = log_dir / f"{name}.log"
            workers[name] = stack.start_process("worker", log_path=log_path, WORKER_ID=name, **env)
            # A round starts only once the replacement is taking jobs (imports take seconds).
            await _until(lambda: log_path.exists() and "worker started" in log_path.read_text(), START_TIMEOUT)

        await start_worker()
        await start_worker()
        r = sync_redis.Redis.from_url(redis_server.url, decode_responses=True)
        questions = Questions(stack, redis_server.url)
        ts = await questions.ask("takeover bench: a long job")
        await questions.aclose()
        errors = 0
        takeovers: list[float] = []
        rounds: list[dict[str, Any]] = []
        try:
            # Kill mid-turn: once the turn streams (a worker killed while it creates the agent,
            # vault or session leaves their first-use lock behind, up to 35 s: not this measure).
            await _until(lambda: _shows(stack, "step 1"), START_TIMEOUT)
            for round_no in range(kills):
                holder = await _until(lambda: _holder(r), timeout)
                if holder is None or holder not in workers:
                    errors += 1
                    break
                await asyncio.sleep(0.5)  # somewhere inside a renewal period
                killed_at = time.time()
                workers.pop(holder).kill()
                first = await _until(lambda after=killed_at + guard: _calls_after(stack, after), timeout)
                if first is None:
                    errors += 1
                    rounds.append({"killed": holder, "takeover_ms": None})
                else:
                    takeovers.append(first - killed_at)
                    rounds.append({"killed": holder, "takeover_ms": ms(first - killed_at), "new_holder": _holder(r)})
                if round_no < kills - 1:
                    await start_worker()
        finally:
            r.close()
        thread = stack.slack.state.thread(CHANNEL, ts)
        return {
            "bench": "takeover",
            "kills": kills,
            "lease_seconds": lease,
            "takeover_p50_ms": ms(percentile(takeovers, 50)),
            "takeover_max_ms": ms(max(takeovers) if takeovers else None),
            "takeovers": len(takeovers),
            "errors": errors,
            "rounds": rounds,
            "bot_messages": sum(1 for m in thread if m.get("bot_id")),
            "note": "2-core machine shared with other work; emulators in the bench process",
        }


async def _until(check: Any, timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        await asyncio.sleep(interval)
    return None


def _holder(r: sync_redis.Redis) -> str | None:
    for key in r.scan_iter("sa:lease:*"):
        value = r.get(key)
        if value:
            return str(value).rsplit(":", 1)[0]
    return None


def _shows(stack: Stack, text: str) -> bool:
    return any(text in json.dumps(call.params) for call in stack.slack.state.calls())


def _calls_after(stack: Stack, after: float) -> float | None:
    for call in stack.slack.state.calls():
        if call.time > after and call.method != "auth.test":
            return call.time
    return None
