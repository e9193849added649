"""Slack's HTTP requests, checked before anything parses them, then handed to Bolt.

Order matters, and is the point of this module (Bolt parses a body before it checks the
signature, so `{"type": ` from anyone was a 500 with a traceback):

1. the signature (`v0=` HMAC-SHA256 of `v0:<timestamp>:<raw body>` with the signing secret)
   over the raw bytes, the timestamp an integer within five minutes: else 401;
2. the body decoded and parsed once, strictly: UTF-8, JSON objects only, bounded nesting;
   a form body for slash commands, a `payload=` form field for interactivity: else 400;
3. the payload's shape (app.slack.edge_models): else 400; an event type nobody handles gets
   Slack's expected 200 and goes no further;
4. Bolt dispatches it (its own verification, when on, passes by construction), except a
   message or a mention when the edge is given `on_message`: that is handed straight to intake,
   which is all Bolt would run for it (its one listener), at a third of the cost per request.

Each refusal is one log line with the reason and never the body; no traceback, no Sentry event.
Bodies are size- and time-bounded before this runs (app.http_limits).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from slack_bolt.adapter.starlette.async_handler import to_starlette_response
from slack_bolt.async_app import AsyncApp, AsyncBoltRequest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.redis_health import is_outage
from app.slack.edge_models import INTERACTIVE_MODELS, EventCallback, SlashCommand, UrlVerification

log = logging.getLogger(__name__)

# The event types whose only listener is intake's (app.slack.bolt_app.on_message_event).
MESSAGE_EVENTS = frozenset({"app_mention", "message"})
MessageHandler = Callable[[dict[str, Any]], Awaitable[None]]

MAX_DEPTH = 32
MAX_AGE_SECONDS = 5 * 60  # Slack's replay window for a request timestamp
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _depth_ok(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Nesting at most `limit` deep, checked without recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return False
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return True


def _json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise Refused(400, f"{what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise Refused(400, f"{what} is not a JSON object")
    if not _depth_ok(value):
        raise Refused(400, f"{what} is nested too deeply")
    return value


def parse_slack_body(text: str, content_type: str | None) -> dict[str, Any]:
    """The payload, parsed the way Bolt will parse it (`parse_body`), but refusing what Bolt
    would choke on. Bolt's rule: JSON when the content type says so or the body starts with
    `{`; else a form, whose `payload` field (interactivity) is JSON."""
    if not text:
        raise Refused(400, "empty body")
    if content_type == "application/json" or text.startswith("{"):
        return _json_object(text, "body")
    try:
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True, max_num_fields=100)
    except ValueError:
        raise Refused(400, "body is not a form") from None
    form = dict(fields)
    if len(form) != len(fields):
        raise Refused(400, "form field repeated")
    if "payload" in text:
        # Bolt looks for the substring, not the field: match it, or its parse would differ.
        if "payload" not in form:
            raise Refused(400, "form mentions payload but has no payload field")
        return _json_object(form["payload"], "payload")
    return form


def check_shape(payload: dict[str, Any], handled_events: Collection[str]) -> str | None:
    """Validate the payload's shape; returns "ignore" for an event nobody handles."""
    kind = payload.get("type")
    model: type[BaseModel]
    if payload.get("ssl_check") == "1" and "command" not in payload:
        return "ignore"  # Slack's certificate check of a command URL: a 200 is all it wants
    if "command" in payload and kind is None:
        model = SlashCommand
    elif kind == "event_callback":
        model = EventCallback
    elif kind == "url_verification":
        model = UrlVerification
    elif isinstance(kind, str) and kind in INTERACTIVE_MODELS:
        model = INTERACTIVE_MODELS[kind]
    else:
        raise Refused(400, "unknown payload type")
    try:
        parsed = model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        raise Refused(400, f"malformed {kind or 'command'}: {where}") from None
    if isinstance(parsed, EventCallback) and parsed.event.type not in handled_events:
        return "ignore"
    return None


class SlackEdge:
    """The endpoint for /slack/events, /slack/interactive and /slack/commands."""

    def __init__(
        self,
        bolt: AsyncApp,
        signing_secret: str,
        handled_events: Collection[str],
        on_message: MessageHandler | None = None,
    ) -> None:
        self.bolt = bolt
        self.on_message = on_message
        if not signing_secret.strip():
            raise ValueError("a blank signing secret verifies nothing")
        self.secret = signing_secret.encode()
        self.handled_events = frozenset(handled_events)

    def verify(self, raw: bytes, headers: Any) -> None:
        timestamp = headers.get("x-slack-request-timestamp") or ""
        signature = headers.get("x-slack-signature") or ""
        if not _TIMESTAMP.match(timestamp) or not _SIGNATURE.match(signature):
            raise Refused(401, "missing or malformed signature headers")
        if abs(time.time() - int(timestamp)) > MAX_AGE_SECONDS:
            raise Refused(401, "stale timestamp")
        # Over the raw bytes: the SDK's verifier decodes the body as UTF-8 first, and raises on
        # anything else, which made a non-UTF-8 body from anyone a 500.
        base = b"v0:" + timestamp.encode() + b":" + raw
        expected = "v0=" + hmac.new(self.secret, base, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise Refused(401, "bad signature")

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        try:
            raw = await request.body()
            self.verify(raw, request.headers)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(400, "body is not UTF-8") from None
            content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower() or None
            payload = parse_slack_body(text, content_type)
            if check_shape(payload, self.handled_events) == "ignore":
                event = payload.get("event") or {}
                log.info("slack request ignored", extra={"path": path, "event_type": event.get("type")})
                return JSONResponse({"ok": True})
            if self.on_message is not None and _is_message(payload):
                return await self._message(payload)
            try:
                bolt_request = AsyncBoltRequest(body=text, query=request.query_params, headers=request.headers)  # type: ignore[arg-type]
            except Exception as exc:  # Bolt's context builder disagreed with our shape check
                raise Refused(400, f"bolt could not read the payload ({type(exc).__name__})") from None
        except Refused as refused:
            extra = {"path": path, "status": refused.status, "reason": refused.reason}
            log.warning("slack request refused", extra=extra)
            return JSONResponse({"ok": False, "error": "invalid request"}, status_code=refused.status)
        return to_starlette_response(await self.bolt.async_dispatch(bolt_request))

    async def _message(self, payload: dict[str, Any]) -> Response:
        """Intake for a message, acknowledged once it is committed; on any failure a 500, so
        Slack retries the delivery (intake commits all of it or nothing)."""
        assert self.on_message is not None
        try:
            await self.on_message(payload)
        except Exception as exc:
            if is_outage(exc):
                log.warning("slack message not taken: redis unreachable", extra={"error": repr(exc)})
            else:
                log.exception("slack message not taken")
            return Response(status_code=500)
        return Response(status_code=200)


def _is_message(payload: dict[str, Any]) -> bool:
    event = payload.get("event")
    return payload.get("type") == "event_callback" and isinstance(event, dict) and event.get("type") in MESSAGE_EVENTS
