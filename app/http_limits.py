"""Bounded request bodies: a size cap (413) and a read deadline (408), before any app reads them.

Slack's payloads, Anthropic's webhooks and MCP JSON-RPC calls are all small; nothing in this
process needs a body of more than a few hundred kilobytes. Without a cap a 20 MB body is read
whole before its signature fails, and a client announcing 1 GB then trickling bytes holds a
connection open forever. This middleware reads the body itself, with both limits, and hands
the inner app a replay of it; a refused request gets a short JSON error and one log line
(never the body).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1_000_000
READ_TIMEOUT_SECONDS = 10.0
DEFAULT_PREFIXES = ("/slack/", "/webhooks/", "/mcp")


class BodyTooLarge(Exception):
    pass


async def send_error(send: Send, status: int, error: str) -> None:
    body = json.dumps({"ok": False, "error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimits:
    """ASGI middleware: requests under `prefixes` have their bodies read with limits first."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_bytes: int = MAX_BODY_BYTES,
        read_timeout: float = READ_TIMEOUT_SECONDS,
        prefixes: Iterable[str] = DEFAULT_PREFIXES,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self.prefixes = tuple(prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefixes):
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        declared = _content_length(scope)
        if declared == -1:
            log.warning("request refused", extra={"path": path, "reason": "bad content-length"})
            await send_error(send, 400, "bad_request")
            return
        if declared is not None and declared > self.max_bytes:
            log.warning("request refused", extra={"path": path, "reason": "body too large", "bytes": declared})
            await send_error(send, 413, "payload_too_large")
            return
        try:
            async with asyncio.timeout(self.read_timeout):
                body, disconnected = await self._read(receive)
        except BodyTooLarge:
            log.warning("request refused", extra={"path": path, "reason": "body too large"})
            await send_error(send, 413, "payload_too_large")
            return
        except TimeoutError:
            log.warning("request refused", extra={"path": path, "reason": "body read timed out"})
            await send_error(send, 408, "request_timeout")
            return
        if disconnected:
            return  # the client went away mid-body: nobody to answer
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> tuple[bytes, bool]:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b"", True
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False


def _content_length(scope: Scope) -> int | None:
    """The declared length: None when absent, -1 when unreadable."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 19 else -1
    return None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            message: dict[str, Any] = {"type": "http.request", "body": body, "more_body": False}
            return message
        return await receive()  # afterwards only a disconnect can come

    return replay
