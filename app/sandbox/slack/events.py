"""Signed requests from "Slack" to the app: Events API, slash commands, interactivity.

`sign()` produces the `X-Slack-Signature` value (v0, HMAC-SHA256 over `v0:{ts}:{body}`);
`EventSender` POSTs the exact signed bytes to the app's Request URL and reports the status and
how long the app took to answer (Slack wants an ack within 3 s).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2


def sign(signing_secret: str, body: bytes | str, timestamp: int | str) -> str:
    """`v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` keyed by the signing secret."""
    raw = body.encode() if isinstance(body, str) else body
    base = f"v0:{timestamp}:".encode() + raw
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    """What the app answered to one signed request."""

    status: int
    elapsed: float
    body: str
    headers: dict[str, str]
    kind: str
    event_id: str | None = None
    request: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "elapsed": self.elapsed, "body": self.body,
            "kind": self.kind, "event_id": self.event_id, "request": self.request,
        }


_counter = itertools.count(1)


def new_event_id() -> str:
    return f"Ev{int(time.time()):010d}{next(_counter):06d}"


def new_trigger_id() -> str:
    return f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"


class EventSender:
    """POSTs correctly signed Slack requests to `app_url` (the app's Request URL).

    `response_url_factory` / `trigger_id_factory` let the emulator hand out response URLs that
    point back at itself and trigger ids it can check; `on_delivery` records each delivery.
    """

    def __init__(
        self,
        app_url: str,
        signing_secret: str,
        *,
        team_id: str = "T0001",
        team_domain: str = "emulated",
        api_app_id: str = "A0001",
        bot_user_id: str = "UBOT",
        timeout: float = 10.0,
        response_url_factory: Callable[[dict[str, Any]], str] | None = None,
        trigger_id_factory: Callable[[str], str] | None = None,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        self.app_url = app_url
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.team_domain = team_domain
        self.api_app_id = api_app_id
        self.bot_user_id = bot_user_id
        self.timeout = timeout
        self.response_url_factory = response_url_factory
        self.trigger_id_factory = trigger_id_factory
        self.on_delivery = on_delivery

    # ---- low level ---------------------------------------------------------------------

    def signed_headers(self, body: bytes, content_type: str,
                       timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        return {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": sign(self.signing_secret, body, ts),
        }

    async def post(
        self,
        body: bytes,
        content_type: str,
        *,
        kind: str = "raw",
        event_id: str | None = None,
        timestamp: int | None = None,
        signature: str | None = None,
        extra_headers: dict[str, str] | None = None,
        request: dict[str, Any] | None = None,
    ) -> Delivery:
        """Sign and POST `body` as-is. `signature` overrides the computed one (negative tests)."""
        headers = self.signed_headers(body, content_type, timestamp)
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        headers.update(extra_headers or {})
        started = time.monotonic()
        async with httpx2.AsyncClient(timeout=self.timeout) as client:
            resp = await client.post(self.app_url, content=body, headers=headers)
        delivery = Delivery(
            status=resp.status_code, elapsed=time.monotonic() - started, body=resp.text,
            headers=dict(resp.headers), kind=kind, event_id=event_id, request=request or {},
        )
        if self.on_delivery is not None:
            self.on_delivery(delivery)
        return delivery

    # ---- Events API --------------------------------------------------------------------

    def envelope(self, event: dict[str, Any], *, event_id: str | None = None,
                 is_ext_shared_channel: bool = False) -> dict[str, Any]:
        now = int(time.time())
        event = dict(event)
        event.setdefault("event_ts", event.get("ts") or f"{time.time():.6f}")
        return {
            "token": "emulated-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.api_app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or new_event_id(),
            "event_time": now,
            "authorizations": [{
                "enterprise_id": None, "team_id": self.team_id, "user_id": self.bot_user_id,
                "is_bot": True, "is_enterprise_install": False,
            }],
            "is_ext_shared_channel": is_ext_shared_channel,
            "event_context": f"4-{secrets.token_hex(12)}",
        }

    async def send_event(
        self,
        event: dict[str, Any],
        *,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        is_ext_shared_channel: bool = False,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Delivery:
        """Deliver one inner event in an `event_callback` envelope. Pass the same `event_id`
        with `retry_num>=1` to emulate Slack's retries (X-Slack-Retry-Num / -Reason)."""
        body = self.envelope(event, event_id=event_id, is_ext_shared_channel=is_ext_shared_channel)
        return await self.send_envelope(body, retry_num=retry_num, retry_reason=retry_reason,
                                        timestamp=timestamp, signature=signature)

    async def send_envelope(
        self,
        body: dict[str, Any],
        *,
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> Delivery:
        extra = {}
        if retry_num:
            extra = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": retry_reason}
        raw = json.dumps(body).encode()
        return await self.post(
            raw, "application/json", kind=body.get("event", {}).get("type", body.get("type", "")),
            event_id=body.get("event_id"), timestamp=timestamp, signature=signature,
            extra_headers=extra, request=body,
        )

    async def url_verification(self, challenge: str = "emulated-challenge") -> Delivery:
        body = {"token": "emulated-verification-token", "challenge": challenge,
                "type": "url_verification"}
        return await self.post(json.dumps(body).encode(), "application/json",
                               kind="url_verification", request=body)

    # ---- slash commands ----------------------------------------------------------------

    async def send_command(
        self,
        command: str,
        text: str = "",
        *,
        user: str = "U0001",
        user_name: str = "alice",
        channel: str = "C0001",
        channel_name: str = "support",
        response_url: str | None = None,
        trigger_id: str | None = None,
    ) -> Delivery:
        """A slash command as Slack sends it (form-encoded)."""
        context = {"kind": "command", "channel": channel, "user": user, "command": command}
        form = {
            "token": "emulated-verification-token",
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": channel_name,
            "user_id": user,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": response_url or self._response_url(context),
            "trigger_id": trigger_id or self._trigger_id(user),
        }
        raw = urllib.parse.urlencode(form).encode()
        return await self.post(raw, "application/x-www-form-urlencoded", kind="command",
                               request=form)

    # ---- interactivity -----------------------------------------------------------------

    async def send_action(self, payload: dict[str, Any]) -> Delivery:
        """Any interactivity payload, sent as `payload=<json>` form body."""
        raw = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        return await self.post(raw, "application/x-www-form-urlencoded",
                               kind=str(payload.get("type", "interactive")), request=payload)

    def block_actions_payload(
        self,
        *,
        user: str,
        channel: str,
        message: dict[str, Any] | None,
        actions: list[dict[str, Any]],
        user_name: str = "",
        is_ephemeral: bool = False,
        response_url: str | None = None,
        trigger_id: str | None = None,
        view: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = f"{time.time():.6f}"
        acts = [{"type": "button", "action_ts": now, **a} for a in actions]
        container: dict[str, Any] = {"type": "message", "channel_id": channel,
                                     "is_ephemeral": is_ephemeral}
        if message is not None:
            container["message_ts"] = message.get("ts")
            if message.get("thread_ts"):
                container["thread_ts"] = message["thread_ts"]
        if view is not None:
            container = {"type": "view", "view_id": view.get("id")}
        msg = message or {}
        ctx = {"kind": "block_actions", "channel": channel, "user": user,
               "message_ts": msg.get("ts"), "thread_ts": msg.get("thread_ts")}
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user, "username": user_name, "name": user_name, "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": "emulated-verification-token",
            "container": container,
            "trigger_id": trigger_id or self._trigger_id(user),
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": ""},
            "state": {"values": {}},
            "response_url": response_url or self._response_url(ctx),
            "actions": acts,
        }
        if message is not None:
            payload["message"] = message
        if view is not None:
            payload["view"] = view
            payload.pop("channel")
        return payload

    async def send_block_actions(self, **kwargs: Any) -> Delivery:
        """Build a `block_actions` payload (see `block_actions_payload`) and send it."""
        return await self.send_action(self.block_actions_payload(**kwargs))

    async def send_view_submission(
        self,
        *,
        user: str,
        view: dict[str, Any],
        values: dict[str, dict[str, Any]] | None = None,
        user_name: str = "",
    ) -> Delivery:
        """`view_submission` for a view (as returned by views.open) with form `values`
        shaped `{block_id: {action_id: {"type": ..., "value": ...}}}`."""
        v = dict(view)
        v["state"] = {"values": values or {}}
        payload = {
            "type": "view_submission",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "user": {"id": user, "username": user_name, "name": user_name, "team_id": self.team_id},
            "api_app_id": self.api_app_id,
            "token": "emulated-verification-token",
            "trigger_id": self._trigger_id(user),
            "view": v,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return await self.send_action(payload)

    # ---- helpers -----------------------------------------------------------------------

    def _response_url(self, context: dict[str, Any]) -> str:
        if self.response_url_factory is not None:
            return self.response_url_factory(context)
        return "https://hooks.slack.com/commands/emulated/unused"

    def _trigger_id(self, user: str) -> str:
        if self.trigger_id_factory is not None:
            return self.trigger_id_factory(user)
        return new_trigger_id()
