"""`support-agent bench intake --rate R --seconds S`: signed Slack events, open loop, into a
real web process; and the same load into a bare endpoint that only verifies and enqueues.

Both servers are processes of their own on one redis-server: the web role (`support-agent
web`: edge checks, Bolt, the atomic intake commit) and a bare ASGI app that checks the same
signature (slack_sdk's `SignatureVerifier`) and does one XADD. Each gets R events per second for
S seconds, each event sent at its scheduled time whatever the previous ones are doing (open loop),
so a slow server meets a queue, as it would with Slack. Every event is an `app_mention` opening
its own thread: one ticket and one job each. Ack latency counts from the scheduled send time.
Figures per server: ack p50/p99/max, errors (non-200, timeouts, refused), events that became
jobs (the job stream's length; no worker runs), and the server process's CPU per event (from
/proc, over the load and its drain): on a machine shared with other work the latencies say how
busy the machine was as much as how fast the server is, the CPU per event much less so.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from app.bench import bench_subparsers
from app.bench.common import CHANNEL, ProcSample, emit, sample, summary_ms, world
from app.jobs.queue import STREAM
from app.redis_conn import connect
from app.sandbox.app_runner import ROOT, AppProcess, free_socket, wait_healthy
from app.sandbox.slack import EventSender
from app.sandbox.stack import SIGNING_SECRET

BARE_STREAM = "bench:bare"
_SERIAL = itertools.count(1)  # message ts are unique across the run: intake dedupes channel+ts
_BASE_SECOND = int(time.time())
ACK_TIMEOUT = 10.0
START_TIMEOUT = 120.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = bench_subparsers(subparsers)
    p = sub.add_parser("intake", help="open-loop signed events into the web role vs a bare verify+XADD endpoint",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rate", type=float, default=200.0, help="events per second (default 200)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of load per server (default 10)")
    p.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    result = asyncio.run(run(args.rate, args.seconds))
    emit(result)
    return 0


async def run(rate: float, seconds: float) -> dict[str, Any]:
    with world() as (stack, redis_server, root):
        bare_socket = free_socket()
        bare_port = bare_socket.getsockname()[1]
        bare = _start_bare(bare_socket, redis_server.url, root / "bare.log")  # starts while the web role does
        web = AppProcess(stack.env(), role="web", log_path=root / "web.log")
        stack.apps.append(web)
        web.start(wait=False)  # the caller waits, longer than start's 30 s
        stack.slack.set_app_url(f"{web.url}/slack/events")
        r = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
        try:
            # A loaded machine can take far longer than a test's 30 s to import and start both.
            wait_healthy(web.url, timeout=START_TIMEOUT, proc=web.proc)
            wait_healthy(f"http://127.0.0.1:{bare_port}", timeout=START_TIMEOUT, proc=bare)
            sender = stack.slack.events
            app_url = f"{web.url}/slack/events"
            # One warm-up event each (Bolt's first auth.test, connections, imports) not counted.
            await _load(sender, app_url, 1, 1.0, "warm")
            await _load(sender, f"http://127.0.0.1:{bare_port}/slack/events", 1, 1.0, "warm")
            jobs_before = await r.xlen(STREAM)
            assert web.proc is not None
            cpu_before = sample(web.proc.pid)
            app_result = await _load(sender, app_url, rate, seconds, "app")
            app_result["jobs"] = await _settled_len(r, STREAM) - jobs_before
            app_result["cpu_ms_per_event"] = _cpu_ms(cpu_before, sample(web.proc.pid), app_result["events"])
            bare_before = await r.xlen(BARE_STREAM)
            cpu_before = sample(bare.pid)
            bare_result = await _load(sender, f"http://127.0.0.1:{bare_port}/slack/events", rate, seconds, "bare")
            bare_result["jobs"] = await _settled_len(r, BARE_STREAM) - bare_before
            bare_result["cpu_ms_per_event"] = _cpu_ms(cpu_before, sample(bare.pid), bare_result["events"])
        finally:
            await r.aclose()
            bare.terminate()
            bare.wait(10)
    p99, bare_p99 = app_result["p99_ms"], bare_result["p99_ms"]
    return {
        "bench": "intake",
        "rate": rate,
        "seconds": seconds,
        "app": app_result,
        "bare": bare_result,
        "p99_ratio": round(p99 / bare_p99, 2) if p99 and bare_p99 else None,
        "note": "2-core machine shared with other work; load generator, emulators and both servers on it",
    }


async def _load(sender: EventSender, url: str, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    count = max(1, round(rate * seconds))
    latencies: list[float] = []
    errors: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=ACK_TIMEOUT)) as http:

        def signed(i: int) -> tuple[bytes, dict[str, str]]:
            ts = f"{_BASE_SECOND}.{next(_SERIAL):06d}"
            event = {"type": "app_mention", "user": "U0001", "text": f"<@UBOT> bench {tag} {i}", "ts": ts,
                     "channel": CHANNEL, "event_ts": ts, "team": "T0001", "channel_type": "channel"}
            body = json.dumps(sender.envelope(event)).encode()
            return body, sender.signed_headers(body, "application/json")

        # Built and signed before the clock starts (well inside Slack's 5-minute window), so the
        # load generator's own work does not compete with the server it measures.
        requests = [signed(i) for i in range(count)]

        async def one(i: int, due: float) -> None:
            body, headers = requests[i]
            try:
                async with http.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                return
            latencies.append(time.monotonic() - due)

        start = time.monotonic() + 0.05
        tasks = []
        for i in range(count):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    return {"events": count, **summary_ms(latencies), "errors": sum(errors.values()), "error_kinds": errors}


def _start_bare(sock: socket.socket, redis_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    """The bare endpoint's process, listening on `sock` (bound here, inherited: no port race)."""
    sock.set_inheritable(True)
    with sock, open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from app.bench.intake import serve_bare; serve_bare(*sys.argv[1:])",
             str(sock.fileno()), redis_url, SIGNING_SECRET],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL, stderr=log,
            pass_fds=(sock.fileno(),),
        )


def _cpu_ms(before: ProcSample, after: ProcSample, events: int) -> float:
    return round(1000 * (after.cpu_seconds - before.cpu_seconds) / max(events, 1), 3)


async def _settled_len(r: aioredis.Redis, stream: str) -> int:
    return int(await r.xlen(stream))


def serve_bare(fd: str, redis_url: str, signing_secret: str) -> None:
    """The bare endpoint: verify the signature on the raw body, one XADD, 200."""
    import uvicorn
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(signing_secret)
    redis = connect(redis_url)  # the app's own pool: waits for a free connection, never fails at once

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        status = 200
        if scope["path"] != "/healthz":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            if verifier.is_valid_request(body, headers):
                await redis.xadd(BARE_STREAM, {"body": body})
            else:
                status = 401
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    uvicorn.run(app, fd=int(fd), log_level="warning", lifespan="on")
