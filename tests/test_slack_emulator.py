"""The Slack emulator, exercised through the real slack_sdk AsyncWebClient over HTTP."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.models.messages.chunk import MarkdownTextChunk, PlanUpdateChunk, TaskUpdateChunk
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.sandbox.server import ServerThread
from app.sandbox.slack import EventSender, MethodLimit, RateLimitConfig, SlackEmulator, sign

SECRET = "test-signing-secret"
CH = "C0001"
RECIPIENT: dict[str, Any] = {"recipient_user_id": "U0001", "recipient_team_id": "T0001"}


@pytest.fixture
def emu() -> Iterator[SlackEmulator]:
    emulator = SlackEmulator(signing_secret=SECRET).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def client(emu: SlackEmulator) -> AsyncWebClient:
    return emu.client()


async def api_error(coro: Any) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await coro
    return info.value


class Receiver:
    """A tiny app that checks Slack's signature and keeps every request it gets."""

    def __init__(self, respond_via_url: bool = False) -> None:
        self.requests: list[dict[str, Any]] = []
        self.respond_via_url = respond_via_url
        self.verifier = SignatureVerifier(SECRET)
        self.server = ServerThread(Starlette(routes=[
            Route("/slack/events", self.handle, methods=["POST"])])).start()
        self.url = f"{self.server.url}/slack/events"

    async def handle(self, request: Request) -> Response:
        raw = await request.body()
        if not self.verifier.is_valid_request(raw, dict(request.headers)):
            return JSONResponse({"error": "invalid request"}, status_code=401)
        if request.headers["content-type"].startswith("application/json"):
            body = json.loads(raw)
        else:
            body = dict(urllib.parse.parse_qsl(raw.decode()))
            if "payload" in body:
                body = json.loads(body["payload"])
        self.requests.append({"body": body, "headers": dict(request.headers)})
        if self.respond_via_url and body.get("response_url"):
            async with httpx2.AsyncClient() as http:
                await http.post(body["response_url"], json={"text": "working on it"})
        return Response(status_code=200)

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests
                if type_ is None or r["body"].get("event", {}).get("type") == type_]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.requests if r["body"].get("type") == type_]

    def stop(self) -> None:
        self.server.stop()


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ---- Web API basics -------------------------------------------------------------------


async def test_auth_test_and_tokens(emu: SlackEmulator, client: AsyncWebClient) -> None:
    resp = await client.auth_test()
    assert resp["user_id"] == "UBOT" and resp["bot_id"] == "B0001" and resp["team_id"] == "T0001"
    assert resp["url"].startswith("https://")
    err = await api_error(emu.client(token="xoxb-wrong").auth_test())
    assert err.response["error"] == "invalid_auth"
    err = await api_error(AsyncWebClient(base_url=emu.api_url).auth_test())
    assert err.response["error"] == "not_authed"
    assert [c.method for c in emu.state.calls()] == ["auth.test"] * 3


async def test_post_and_replies_make_a_real_thread(emu: SlackEmulator,
                                                   client: AsyncWebClient) -> None:
    root = await emu.user_posts(CH, "my laptop is on fire", user="U0001")
    reply = await client.chat_postMessage(channel=CH, thread_ts=root, text="On it")
    assert reply["message"]["bot_id"] == "B0001" and reply["message"]["thread_ts"] == root
    await client.chat_postMessage(channel=CH, thread_ts=root, text="Also here",
                                  reply_broadcast=True)
    await client.chat_postMessage(channel=CH, text="unrelated top-level")

    replies = await client.conversations_replies(channel=CH, ts=root)
    texts = [m["text"] for m in replies["messages"]]
    assert texts == ["<@UBOT> my laptop is on fire", "On it", "Also here"]
    assert replies["messages"][0]["reply_count"] == 2
    assert [m["text"] for m in emu.state.thread(CH, root)] == texts

    page = await client.conversations_replies(channel=CH, ts=root, limit=2)
    assert page["has_more"] and page["response_metadata"]["next_cursor"]
    rest = await client.conversations_replies(
        channel=CH, ts=root, limit=2, cursor=page["response_metadata"]["next_cursor"])
    assert [m["text"] for m in rest["messages"]] == ["Also here"]

    history = await client.conversations_history(channel=CH)
    assert [m["text"] for m in history["messages"]][:2] == ["unrelated top-level", "Also here"]

    updated = await client.chat_update(channel=CH, ts=reply["ts"], text="Done")
    assert updated["text"] == "Done"
    link = await client.chat_getPermalink(channel=CH, message_ts=reply["ts"])
    assert f"thread_ts={root}" in link["permalink"]
    await client.reactions_add(channel=CH, timestamp=root, name="eyes")
    err = await api_error(client.reactions_add(channel=CH, timestamp=root, name="eyes"))
    assert err.response["error"] == "already_reacted"
    assert emu.state.message(CH, root)["reactions"][0]["users"] == ["UBOT"]  # type: ignore[index]
    await client.chat_delete(channel=CH, ts=reply["ts"])  # form/query-string method
    assert emu.state.message(CH, reply["ts"]) is None
    eph = await client.chat_postEphemeral(channel=CH, user="U0002", text="only you", thread_ts=root)
    assert emu.state.snapshot_list("ephemerals")[0]["message_ts"] == eph["message_ts"]


async def test_lookups_status_and_views(emu: SlackEmulator, client: AsyncWebClient) -> None:
    info = await client.conversations_info(channel="C0002")
    assert info["channel"]["name"] == "general" and info["channel"]["is_member"] is False
    await client.conversations_join(channel="C0002")
    assert (await client.conversations_info(channel="C0002"))["channel"]["is_member"] is True
    assert (await client.users_info(user="U0002"))["user"]["is_bot"] is False
    assert (await client.users_info(user="UBOT"))["user"]["is_bot"] is True
    assert (await client.usergroups_users_list(usergroup="S0001"))["users"] == ["U0001"]
    err = await api_error(client.users_info(user="U9999"))
    assert err.response["error"] == "user_not_found"

    root = await emu.user_posts(CH, "help")
    await client.assistant_threads_setStatus(channel_id=CH, thread_ts=root, status="thinking",
                                             loading_messages=["Reading", "Thinking"])
    assert emu.state.status(CH, root)["status"] == "thinking"  # type: ignore[index]
    await client.chat_postMessage(channel=CH, thread_ts=root, text="answer")
    assert emu.state.status(CH, root) is None  # a reply clears the status

    opened = await client.views_open(trigger_id=emu.new_trigger("U0002"), view={
        "type": "modal", "title": {"type": "plain_text", "text": "Raise budget"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "sure?"}}]})
    view_id = opened["view"]["id"]
    updated = await client.views_update(view_id=view_id, hash=opened["view"]["hash"], view={
        "type": "modal", "title": {"type": "plain_text", "text": "Updated"}, "blocks": []})
    assert updated["view"]["user_id"] == opened["view"]["user_id"] == "U0002"  # still the opener's
    err = await api_error(client.views_update(view_id=view_id, hash="stale", view={
        "type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": []}))
    assert err.response["error"] == "hash_conflict"
    home = await client.views_publish(user_id="U0001", view={"type": "home", "blocks": []})
    assert home["view"]["type"] == "home"

    # Select menus are held to Slack's limits: the initial option must be one of the options.
    def menu(options: list[str], initial: str) -> dict[str, Any]:
        def opt(v: str) -> dict[str, Any]:
            return {"text": {"type": "plain_text", "text": v}, "value": v}
        return {"type": "home", "blocks": [{"type": "actions", "elements": [{
            "type": "static_select", "action_id": "pick", "options": [opt(o) for o in options],
            "initial_option": opt(initial)}]}]}

    assert (await client.views_publish(user_id="U0001", view=menu(["a", "b"], "b")))["ok"]
    for bad in (menu(["a", "b"], "c"), menu([], "a"), menu(["x" * 76], "x" * 76)):
        err = await api_error(client.views_publish(user_id="U0001", view=bad))
        # views.publish documents no name for malformed blocks: Slack's generic invalid_arguments
        assert err.response["error"] == "invalid_arguments"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing:UserWarning")
async def test_channel_and_content_errors(emu: SlackEmulator, client: AsyncWebClient) -> None:
    emu.configure(rate_limits={"enabled": False})  # rejected calls count against limits too

    async def error(**kwargs: Any) -> str:
        return (await api_error(client.chat_postMessage(**kwargs))).response["error"]

    assert await error(channel="C9999", text="x") == "channel_not_found"
    assert await error(channel="C0002", text="x") == "not_in_channel"
    assert await error(channel="C0003", text="x") == "is_archived"
    # Slack truncates text past 40,000 characters rather than refusing it (changelog 2018-04).
    long = await client.chat_postMessage(channel=CH, text="x" * 40_005)
    assert len(emu.state.message(CH, long["ts"])["text"]) == 40_000  # type: ignore[index]
    # The 12,000 limit is documented on markdown_text; chat.postMessage documents no error for
    # it (contracts/slack_methods.json), so Slack's generic one.
    assert await error(channel=CH, markdown_text="x" * 12_001) == "invalid_arguments"
    assert await error(channel=CH, markdown_text="**a**", text="a") == "markdown_text_conflict"
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "ok"}}
    assert await error(channel=CH, text="x", blocks=[section] * 51) == "invalid_blocks"
    long_section = {"type": "section", "text": {"type": "mrkdwn", "text": "y" * 3001}}
    assert await error(channel=CH, text="x", blocks=[long_section]) == "invalid_blocks"
    assert await error(channel=CH) == "no_text"
    ok = await client.chat_postMessage(channel=CH, text="x" * 40_000, blocks=[section] * 50)
    assert ok["ok"]
    ok = await client.chat_postMessage(channel=CH, markdown_text="m" * 12_000)
    assert ok["message"]["text"] == "m" * 12_000


# ---- streaming ------------------------------------------------------------------------


async def test_stream_with_chunks_and_feedback(emu: SlackEmulator, client: AsyncWebClient) -> None:
    root = await emu.user_posts(CH, "why is the VPN down?")
    started = await client.chat_startStream(
        channel=CH, thread_ts=root, task_display_mode="plan", **RECIPIENT,
        chunks=[PlanUpdateChunk(title="Investigating"),
                TaskUpdateChunk(id="t1", title="Search runbooks", status="in_progress")])
    ts = started["ts"]
    await client.chat_appendStream(channel=CH, ts=ts, markdown_text="The VPN ")
    await client.chat_appendStream(channel=CH, ts=ts, chunks=[
        TaskUpdateChunk(id="t1", title="Search runbooks", status="complete", output="3 hits"),
        MarkdownTextChunk(text="gateway is down.")])
    feedback = {"type": "context_actions", "elements": [{
        "type": "feedback_buttons", "action_id": "feedback",
        "positive_button": {"text": {"type": "plain_text", "text": "Good"}, "value": "good"},
        "negative_button": {"text": {"type": "plain_text", "text": "Bad"}, "value": "bad"}}]}
    stopped = await client.chat_stopStream(channel=CH, ts=ts, markdown_text=" Fixed.",
                                           blocks=[feedback])
    assert stopped["message"]["blocks"][0]["type"] == "context_actions"

    assert stopped["message"]["streaming_state"] == "completed"
    stream = emu.state.stream(CH, ts)
    assert stream is not None
    assert stream["state"] == "stopped" and stream["text"] == "The VPN gateway is down. Fixed."
    assert stream["plan_title"] == "Investigating" and stream["task_display_mode"] == "plan"
    assert stream["tasks"]["t1"]["status"] == "complete"
    assert stream["tasks"]["t1"]["history"] == ["in_progress", "complete"]
    assert stream["tasks"]["t1"]["output"] == "3 hits"
    thread = emu.state.thread(CH, root)
    assert thread[-1]["text"] == "The VPN gateway is down. Fixed."
    replies = await client.conversations_replies(channel=CH, ts=root)
    assert replies["messages"][-1]["text"] == "The VPN gateway is down. Fixed."

    err = await api_error(client.chat_appendStream(channel=CH, ts=ts, markdown_text="more"))
    assert err.response["error"] == "message_not_in_streaming_state"
    err = await api_error(client.chat_startStream(channel=CH, thread_ts=root))
    assert err.response["error"] == "missing_recipient_user_id"
    err = await api_error(client.chat_appendStream(channel=CH, ts=ts, chunks=[
        {"type": "task_update", "id": "t2", "title": "x", "status": "done"}]))
    assert err.response["error"] == "message_not_in_streaming_state"
    big = await api_error(client.chat_startStream(channel=CH, thread_ts=root, **RECIPIENT,
                                                  markdown_text="z" * 12_001))
    assert big.response["error"] == "invalid_arguments"  # no documented error of its own for the limit


async def test_stream_expires_after_lifetime(emu: SlackEmulator, client: AsyncWebClient) -> None:
    emu.configure(stream_lifetime=0.3)
    root = await emu.user_posts(CH, "long job")
    ts = (await client.chat_startStream(channel=CH, thread_ts=root, markdown_text="step 1. ",
                                        **RECIPIENT))["ts"]
    await client.chat_appendStream(channel=CH, ts=ts, markdown_text="step 2. ")
    # While it streams, the message says so wherever it is read, and cannot be edited.
    replies = await client.conversations_replies(channel=CH, ts=root)
    assert replies["messages"][-1]["streaming_state"] == "in_progress"
    err = await api_error(client.chat_update(channel=CH, ts=ts, text="too early"))
    assert err.response["error"] == "streaming_state_conflict"
    await asyncio.sleep(0.4)
    assert emu.state.stream(CH, ts)["state"] == "expired"  # type: ignore[index]
    for call in (client.chat_appendStream(channel=CH, ts=ts, markdown_text="step 3"),
                 client.chat_stopStream(channel=CH, ts=ts)):
        err = await api_error(call)
        assert err.response["error"] == "message_not_in_streaming_state"
    await client.chat_update(channel=CH, ts=ts, text="step 1. step 2. step 3")  # the recovery
    assert emu.state.thread(CH, root)[-1]["text"] == "step 1. step 2. step 3"


async def test_sdk_chat_stream_helper(emu: SlackEmulator, client: AsyncWebClient) -> None:
    root = await emu.user_posts(CH, "hello")
    streamer = await client.chat_stream(channel=CH, thread_ts=root, buffer_size=5, **RECIPIENT)
    await streamer.append(markdown_text="Hello there, ")
    await streamer.append(markdown_text="friend.")
    await streamer.stop()
    assert emu.state.thread(CH, root)[-1]["text"] == "Hello there, friend."
    assert [c.method for c in emu.state.calls()][-3:] == [
        "chat.startStream", "chat.appendStream", "chat.stopStream"]


# ---- rate limits and faults -----------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(emu: SlackEmulator,
                                                       client: AsyncWebClient) -> None:
    emu.configure(rate_limits=RateLimitConfig(methods={
        "chat.update": MethodLimit(per_minute=60, burst=2),
        "chat.postMessage": MethodLimit(per_minute=60, burst=1, per_channel=True)}))
    ts = (await client.chat_postMessage(channel=CH, text="v0"))["ts"]
    await client.chat_update(channel=CH, ts=ts, text="v1")
    await client.chat_update(channel=CH, ts=ts, text="v2")
    err = await api_error(client.chat_update(channel=CH, ts=ts, text="v3"))
    assert err.response.status_code == 429
    assert err.response["error"] == "ratelimited"
    assert int(err.response.headers["Retry-After"]) == 1
    assert emu.state.ratelimited_count == 1
    assert emu.state.message(CH, ts)["text"] == "v2"  # type: ignore[index]

    # postMessage is per channel: another channel still has its token.
    err = await api_error(client.chat_postMessage(channel=CH, text="again"))
    assert err.response.status_code == 429
    await client.conversations_join(channel="C0002")
    await client.chat_postMessage(channel="C0002", text="other channel")

    # With the SDK's retry handler the client waits Retry-After and succeeds.
    patient = emu.client(retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=2)])
    assert (await patient.chat_update(channel=CH, ts=ts, text="v3"))["ok"]
    assert emu.state.ratelimited_by_method["chat.update"] >= 2

    emu.configure(rate_limits={"enabled": False})
    for i in range(5):
        await client.chat_update(channel=CH, ts=ts, text=f"w{i}")


async def test_default_tiers_and_scale(emu: SlackEmulator, client: AsyncWebClient) -> None:
    # Tier 2 startStream: a minute's budget (20) is available at once, the 21st is limited.
    root = await emu.user_posts(CH, "many streams")
    for _ in range(20):
        await client.chat_startStream(channel=CH, thread_ts=root, **RECIPIENT)
    err = await api_error(client.chat_startStream(channel=CH, thread_ts=root, **RECIPIENT))
    assert err.response.status_code == 429
    assert int(err.response.headers["Retry-After"]) == 3  # 60 s / 20
    # Scaling by 600 refills 20/min in 0.1 s.
    emu.configure(rate_limits={"scale": 600})
    await asyncio.sleep(0.15)
    assert (await client.chat_startStream(channel=CH, thread_ts=root, **RECIPIENT))["ok"]


async def test_fail_next_forces_errors(emu: SlackEmulator, client: AsyncWebClient) -> None:
    emu.state.fail_next("chat.postMessage", "ratelimited", status=429, retry_after=7)
    emu.state.fail_next("chat.postMessage", "internal_error", status=500)
    err = await api_error(client.chat_postMessage(channel=CH, text="x"))
    assert err.response.status_code == 429 and err.response.headers["Retry-After"] == "7"
    err = await api_error(client.chat_postMessage(channel=CH, text="x"))
    assert err.response.status_code == 500
    assert (await client.chat_postMessage(channel=CH, text="x"))["ok"]


# ---- signing and delivery -------------------------------------------------------------


def test_sign_matches_slack_sdk_verifier() -> None:
    body = b'{"type":"event_callback","event":{"type":"app_mention"}}'
    ts = str(int(time.time()))
    signature = sign(SECRET, body, ts)
    verifier = SignatureVerifier(SECRET)
    assert signature == verifier.generate_signature(timestamp=ts, body=body)
    headers = {"x-slack-request-timestamp": ts, "x-slack-signature": signature}
    assert verifier.is_valid_request(body, headers)
    assert not SignatureVerifier("other").is_valid_request(body, headers)


async def test_event_sender_delivers_signed_envelopes() -> None:
    receiver = Receiver()
    try:
        sender = EventSender(receiver.url, SECRET)
        delivery = await sender.send_event({"type": "reaction_added", "user": "U0001"},
                                           event_id="Ev1", retry_num=1)
        assert delivery.status == 200 and delivery.elapsed < 3
        req = receiver.requests[0]
        body = req["body"]
        assert body["type"] == "event_callback" and body["event_id"] == "Ev1"
        assert body["team_id"] == "T0001" and body["api_app_id"] == "A0001"
        assert body["authorizations"][0]["user_id"] == "UBOT"
        assert isinstance(body["event_time"], int)
        assert req["headers"]["x-slack-retry-num"] == "1"
        assert req["headers"]["x-slack-retry-reason"] == "http_timeout"
        first = await sender.send_event({"type": "reaction_added"})
        assert "x-slack-retry-num" not in receiver.requests[1]["headers"]
        assert first.event_id != "Ev1"
        forged = await sender.send_event({"type": "reaction_added"}, signature="v0=bad")
        assert forged.status == 401
        old = await sender.send_event({"type": "reaction_added"}, timestamp=int(time.time()) - 301)
        assert old.status == 401
    finally:
        receiver.stop()


async def test_user_posts_and_bot_echo_reach_the_app(emu: SlackEmulator,
                                                     client: AsyncWebClient) -> None:
    receiver = Receiver()
    try:
        emu.set_app_url(receiver.url)
        ts = await emu.user_posts(CH, "please help", user="U0002")
        mention, message = receiver.events("app_mention"), receiver.events("message")
        assert len(mention) == 1 and len(message) == 1
        assert mention[0]["event_id"] != message[0]["event_id"]
        assert mention[0]["event"]["ts"] == message[0]["event"]["ts"] == ts
        assert message[0]["event"]["channel"] == CH
        assert message[0]["event"]["channel_type"] == "channel"
        assert mention[0]["event"]["text"].startswith("<@UBOT>")

        reply = await emu.user_posts(CH, "more detail", thread_ts=ts, mention_bot=False)
        await wait_for(lambda: len(receiver.events("message")) == 2)
        assert len(receiver.events("app_mention")) == 1
        assert receiver.events("message")[1]["event"]["thread_ts"] == ts
        assert receiver.events("message")[1]["event"]["ts"] == reply

        await client.chat_postMessage(channel=CH, thread_ts=ts, text="bot says hi")
        await wait_for(lambda: len(receiver.events("message")) == 3)
        echo = receiver.events("message")[2]["event"]
        assert echo["bot_id"] == "B0001" and echo["user"] == "UBOT" and echo["thread_ts"] == ts
        assert all(d["status"] == 200 for d in emu.state.snapshot_list("deliveries"))

        emu.configure(echo_bot_messages=False)
        await client.chat_postMessage(channel=CH, text="quiet")
        await asyncio.sleep(0.1)
        assert len(receiver.events("message")) == 3
    finally:
        receiver.stop()


async def test_commands_actions_and_response_url(emu: SlackEmulator,
                                                 client: AsyncWebClient) -> None:
    receiver = Receiver(respond_via_url=True)
    try:
        emu.set_app_url(receiver.url)
        delivery = await emu.send_command("/support", "cost", user="U0001")
        assert delivery.status == 200
        command = receiver.requests[0]["body"]
        assert command["command"] == "/support" and command["text"] == "cost"
        assert command["response_url"].startswith(emu.url)
        await wait_for(lambda: len(emu.state.snapshot_list("responses")) == 1)
        assert emu.state.snapshot_list("responses")[0]["body"] == {"text": "working on it"}
        # The trigger id from the command opens a modal once.
        view = {"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": []}
        await client.views_open(trigger_id=command["trigger_id"], view=view)
        err = await api_error(client.views_open(trigger_id=command["trigger_id"], view=view))
        assert err.response["error"] == "exchanged_trigger_id"

        root = await emu.user_posts(CH, "hi", mention_bot=False)
        posted = await client.chat_postMessage(channel=CH, thread_ts=root, text="Approve?", blocks=[
            {"type": "actions", "block_id": "approval", "elements": [{
                "type": "button", "action_id": "approve", "value": "run-1",
                "text": {"type": "plain_text", "text": "Approve"}}]}])
        await emu.click(CH, posted["ts"], "approve", user="U0002")
        action = receiver.of_type("block_actions")[-1]
        assert action["type"] == "block_actions" and action["user"]["id"] == "U0002"
        assert action["actions"][0] == {**action["actions"][0], "action_id": "approve",
                                        "block_id": "approval", "value": "run-1"}
        assert action["container"]["thread_ts"] == root and action["message"]["ts"] == posted["ts"]
        assert action["channel"]["id"] == CH

        submitted = await emu.events.send_view_submission(
            user="U0001", view={"id": "V1", "callback_id": "budget", "type": "modal"},
            values={"b": {"amount": {"type": "plain_text_input", "value": "20"}}})
        assert submitted.status == 200
        values = receiver.of_type("view_submission")[-1]["view"]["state"]["values"]
        assert values["b"]["amount"]["value"] == "20"
    finally:
        receiver.stop()


async def test_control_endpoints(emu: SlackEmulator, client: AsyncWebClient) -> None:
    async with httpx2.AsyncClient(base_url=f"{emu.url}/_emulator") as http:
        posted = (await http.post("/user_posts", json={"channel": CH, "text": "hi"})).json()
        assert posted["ok"] and posted["deliveries"] == []  # no app URL yet
        await client.chat_postMessage(channel=CH, thread_ts=posted["ts"], text="reply")
        thread = (await http.get("/thread", params={"channel": CH, "ts": posted["ts"]})).json()
        assert [m["text"] for m in thread["messages"]] == ["<@UBOT> hi", "reply"]
        calls = (await http.get("/calls", params={"method": "chat.postMessage"})).json()["calls"]
        assert len(calls) == 1 and calls[0]["params"]["text"] == "reply"

        limits = {"methods": {"chat.postMessage": {"per_minute": 60, "burst": 1}}}
        assert (await http.post("/rate_limits", json=limits)).json()["ok"]  # fresh buckets
        await client.chat_postMessage(channel=CH, text="second")
        err = await api_error(client.chat_postMessage(channel=CH, text="third"))
        assert err.response.status_code == 429
        state = (await http.get("/state")).json()
        assert state["ratelimited"] == {"chat.postMessage": 1}

        await http.post("/config", json={"stream_lifetime": 12.5})
        assert emu.state.stream_lifetime == 12.5
        await http.post("/fail_next", json={"method": "auth.test", "error": "account_inactive"})
        err = await api_error(client.auth_test())
        assert err.response["error"] == "account_inactive"
        await http.post("/channels", json={"id": "C0100", "name": "ext", "ext_shared": True})
        assert (await client.conversations_info(channel="C0100"))["channel"]["is_ext_shared"]

        await http.post("/reset")
        assert emu.state.calls() == []
        assert (await http.get("/thread", params={"channel": CH, "ts": posted["ts"]})).json()[
            "messages"] == []


async def test_form_encoded_body_and_token_param(emu: SlackEmulator) -> None:
    async with httpx2.AsyncClient() as http:
        resp = await http.post(f"{emu.api_url}chat.postMessage", data={
            "token": "xoxb-test", "channel": CH, "text": "form",
            "blocks": json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": "b"}}])})
        body = resp.json()
        assert resp.status_code == 200 and body["ok"], body
        assert body["message"]["blocks"][0]["type"] == "section"
        resp = await http.post(f"{emu.api_url}no.such.method", data={"token": "xoxb-test"})
        assert resp.json() == {"ok": False, "error": "unknown_method"}


async def test_bolt_app_end_to_end(emu: SlackEmulator) -> None:
    from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
    from slack_bolt.async_app import AsyncApp

    bolt = AsyncApp(signing_secret=SECRET, client=emu.client())
    mentions: list[str] = []

    @bolt.event("app_mention")
    async def on_mention(event: dict[str, Any], say_stream: Any, set_status: Any) -> None:
        mentions.append(event["ts"])
        await set_status("Thinking...")
        streamer = await say_stream()
        await streamer.append(markdown_text="Looking into it.")
        await streamer.stop()

    @bolt.event("message")
    async def on_message() -> None:
        return None

    handler = AsyncSlackRequestHandler(bolt)

    async def endpoint(request: Request) -> Response:
        return await handler.handle(request)

    server = ServerThread(Starlette(routes=[Route("/slack/events", endpoint,
                                                  methods=["POST"])])).start()
    try:
        emu.set_app_url(f"{server.url}/slack/events")
        ts = await emu.user_posts(CH, "is the VPN down?")
        await wait_for(lambda: bool(emu.state.ok_calls("chat.stopStream")))
        assert mentions == [ts]
        start = emu.state.ok_calls("chat.startStream")[0].params
        assert start["thread_ts"] == ts and start["recipient_user_id"] == "U0001"
        assert start["recipient_team_id"] == "T0001"
        assert emu.state.thread(CH, ts)[-1]["text"] == "Looking into it."
        assert emu.state.snapshot_list("status_log")[0]["status"] == "Thinking..."
        assert all(d["status"] == 200 for d in emu.state.snapshot_list("deliveries"))
    finally:
        server.stop()
