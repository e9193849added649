"""Slack emulator: a Starlette app serving the Web API at `/api/<method>` over real HTTP.

    emu = SlackEmulator().start()
    client = AsyncWebClient(token=emu.bot_token, base_url=emu.api_url)
    emu.set_app_url(f"{app_server.url}/slack/events")
    ts = await emu.user_posts("C0001", "help, the VPN is down")   # app_mention + message
    emu.state.thread("C0001", ts)                                  # root + replies, stream text
    emu.stop()

Control endpoints under `/_emulator/...` expose the same for tests in another process.
Method handlers live in `slack_methods`, the workspace in `slack_state`, limits in
`slack_ratelimit`, signed delivery to the app in `slack_events`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.sandbox.server import ServerThread
from app.sandbox.slack.content import ApiError, Ctx, decode_json_fields
from app.sandbox.slack.contract import GENERIC_ERRORS, check_call, documented_errors
from app.sandbox.slack.events import Delivery, EventSender, new_trigger_id
from app.sandbox.slack.methods import METHODS
from app.sandbox.slack.ratelimit import MethodLimit, RateLimitConfig
from app.sandbox.slack.state import DEFAULT_STREAM_LIFETIME, CallRecord, Channel, SlackState

# Malformed-payload errors a method may have no name for in its catalog.
SHAPE_ERRORS = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long", "invalid_chunks", "no_text",
})

__all__ = [
    "CallRecord",
    "Delivery",
    "EventSender",
    "MethodLimit",
    "RateLimitConfig",
    "SlackEmulator",
    "SlackState",
]


class SlackEmulator:
    """One emulated workspace with its Web API, served on 127.0.0.1 by `start()`."""

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        signing_secret: str = "test-signing-secret",
        team_id: str = "T0001",
        *,
        app_url: str | None = None,
        rate_limits: RateLimitConfig | None = None,
        stream_lifetime: float = DEFAULT_STREAM_LIFETIME,
        echo_bot_messages: bool = True,
        seed: bool = True,
        bot_user_id: str = "UBOT",
        bot_id: str = "B0001",
        app_id: str = "A0001",
    ) -> None:
        self.bot_token = bot_token
        self.signing_secret = signing_secret
        self.state = SlackState(
            team_id=team_id, bot_token=bot_token, bot_user_id=bot_user_id, bot_id=bot_id,
            app_id=app_id, rate_limits=rate_limits, stream_lifetime=stream_lifetime, seed=seed,
        )
        self.app_url = app_url
        self.echo_bot_messages = echo_bot_messages
        self._server: ServerThread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.app = self._build_app()

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self) -> SlackEmulator:
        self._server = ServerThread(self.app).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self.state.undocumented:
            made_up = sorted(set(self.state.undocumented))
            self.state.undocumented.clear()
            raise AssertionError(f"the Slack emulator answered errors its methods do not document: {made_up}")

    def __enter__(self) -> SlackEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("SlackEmulator is not started")
        return self._server.url

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    def client(self, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
        """An `AsyncWebClient` pointed at this emulator (no retry handlers unless given)."""
        return AsyncWebClient(token=token or self.bot_token, base_url=self.api_url, **kwargs)

    # ---- configuration -----------------------------------------------------------------

    def set_app_url(self, url: str | None) -> None:
        """The app's Request URL (events, commands and interactivity all go there)."""
        self.app_url = url

    def configure(
        self,
        *,
        rate_limits: RateLimitConfig | dict[str, Any] | None = None,
        stream_lifetime: float | None = None,
        echo_bot_messages: bool | None = None,
    ) -> None:
        with self.state.lock:
            if isinstance(rate_limits, dict):
                rate_limits = self.state.limiter.config.updated(rate_limits)
            if rate_limits is not None:
                self.state.limiter.configure(rate_limits)
            if stream_lifetime is not None:
                self.state.stream_lifetime = float(stream_lifetime)
            if echo_bot_messages is not None:
                self.echo_bot_messages = echo_bot_messages

    @property
    def events(self) -> EventSender:
        """An `EventSender` to the configured app URL, wired to this emulator."""
        if not self.app_url:
            raise RuntimeError("no app URL: call set_app_url() first")
        st = self.state
        return EventSender(
            self.app_url, self.signing_secret, team_id=st.team_id, team_domain=st.domain,
            api_app_id=st.app_id, bot_user_id=st.bot_user_id,
            response_url_factory=self._new_response_url if self._server else None,
            trigger_id_factory=self.new_trigger, on_delivery=self._record_delivery,
        )

    def _new_response_url(self, context: dict[str, Any]) -> str:
        rid = uuid.uuid4().hex
        with self.state.lock:
            self.state.response_urls[rid] = context
        return f"{self.url}/_emulator/response/{rid}"

    def new_trigger(self, user: str) -> str:
        trigger = new_trigger_id()
        with self.state.lock:
            self.state.triggers[trigger] = {"issued": time.monotonic(), "user": user}
        return trigger

    def _record_delivery(self, delivery: Delivery) -> None:
        with self.state.lock:
            self.state.deliveries.append(delivery.to_dict())

    # ---- acting as users ---------------------------------------------------------------

    async def user_posts(
        self,
        channel: str,
        text: str,
        user: str = "U0001",
        thread_ts: str | None = None,
        mention_bot: bool = True,
    ) -> str:
        """Store a user's message and deliver what Slack would (bot mention: `app_mention`
        and `message`, different event_ids, same channel+ts). Returns the message ts."""
        ts, _ = await self.user_posts_detailed(channel, text, user, thread_ts, mention_bot)
        return ts

    async def user_posts_detailed(
        self,
        channel: str,
        text: str,
        user: str = "U0001",
        thread_ts: str | None = None,
        mention_bot: bool = True,
    ) -> tuple[str, list[Delivery]]:
        st = self.state
        with st.lock:
            ch = st.find_channel(channel)
            if ch is None:
                raise KeyError(f"unknown channel {channel}")
            mention = f"<@{st.bot_user_id}>"
            if mention_bot and mention not in text:
                text = f"{mention} {text}"
            msg: dict[str, Any] = {
                "type": "message", "user": user, "text": text, "ts": st.new_ts(),
                "team": st.team_id, "client_msg_id": str(uuid.uuid4()),
                "blocks": [{"type": "rich_text", "block_id": uuid.uuid4().hex[:5], "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}]}],
            }
            if thread_ts:
                msg["thread_ts"] = thread_ts
            st.store_message(ch.id, msg)
            event = self._message_event(ch, msg)
            bot_in = st.bot_user_id in ch.members
        deliveries: list[Delivery] = []
        if self.app_url and bot_in:
            sender = self.events
            if mention_bot and not ch.is_im:
                mention_event: dict[str, Any] = {k: event[k] for k in (
                    "user", "text", "ts", "channel", "event_ts", "team", "client_msg_id", "blocks",
                ) if k in event}
                mention_event["type"] = "app_mention"
                if thread_ts:
                    mention_event["thread_ts"] = thread_ts
                deliveries.append(await sender.send_event(
                    mention_event, is_ext_shared_channel=ch.is_ext_shared))
            deliveries.append(await sender.send_event(
                event, is_ext_shared_channel=ch.is_ext_shared))
        return msg["ts"], deliveries

    def _message_event(self, ch: Channel, msg: dict[str, Any]) -> dict[str, Any]:
        event = {k: copy.deepcopy(v) for k, v in msg.items()
                 if k not in ("reply_count", "reply_users", "reply_users_count", "latest_reply",
                              "reactions", "metadata")}
        event.update({"type": "message", "channel": ch.id, "event_ts": msg["ts"],
                      "channel_type": ch.channel_type})
        return event

    async def send_event(self, event: dict[str, Any], **kwargs: Any) -> Delivery:
        """Deliver an arbitrary inner event (see `EventSender.send_event`)."""
        return await self.events.send_event(event, **kwargs)

    async def send_command(self, command: str, text: str = "", **kwargs: Any) -> Delivery:
        return await self.events.send_command(command, text, **kwargs)

    async def click(
        self,
        channel: str,
        ts: str,
        action_id: str,
        user: str = "U0001",
        value: str | None = None,
    ) -> Delivery:
        """Click the element `action_id` on a stored message (buttons, feedback buttons...)."""
        msg = self.state.message(channel, ts)
        if msg is None:
            raise KeyError(f"no message {channel}/{ts}")
        msg.pop("stream", None)
        action = _find_action(msg.get("blocks") or [], action_id)
        if action is None:
            raise KeyError(f"no element with action_id={action_id} on {channel}/{ts}")
        if value is not None:
            action["value"] = value
        user_obj = self.state.users.get(user)
        return await self.events.send_block_actions(
            user=user, user_name=user_obj.name if user_obj else "", channel=channel,
            message=msg, actions=[action],
        )

    async def act_on_view(
        self,
        view_id: str,
        action_id: str,
        user: str = "U0001",
        *,
        block_id: str | None = None,
        selected_option: str | None = None,
        selected_conversation: str | None = None,
    ) -> Delivery:
        """Use the element `action_id` on a stored view (App Home or modal): click a button,
        pick the option whose value is `selected_option`, or pick a conversation. `block_id`
        tells apart elements that share an action id in different blocks."""
        with self.state.lock:
            view = copy.deepcopy(self.state.views.get(view_id))
        if view is None:
            raise KeyError(f"no view {view_id}")
        blocks = [b for b in view.get("blocks") or [] if block_id is None or b.get("block_id") == block_id]
        found = _find_element(blocks, action_id)
        if found is None:
            raise KeyError(f"no element with action_id={action_id} in view {view_id}")
        action, element = _action_of(*found), found[1]
        if selected_option is not None:
            option = next((o for o in element.get("options") or [] if o.get("value") == selected_option), None)
            if option is None:
                raise KeyError(f"{action_id} has no option {selected_option!r}")
            action["selected_option"] = option
        if selected_conversation is not None:
            action["selected_conversation"] = selected_conversation
        user_obj = self.state.users.get(user)
        return await self.events.send_block_actions(
            user=user, user_name=user_obj.name if user_obj else "", channel="", message=None,
            actions=[action], view=view,
        )

    # ---- echo of the bot's own posts ---------------------------------------------------

    def _echo_posts(self, posted: list[tuple[str, dict[str, Any]]]) -> None:
        if not (self.echo_bot_messages and self.app_url and posted):
            return
        with self.state.lock:
            events = [
                (self._message_event(self.state.channels[ch], msg), self.state.channels[ch])
                for ch, msg in posted if ch in self.state.channels
            ]
        for event, ch in events:
            task = asyncio.get_running_loop().create_task(self._deliver_quietly(event, ch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver_quietly(self, event: dict[str, Any], ch: Channel) -> None:
        try:
            await self.events.send_event(event, is_ext_shared_channel=ch.is_ext_shared)
        except Exception as exc:  # the app may be down; record, never crash the emulator
            with self.state.lock:
                self.state.deliveries.append({"status": 0, "kind": event.get("type"),
                                              "error": repr(exc), "request": event})

    # ---- HTTP ---------------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        from app.sandbox.slack.control import control_routes

        routes = [
            Route("/api/{method}", self._api, methods=["GET", "POST"]),
            *control_routes(self),
        ]

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            yield
            if self._tasks:  # let in-flight echo deliveries finish before the loop closes
                await asyncio.wait(set(self._tasks), timeout=2)

        return Starlette(routes=routes, lifespan=lifespan)

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        params, bad_body = await _read_params(request)
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        token = token or params.pop("token", None)
        params.pop("token", None)
        st = self.state
        record = CallRecord(method, params, {}, 200, time.time(), request.method)
        status, body, retry_after, posted = self._call(method, params, token, bad_body)
        record.response, record.status, record.retry_after = body, status, retry_after
        st.record_call(record)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        self._echo_posts(posted)
        return JSONResponse(body, status_code=status, headers=headers)

    def _call(
        self, method: str, params: dict[str, Any], token: str | None, bad_body: str | None,
    ) -> tuple[int, dict[str, Any], int | None, list[tuple[str, dict[str, Any]]]]:
        st = self.state
        # Slack: not_authed / invalid_auth / invalid_post_type are Web API common errors (contract.py
        # GENERIC_ERRORS); invalid_json for a malformed JSON body is unsourced (docs/emulator-rules.md).
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, None, []
        with st.lock:
            caller = st.tokens.get(token)
            if caller is None:
                return 200, {"ok": False, "error": "invalid_auth"}, None, []
            if bad_body:
                return 200, {"ok": False, "error": bad_body}, None, []
            fault = st.take_fault(method)
            if fault is not None:
                retry = fault.retry_after if fault.retry_after is not None else (
                    1 if fault.status == 429 else None)
                return fault.status, {"ok": False, "error": fault.error}, retry, []
            handler = METHODS.get(method)
            if handler is None:  # Slack: unknown_method (Web API basics) for a method not served here
                return 200, {"ok": False, "error": "unknown_method"}, None, []
            channel = params.get("channel") or params.get("channel_id")
            ch = st.find_channel(channel if isinstance(channel, str) else None)
            retry_after = st.limiter.check(st.team_id, method, ch.id if ch else str(channel))
            if retry_after is not None:  # Slack: rate-limits guide: HTTP 429, error ratelimited, Retry-After
                return 429, {"ok": False, "error": "ratelimited"}, retry_after, []
            ctx = Ctx(st, caller, params)
            try:
                check_call(method, params)  # the published contract first, then the method's own rules
                body = handler(ctx)
            except ApiError as err:
                error = err.error
                documented = documented_errors(method)
                if documented and error not in documented | GENERIC_ERRORS:
                    if error in SHAPE_ERRORS:
                        # A method whose catalog has no name for a malformed payload (views.*)
                        # answers the generic `invalid_arguments`, as Slack does.
                        error = "invalid_arguments"
                    else:
                        # Every refusal must be one Slack documents for the method
                        # (contracts/slack_methods.json): one made up here is an emulator bug.
                        st.undocumented.append((method, error))
                return 200, {"ok": False, "error": error, **err.extra}, None, []
            return 200, {"ok": True, **body}, None, ctx.posted


async def _read_params(request: Request) -> tuple[dict[str, Any], str | None]:
    """Query string plus a JSON, form or multipart body, as Slack accepts them."""
    params: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "").lower()
    raw = await request.body()
    bad: str | None = None
    if raw:
        if "application/json" in ctype:
            try:
                data = json.loads(raw)
            except ValueError:
                data, bad = {}, "invalid_json"
            if isinstance(data, dict):
                params.update(data)
            else:
                bad = "invalid_json"
        elif "application/x-www-form-urlencoded" in ctype:
            params.update(dict(urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True)))
        elif "multipart/form-data" in ctype:
            form = await request.form()
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            bad = "invalid_post_type"
    return decode_json_fields(params), bad


def _find_element(blocks: list[dict[str, Any]], action_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(block, element) of the interactive element `action_id`."""
    for block in blocks:
        elements = list(block.get("elements") or [])
        if isinstance(block.get("accessory"), dict):
            elements.append(block["accessory"])
        for el in elements:
            if isinstance(el, dict) and el.get("action_id") == action_id:
                return block, el
    return None


def _find_action(blocks: list[dict[str, Any]], action_id: str) -> dict[str, Any] | None:
    found = _find_element(blocks, action_id)
    return _action_of(*found) if found is not None else None


def _action_of(block: dict[str, Any], el: dict[str, Any]) -> dict[str, Any]:
    """The `actions[]` entry Slack sends for a use of element `el` in `block`."""
    action_id = el["action_id"]
    action: dict[str, Any] = {
        "action_id": action_id, "block_id": block.get("block_id", ""),
        "type": el.get("type", "button"),
    }
    if "value" in el:
        action["value"] = el["value"]
    elif el.get("type") == "feedback_buttons":
        action["value"] = (el.get("positive_button") or {}).get("value")
    if isinstance(el.get("text"), dict):
        action["text"] = el["text"]
    return action
