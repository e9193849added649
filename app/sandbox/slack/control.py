"""`/_emulator/...` control endpoints (JSON) and the `response_url` target of the Slack emulator.

For tests that run the app in another process. Reads: GET calls, thread, history, stream, state,
deliveries, responses, ephemerals, statuses. Writes: POST reset, rate_limits, config, app_url,
fail_next, users, channels, user_posts, event, command, click.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from app.sandbox.slack.api import SlackEmulator

RESPONSE_URL_USES = 5


def control_routes(emu: SlackEmulator) -> list[Route]:
    st = emu.state

    async def body_of(request: Request) -> dict[str, Any]:
        raw = await request.body()
        return json.loads(raw) if raw else {}

    def bad(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"ok": False, "error": message}, status_code=status)

    async def calls(request: Request) -> Response:
        method = request.query_params.get("method")
        return JSONResponse({"ok": True, "calls": [c.to_dict() for c in st.calls(method)]})

    async def thread(request: Request) -> Response:
        q = request.query_params
        ts = q.get("ts") or q.get("thread_ts") or ""
        return JSONResponse({"ok": True, "messages": st.thread(q.get("channel", ""), ts)})

    async def history(request: Request) -> Response:
        return JSONResponse({"ok": True, "messages": st.history(request.query_params["channel"])})

    async def stream(request: Request) -> Response:
        q = request.query_params
        if q.get("ts"):
            return JSONResponse({"ok": True, "stream": st.stream(q.get("channel", ""), q["ts"])})
        return JSONResponse({"ok": True, "streams": st.all_streams()})

    async def summary(request: Request) -> Response:
        data = st.summary()
        data.update(ok=True, app_url=emu.app_url, echo_bot_messages=emu.echo_bot_messages)
        return JSONResponse(data)

    def listing(name: str) -> Any:
        async def handler(request: Request) -> Response:
            return JSONResponse({"ok": True, "items": st.snapshot_list(name)})
        return handler

    async def reset(request: Request) -> Response:
        st.reset()
        return JSONResponse({"ok": True})

    async def rate_limits(request: Request) -> Response:
        emu.configure(rate_limits=await body_of(request))
        return JSONResponse({"ok": True, "rate_limits": st.limiter.config.to_dict()})

    async def config(request: Request) -> Response:
        data = await body_of(request)
        emu.configure(stream_lifetime=data.get("stream_lifetime"),
                      echo_bot_messages=data.get("echo_bot_messages"))
        if "app_url" in data:
            emu.set_app_url(data["app_url"])
        return JSONResponse({"ok": True})

    async def app_url(request: Request) -> Response:
        emu.set_app_url((await body_of(request)).get("url"))
        return JSONResponse({"ok": True, "app_url": emu.app_url})

    async def fail_next(request: Request) -> Response:
        d = await body_of(request)
        st.fail_next(d["method"], d.get("error", "internal_error"),
                     status=int(d.get("status", 200)), retry_after=d.get("retry_after"),
                     count=int(d.get("count", 1)))
        return JSONResponse({"ok": True})

    async def inject(request: Request) -> Response:
        d = await body_of(request)
        try:
            st.inject(d["method"], d["error"], count=int(d.get("count", 1)))
        except ValueError as exc:
            return bad(str(exc))
        return JSONResponse({"ok": True})

    async def users(request: Request) -> Response:
        d = await body_of(request)
        user = st.add_user(d["id"], d["name"], real_name=d.get("real_name", ""),
                           is_bot=bool(d.get("is_bot")), email=d.get("email"), token=d.get("token"))
        return JSONResponse({"ok": True, "user": user.to_api(st.team_id)})

    async def channels(request: Request) -> Response:
        d = await body_of(request)
        ch = st.add_channel(
            d["id"], d.get("name", d["id"].lower()), members=d.get("members", []),
            bot_member=d.get("bot_member", True), archived=bool(d.get("archived")),
            private=bool(d.get("private")), ext_shared=bool(d.get("ext_shared")),
            im_user=d.get("im_user"),
        )
        return JSONResponse({"ok": True, "channel": ch.to_api(st.bot_user_id, st.team_id)})

    async def user_posts(request: Request) -> Response:
        d = await body_of(request)
        try:
            ts, deliveries = await emu.user_posts_detailed(
                d["channel"], d["text"], d.get("user", "U0001"), d.get("thread_ts"),
                d.get("mention_bot", True))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, "ts": ts,
                             "deliveries": [x.to_dict() for x in deliveries]})

    async def event(request: Request) -> Response:
        d = await body_of(request)
        delivery = await emu.send_event(d["event"], event_id=d.get("event_id"),
                                        retry_num=d.get("retry_num"))
        return JSONResponse({"ok": True, "delivery": delivery.to_dict()})

    async def command(request: Request) -> Response:
        d = await body_of(request)
        extra = {k: d[k] for k in ("user", "user_name", "channel", "channel_name") if k in d}
        delivery = await emu.send_command(d["command"], d.get("text", ""), **extra)
        return JSONResponse({"ok": True, "delivery": delivery.to_dict()})

    async def click(request: Request) -> Response:
        d = await body_of(request)
        try:
            delivery = await emu.click(d["channel"], d["ts"], d["action_id"],
                                       d.get("user", "U0001"), d.get("value"))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, "delivery": delivery.to_dict()})

    async def response_url(request: Request) -> Response:
        rid = request.path_params["rid"]
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            body = json.loads(form.get("payload", "{}"))
        with st.lock:
            context = st.response_urls.get(rid)
            # Slack: a response_url takes up to 5 responses within 30 minutes (docs.slack.dev
            # interactivity/handling-user-interaction); the 404 bodies' wording is the emulator's own.
            if context is None:
                return PlainTextResponse("no_such_url", status_code=404)
            uses = context["uses"] = context.get("uses", 0) + 1
            if uses > RESPONSE_URL_USES:
                return PlainTextResponse("used_url", status_code=404)
            st.responses.append({"id": rid, "context": dict(context), "body": body,
                                 "time": time.time()})
            _apply_response(emu, context, body)
        return PlainTextResponse("ok")

    return [
        Route("/_emulator/calls", calls),
        Route("/_emulator/thread", thread),
        Route("/_emulator/history", history),
        Route("/_emulator/stream", stream),
        Route("/_emulator/state", summary),
        Route("/_emulator/deliveries", listing("deliveries")),
        Route("/_emulator/responses", listing("responses")),
        Route("/_emulator/ephemerals", listing("ephemerals")),
        Route("/_emulator/statuses", listing("status_log")),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/rate_limits", rate_limits, methods=["POST"]),
        Route("/_emulator/config", config, methods=["POST"]),
        Route("/_emulator/app_url", app_url, methods=["POST"]),
        Route("/_emulator/fail_next", fail_next, methods=["POST"]),
        Route("/_emulator/inject", inject, methods=["POST"]),
        Route("/_emulator/users", users, methods=["POST"]),
        Route("/_emulator/channels", channels, methods=["POST"]),
        Route("/_emulator/user_posts", user_posts, methods=["POST"]),
        Route("/_emulator/event", event, methods=["POST"]),
        Route("/_emulator/command", command, methods=["POST"]),
        Route("/_emulator/click", click, methods=["POST"]),
        Route("/_emulator/response/{rid}", response_url, methods=["POST"]),
    ]


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def _apply_response(emu: SlackEmulator, context: dict[str, Any], body: dict[str, Any]) -> None:
    """What Slack does with a `response_url` post (caller holds the lock)."""
    st = emu.state
    channel, msg_ts = context.get("channel"), context.get("message_ts")
    msgs = st.messages.get(channel or "", {})
    if _truthy(body.get("delete_original")) and msg_ts in msgs:
        del msgs[msg_ts]
        return
    if _truthy(body.get("replace_original")) and msg_ts in msgs:
        msg = msgs[msg_ts]
        if "text" in body:
            msg["text"] = body["text"]
        if "blocks" in body:
            msg["blocks"] = body["blocks"]
        return
    if body.get("response_type") == "in_channel" and channel in st.channels:
        thread_ts = body.get("thread_ts") or context.get("thread_ts")
        msg = {"type": "message", "ts": st.new_ts(), "text": body.get("text", ""),
               **st.bot_message_fields()}
        if body.get("blocks"):
            msg["blocks"] = body["blocks"]
        if thread_ts:
            msg["thread_ts"] = thread_ts
        st.store_message(channel, msg)
        return
    st.ephemerals.append({
        "channel": channel, "user": context.get("user"), "message_ts": st.new_ts(),
        "thread_ts": body.get("thread_ts") or context.get("thread_ts"),
        "text": body.get("text", ""), "blocks": body.get("blocks"), "via": "response_url",
    })
