"""Send fuzz cases to a real web role (uvicorn on 127.0.0.1, emulated Slack and Managed Agents)
and count what hostile input must never get: 5xx, crashes, Sentry events, error log lines,
tracebacks, bodies quoted in logs, Redis keys, unbounded memory.

Cases that must be refused run first, on their own, so every log line, Sentry event and
Redis key seen meanwhile is theirs; the accepted ones run after (their listeners may write).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import secrets
import socket
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
import sentry_sdk
import uvicorn
from pydantic import SecretStr
from sentry_sdk.transport import Transport

from app.fuzz.cases import CANARY, Case

WEBHOOK_KEY = "whsec_" + base64.b64encode(b"fuzz-webhook-signing-key-0123").decode()
MCP_TOKENS = {"MCP_TOKEN_INTERNAL": "sbk_mcp_fuzz_internal_token_0001", "MCP_TOKEN_CUSTOMERS": "sbk_mcp_fuzz_cust_0002"}
MEMORY_BOUND_MB = 96.0
HUNG_SECONDS = 5.0
PLACEHOLDER_URL = quote("http://127.0.0.1:9/never", safe="").encode()


@dataclass
class Figures:
    cases: int = 0
    rejected_cases: int = 0
    accepted_cases: int = 0
    status_5xx: int = 0
    status_5xx_rejected: int = 0
    rejected_not_4xx: int = 0  # must be refused, got through (2xx/3xx)
    crashes: int = 0  # the server stopped answering or died
    hung_connections: int = 0  # a lying Content-Length held the connection past HUNG_SECONDS
    sentry_events_rejected: int = 0
    sentry_events: int = 0
    error_logs_rejected: int = 0
    tracebacks_rejected: int = 0
    bodies_in_logs: int = 0
    redis_keys_from_rejected: int = 0
    error_logs_accepted: int = 0
    memory_growth_mb: float = 0.0
    memory_unbounded: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    by_label_5xx: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors = 0
        self.tracebacks = 0
        self.canaries = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
            if os.environ.get("FUZZ_DEBUG"):
                exc = record.exc_info[1] if record.exc_info else None
                print("ERRLOG", record.name, record.getMessage()[:200], repr(exc)[:300], file=sys.stderr)
        if record.exc_info:
            self.tracebacks += 1
        try:
            text = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        except Exception:
            text = ""
        if CANARY in text:
            self.canaries += 1


class _NoTransport(Transport):
    def capture_envelope(self, envelope: Any) -> None:
        return None


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError):
        return 0.0


def _slack_sign(secret: str, body: bytes, ts: str) -> str:
    from app.sandbox.slack import sign

    return sign(secret, body, ts)


class Fuzzer:
    def __init__(self, redis_url: str, data_dir: Path) -> None:
        self.redis_url = redis_url
        self.data_dir = data_dir
        self.sentry_count = 0
        self.response_url: Callable[[], str] | None = None

    def _headers(self, case: Case, body: bytes, signing_secret: str) -> dict[str, str]:
        headers = {"content-type": case.content_type, **case.headers}
        now = int(time.time())
        if case.target == "slack":
            if case.auth == "none":
                return headers
            garbage = secrets.choice(["12abc", "1e9", "+1", "-5", "1_700", "0x10"])
            stamp = {"stale": str(now - 600), "garbage_ts": garbage}.get(case.auth, str(now))
            sig = _slack_sign(signing_secret, body, stamp if stamp.isdigit() else str(now))
            if case.auth == "bad":
                sig = "v0=" + secrets.token_hex(32)
            headers.update({"x-slack-request-timestamp": stamp, "x-slack-signature": sig})
        elif case.target == "webhook":
            if case.auth == "none":
                return headers
            from standardwebhooks import Webhook

            msg_id = "msg_" + secrets.token_hex(8)
            sig = Webhook(WEBHOOK_KEY).sign(msg_id, datetime.now(UTC), body.decode("utf-8", "replace"))
            if case.auth == "bad":
                sig = "v1," + base64.b64encode(secrets.token_bytes(32)).decode()
            headers.update({"webhook-id": msg_id, "webhook-timestamp": str(now), "webhook-signature": sig})
        elif case.auth != "none":
            token = MCP_TOKENS["MCP_TOKEN_INTERNAL"] if case.auth == "valid" else "sbk_mcp_" + secrets.token_hex(12)
            headers["authorization"] = f"Bearer {token}"
        return headers

    async def _raw(self, port: int, case: Case, headers: dict[str, str]) -> int:
        """A request whose Content-Length lies (announces far more than is sent)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            head = f"POST {case.path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {case.declared_length}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
            writer.write(head.encode() + b"x" * 1000)
            await writer.drain()
            try:
                line = await asyncio.wait_for(reader.readline(), HUNG_SECONDS)
            except TimeoutError:
                return -1  # the server is still waiting for the announced bytes: hung
            return int(line.split()[1]) if line.startswith(b"HTTP/") else 0
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _send(self, client: httpx2.AsyncClient, port: int, case: Case, secret: str) -> int:
        body = b"x" * case.huge if case.huge else case.body
        if self.response_url is not None and PLACEHOLDER_URL in body:
            # A response URL the Slack emulator issued, as Slack would: each is good for a few uses.
            body = body.replace(PLACEHOLDER_URL, quote(self.response_url(), safe="").encode())
        headers = self._headers(case, body if not case.huge else b"", secret)
        if case.declared_length:
            return await self._raw(port, case, headers)
        try:
            response = await client.post(case.path, content=body, headers=headers)
        except (httpx2.RemoteProtocolError, httpx2.WriteError, httpx2.ReadError):
            return 413 if case.huge else 0  # the server answered early and closed while we wrote
        return response.status_code

    async def run(self, cases: list[Case], signing_secret: str | None = None) -> Figures:
        from app.runtime import build_services
        from app.sandbox.app_runner import free_socket
        from app.sandbox.stack import Stack
        from app.slack.bolt_app import build_bolt_app
        from app.web import build_web_app

        figures = Figures(cases=len(cases))
        started = time.monotonic()
        saved_env = {k: os.environ.get(k) for k in MCP_TOKENS}
        os.environ.update(MCP_TOKENS)
        capture = _Capture()
        root = logging.getLogger()
        old_level = root.level
        root.addHandler(capture)
        root.setLevel(logging.INFO)

        def count(event: Any, hint: Any) -> None:
            self.sentry_count += 1
            return None

        sentry_sdk.init(dsn="http://public@127.0.0.1:9/1", transport=_NoTransport, before_send=count,
                        traces_sample_rate=0.0, auto_session_tracking=False)
        stack = Stack(self.redis_url, data_dir=self.data_dir).start()
        # The emulators' uvicorn may have given uvicorn's loggers handlers of their own (and
        # propagate=False): count their lines too, or an "Exception in ASGI application" is missed.
        hooked = [lg for lg in (logging.getLogger("uvicorn"), logging.getLogger("uvicorn.error"))
                  if not lg.propagate]
        for lg in hooked:
            lg.addHandler(capture)
        secret = signing_secret or stack.slack.signing_secret
        self.response_url = lambda: stack.slack._new_response_url({"channel_id": "C0SUPPORT", "user_id": "U0ALICE"})
        settings = stack.settings(anthropic_webhook_signing_key=SecretStr(WEBHOOK_KEY),
                                  slack_signing_secret=SecretStr(secret))
        services = build_services(settings, stack.config)
        sock = free_socket()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        port = int(sock.getsockname()[1])
        server = uvicorn.Server(uvicorn.Config(build_web_app(services, build_bolt_app(services)),
                                               log_config=None, lifespan="on", access_log=False))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    raise RuntimeError("web role did not start")
                await asyncio.sleep(0.02)
            rejected = [c for c in cases if c.expect == "reject"]
            accepted = [c for c in cases if c.expect == "accept"]
            figures.rejected_cases, figures.accepted_cases = len(rejected), len(accepted)
            statuses: Counter[str] = Counter()
            by_label: Counter[str] = Counter()
            timing: dict[str, float] = defaultdict(float)
            # TCP_NODELAY: headers and body go in two writes, and Nagle + delayed ACKs would
            # add 40 ms to every request on loopback.
            transport = httpx2.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                          transport=transport) as client:
                keys_before = await services.redis.dbsize()
                baseline = _rss_mb()
                for i, case in enumerate(rejected + accepted):
                    if i == len(rejected):  # the refused ones are done: what they left is theirs
                        await asyncio.sleep(0.2)
                        figures.redis_keys_from_rejected = await services.redis.dbsize() - keys_before
                        figures.error_logs_rejected = capture.errors
                        figures.tracebacks_rejected = capture.tracebacks
                        figures.sentry_events_rejected = self.sentry_count
                    if i == max(len(cases) // 5, 50):
                        baseline = _rss_mb()  # after warm-up: imports, pools, caches
                    t0 = time.monotonic()
                    status = await self._send(client, port, case, secret)
                    timing[case.label] += time.monotonic() - t0
                    statuses[str(status)] += 1
                    if status >= 500:
                        if os.environ.get("FUZZ_DEBUG"):
                            print("5xx", case.label, case.path, case.body[:300], file=sys.stderr)
                        figures.status_5xx += 1
                        by_label[case.label] += 1
                        if case.expect == "reject":
                            figures.status_5xx_rejected += 1
                    if case.expect == "reject" and 0 < status < 400:
                        figures.rejected_not_4xx += 1
                    if status == -1:
                        figures.hung_connections += 1
                    if status == 0 or task.done():
                        figures.crashes += 1
                        if task.done():
                            break
                if not accepted:
                    figures.redis_keys_from_rejected = await services.redis.dbsize() - keys_before
                    figures.error_logs_rejected = capture.errors
                    figures.tracebacks_rejected = capture.tracebacks
                    figures.sentry_events_rejected = self.sentry_count
                await asyncio.sleep(0.5)  # lazy listeners of the last accepted cases finish
                health = await client.get("/healthz")
                if health.status_code != 200:
                    figures.crashes += 1
            figures.error_logs_accepted = capture.errors - figures.error_logs_rejected
            figures.bodies_in_logs = capture.canaries
            figures.sentry_events = self.sentry_count
            figures.memory_growth_mb = round(max(0.0, _rss_mb() - baseline), 1)
            figures.memory_unbounded = int(figures.memory_growth_mb > MEMORY_BOUND_MB)
            figures.statuses = dict(sorted(statuses.items()))
            figures.by_label_5xx = dict(by_label)
            if os.environ.get("FUZZ_DEBUG"):
                print("TIMING", {k: round(v, 2) for k, v in sorted(timing.items(), key=lambda kv: -kv[1])},
                      file=sys.stderr)
        finally:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 15)
            with contextlib.suppress(Exception):
                await services.aclose()
            stack.stop()
            sentry_sdk.init(dsn=None)
            root.removeHandler(capture)
            for lg in hooked:
                lg.removeHandler(capture)
            root.setLevel(old_level)
            for k, v in saved_env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        figures.seconds = round(time.monotonic() - started, 1)
        return figures
