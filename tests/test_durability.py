"""Faults injected on purpose: lost responses, dropped streams, busy agents, dead workers, restarts.

Each test proves one of DESIGN.md's guarantees through the emulators, with real Redis.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.sandbox.slack import visible_text
from app.sandbox.stack import Stack
from tests.support import eventually
from tests.test_e2e_ticket import SUPPORT, bot_replies, finished_replies


def bot_text(stack: Stack, ts: str) -> str:
    return "\n".join(bot_replies(stack, ts))


def bot_words(stack: Stack, ts: str) -> str:
    """Everything the bot showed in the thread: message text and the text inside its blocks."""
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("text"), str):
                out.append(node["text"])
            for value in node.values():
                if isinstance(value, dict | list):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for message in stack.slack.state.thread(SUPPORT, ts):
        if message.get("bot_id"):
            out.append(message.get("text") or "")
            walk(message.get("blocks") or [])
    return "\n".join(out)


def only_session(stack: Stack) -> str:
    sessions = stack.agents.state.sessions_snapshot()
    assert len(sessions) == 1, sessions
    return str(sessions[0]["id"])


async def test_a_lost_send_response_does_not_deliver_the_message_twice(stack: Stack) -> None:
    stack.start_app()
    # The emulator processes the POST, then answers 500: the client cannot know it arrived.
    stack.agents.fail_next("POST", r"/v1/sessions/[^/]+/events$", 500, after=True)
    ts = await stack.slack.user_posts(SUPPORT, "deliver me once")
    await eventually(lambda: finished_replies(stack, ts))
    await asyncio.sleep(0.5)
    assert stack.agents.state.processed_messages(only_session(stack)) == ["deliver me once"]
    assert bot_replies(stack, ts) == ["You asked: deliver me once"]


async def test_messages_sent_while_the_agent_works_arrive_once_and_in_order(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [
        {"match": "^slow", "steps": [{"sleep": 2.0}, {"message": "slow answer"}]},
        {"match": None, "steps": [{"message": "ack {user_text}"}]},
    ]})
    stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "slow question")
    await eventually(lambda: stack.agents.state.sessions_snapshot())
    for i in range(3):
        await stack.slack.user_posts(SUPPORT, f"more {i}", thread_ts=ts, mention_bot=False)
    await eventually(lambda: len(finished_replies(stack, ts)) == 4, timeout=20)
    session = only_session(stack)
    assert stack.agents.state.processed_messages(session) == ["slow question", "more 0", "more 1", "more 2"]
    assert bot_replies(stack, ts) == ["slow answer", "ack more 0", "ack more 1", "ack more 2"]
    # They reached the session while it was still working on the first turn, not after.
    received = [e for e in stack.agents.state.received_user_events(session) if e["type"] == "user.message"]
    assert len(received) == 4


async def test_stream_drop_mid_turn_loses_nothing_and_doubles_nothing(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"message": "part one"},
        {"drop_stream": {"mode": "abort"}},
        {"sleep": 0.2},
        {"message": "part two"},
        {"drop_stream": {"mode": "close"}},
        {"message": "part three"},
    ]}]})
    stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "drop test")
    await eventually(lambda: "part three" in bot_text(stack, ts), timeout=20)
    await asyncio.sleep(0.5)
    text = bot_text(stack, ts)
    for part in ("part one", "part two", "part three"):
        assert text.count(part) == 1, text
    assert text.index("part one") < text.index("part two") < text.index("part three")


async def test_a_worker_killed_mid_turn_is_taken_over(stack: Stack, tmp_path: Path) -> None:
    steps: list[dict[str, object]] = []
    for i in range(8):
        steps += [{"message": f"step {i}"}, {"sleep": 0.5}]
    stack.agents.set_scenario({"rules": [{"match": None, "steps": steps}]})
    stack.start_process("web", log_path=tmp_path / "web.log")
    first = stack.start_process("worker", log_path=tmp_path / "worker1.log", WORKER_ID="worker-1")
    ts = await stack.slack.user_posts(SUPPORT, "long job")
    await eventually(lambda: "step 1" in bot_text(stack, ts), timeout=20)
    second = stack.start_process("worker", log_path=tmp_path / "worker2.log", WORKER_ID="worker-2")
    first.kill()
    await eventually(lambda: "step 7" in bot_text(stack, ts), timeout=30)
    await asyncio.sleep(1.0)
    text = bot_text(stack, ts)
    for i in range(8):
        assert text.count(f"step {i}") == 1, text
    assert "taking over orphaned ticket" in (tmp_path / "worker2.log").read_text()
    # The dead worker's stream was stopped by the new one, not left "typing" until Slack ends it,
    # and its answer went on in that same message, not again in a new one.
    assert "continued below" not in text, text
    assert all(s["state"] == "stopped" for s in stack.slack.state.all_streams())
    assert second.proc is not None and second.proc.poll() is None


async def test_restart_of_web_worker_and_embedded_redis_keeps_the_ticket(stack: Stack, tmp_path: Path) -> None:
    data = tmp_path / "var"
    env = {"REDIS_URL": ""}  # embedded Redis with its data under `data`
    first = stack.start_process("run", log_path=tmp_path / "run1.log", REDIS_DATA_DIR=str(data), **env)
    ts = await stack.slack.user_posts(SUPPORT, "turn one")
    await eventually(lambda: len(finished_replies(stack, ts)) == 1, timeout=20)
    first.stop()
    stack.apps.remove(first)
    stack.start_process("run", log_path=tmp_path / "run2.log", REDIS_DATA_DIR=str(data), **env)
    await stack.slack.user_posts(SUPPORT, "turn two", thread_ts=ts, mention_bot=False)
    await eventually(lambda: len(finished_replies(stack, ts)) == 2, timeout=20)
    assert stack.agents.state.processed_messages(only_session(stack)) == ["turn one", "turn two"]


async def test_agent_failures_leave_a_ticket_state_and_words_in_the_thread(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [
        {"match": "^exhaust", "steps": [
            {"error": "model_overloaded_error", "retry_status": "retrying"},
            {"error": "model_overloaded_error", "retry_status": "exhausted"},
            {"idle": "retries_exhausted"},
        ]},
        {"match": "^terminal", "steps": [
            {"error": "unknown_error", "retry_status": "terminal"},
            {"terminate": {}},
        ]},
    ]})
    app = stack.start_app()
    store = app.services.store
    ts1 = await stack.slack.user_posts(SUPPORT, "exhaust the retries")
    await eventually(lambda: "gave up" in bot_words(stack, ts1), timeout=20)
    ticket = await eventually(lambda: _state_is(app, ts1, "waiting_requester"), timeout=20)
    causes = [t.cause for t in app.run_coroutine(store.transitions(ticket.id))]
    assert "turn failed: retries exhausted" in causes
    ts2 = await stack.slack.user_posts(SUPPORT, "terminal failure")
    await eventually(lambda: _state_is(app, ts2, "failed"), timeout=20)
    await eventually(lambda: bot_words(stack, ts2).strip(), timeout=20)
    # The failed turn offers Retry: pressing it starts a new session seeded with the thread.
    retry = await eventually(lambda: _message_with_button(stack, ts2, "Retry"), timeout=20)
    sessions_before = len(stack.agents.state.sessions_snapshot())
    await stack.slack.click(SUPPORT, retry["ts"], "ticket_reopen", user="U0001")
    await eventually(lambda: len(stack.agents.state.sessions_snapshot()) == sessions_before + 1, timeout=20)
    await eventually(lambda: _state_is(app, ts2, "waiting_requester") or _state_is(app, ts2, "working"), timeout=20)


def _message_with_button(stack: Stack, ts: str, label: str):  # type: ignore[no-untyped-def]
    for message in stack.slack.state.thread(SUPPORT, ts):
        for block in message.get("blocks") or []:
            for element in block.get("elements") or []:
                if element.get("type") == "button" and element.get("text", {}).get("text") == label:
                    return message
    return None


def _state_is(app, ts: str, state: str):  # type: ignore[no-untyped-def]
    ticket = app.run_coroutine(app.services.store.by_thread("T0001", SUPPORT, ts))
    return ticket if ticket is not None and ticket.state == state else None


async def test_channel_archived_mid_turn_fails_the_ticket_and_stops_the_agent(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"message": "working on it"}, {"sleep": 1.5}, {"message": "done"}, {"sleep": 30.0},
    ]}]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "archive me")
    await eventually(lambda: "working on it" in bot_text(stack, ts), timeout=20)
    stack.slack.state.archive(SUPPORT)  # Slack now answers is_archived to every post
    ticket = await eventually(lambda: _state_is(app, ts, "failed"), timeout=20)
    causes = [t.cause for t in app.run_coroutine(app.services.store.transitions(ticket.id))]
    assert "slack: is_archived" in causes
    session = only_session(stack)
    await eventually(
        lambda: any(e["type"] == "user.interrupt" for e in stack.agents.state.received_user_events(session)),
        timeout=10,
    )


async def test_bot_removed_from_the_channel_fails_its_open_tickets(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [{"message": "hi"}, {"sleep": 30.0}]}]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "still there?")
    await eventually(lambda: "hi" in bot_text(stack, ts), timeout=20)
    delivery = await stack.slack.send_event(
        {"type": "member_left_channel", "user": "UBOT", "channel": SUPPORT, "channel_type": "C", "team": "T0001"}
    )
    assert delivery.status == 200
    ticket = await eventually(lambda: _state_is(app, ts, "failed"), timeout=10)
    causes = [t.cause for t in app.run_coroutine(app.services.store.transitions(ticket.id))]
    assert "bot removed from the channel" in causes


async def test_slack_is_acknowledged_fast_whatever_anthropic_does(stack: Stack) -> None:
    stack.start_app()
    # Anthropic hangs for 5 s on every request: intake must not notice.
    stack.agents.fail_next("*", r"^/v1/", 0, count=100, delay=5.0)
    timings = []
    for i in range(5):
        _, deliveries = await stack.slack.user_posts_detailed(SUPPORT, f"slow anthropic {i}")
        assert [d.status for d in deliveries] == [200, 200]
        timings += [d.elapsed for d in deliveries]
    assert max(timings) < 3.0, timings  # Slack's hard limit; typical figures are a few ms
    stack.agents.state.clear_faults()


async def test_a_follow_up_to_an_archived_session_says_so_and_fails_the_ticket(stack: Stack) -> None:
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "first")
    await eventually(lambda: len(finished_replies(stack, ts)) == 1)
    session = only_session(stack)
    await stack.agents.client().beta.sessions.archive(session)  # archived behind the bot's back
    await stack.slack.user_posts(SUPPORT, "second", thread_ts=ts, mention_bot=False)
    await eventually(lambda: "archived" in bot_words(stack, ts), timeout=20)
    ticket = await eventually(lambda: _state_is(app, ts, "failed"), timeout=10)
    causes = [t.cause for t in app.run_coroutine(app.services.store.transitions(ticket.id))]
    assert "the agent session is archived" in causes
    # Trying again as the message says: a new session gets the thread, nothing said is lost.
    await stack.slack.user_posts(SUPPORT, "third", thread_ts=ts)
    sessions = await eventually(lambda: (s := stack.agents.state.sessions_snapshot()) and len(s) == 2 and s)
    new = next(s for s in sessions if s["id"] != session)
    seed = await eventually(lambda: stack.agents.state.processed_messages(new["id"]))
    assert len(seed) == 1 and "second" in seed[0] and "third" in seed[0]


async def test_sentry_events_from_a_ticket_carry_its_tags_and_steps(stack: Stack) -> None:
    import sentry_sdk

    from app.observability.scrub import Scrubber
    from app.observability.sentry import init_sentry

    events: list[dict] = []

    class Capture(sentry_sdk.transport.Transport):
        def capture_envelope(self, envelope):  # type: ignore[no-untyped-def]
            events.extend(item.payload.json for item in envelope.items if item.payload.json)

    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"message": "working on it"}, {"sleep": 3.0}, {"message": "done"},
    ]}]})
    assert init_sentry("https://public@sentry.example.invalid/1", Scrubber(), transport=Capture)
    try:
        app = stack.start_app()
        ts = await stack.slack.user_posts(SUPPORT, "tag me")
        await eventually(lambda: "working on it" in bot_text(stack, ts), timeout=20)
        stack.slack.state.archive(SUPPORT)  # the renderer's next post fails: an error is logged
        ticket = await eventually(lambda: _state_is(app, ts, "failed"), timeout=20)
        sentry_sdk.flush()
        tagged = await eventually(
            lambda: [e for e in events if (e.get("tags") or {}).get("ticket") == ticket.id], timeout=10
        )
    finally:
        sentry_sdk.init(dsn=None)
    tags = tagged[0]["tags"]
    assert tags["environment"] == "internal" and tags["team"] == "T0001"
    assert tags["session"] == ticket.session_id
    crumbs = [c.get("message") for c in (tagged[0].get("breadcrumbs") or {}).get("values", [])]
    assert "session.status_running" in crumbs


async def test_anthropic_overload_and_rate_limits_are_ridden_out(stack: Stack) -> None:
    stack.start_app()
    stack.agents.fail_next("POST", r"^/v1/sessions$", 429, count=2, retry_after=0.2)
    stack.agents.fail_next("GET", r"/events/stream$", 529, count=2)
    stack.agents.fail_next("GET", r"/events$", 500, count=1)
    ts = await stack.slack.user_posts(SUPPORT, "busy day")
    await eventually(lambda: bot_replies(stack, ts) == ["You asked: busy day"], timeout=30)
    assert stack.agents.state.processed_messages(only_session(stack)) == ["busy day"]


async def test_messages_from_other_bots_are_ignored(stack: Stack) -> None:
    app = stack.start_app()
    event = {
        "type": "message", "subtype": "bot_message", "bot_id": "B0OTHER", "text": "<@UBOT> ping from a bot",
        "ts": "1700000000.000100", "channel": SUPPORT, "channel_type": "channel",
    }
    mention = {**event, "type": "app_mention"}
    mention.pop("subtype")
    for delivered in (mention, event):
        assert (await stack.slack.send_event(delivered)).status == 200
    await asyncio.sleep(1.0)
    assert stack.agents.state.sessions_snapshot() == []
    assert app.run_coroutine(app.services.store.by_thread("T0001", SUPPORT, "1700000000.000100")) is None


async def test_a_model_request_that_fails_mid_answer_leaves_only_the_retried_answer(stack: Stack) -> None:
    """The API sends no buffered message for a failed attempt; `span.model_request_end` closes
    its preview. The thread ends with the retried answer alone, not the cut-off preview before it."""
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"message": "The gateway certificate expired at 02:00; renewing it now.", "deltas": 6,
         "fail_attempts": 1, "fail_after": 3},
    ]}]})
    stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "is the VPN down?")
    await eventually(lambda: stack.slack.state.ok_calls("chat.stopStream"), timeout=20)
    await eventually(lambda: "renewing it now" in bot_text(stack, ts))
    await asyncio.sleep(0.5)
    messages = [m for m in stack.slack.state.thread(SUPPORT, ts) if m.get("bot_id") and m["ts"] != ts]
    shown = "".join(visible_text(m) for m in messages)
    assert shown.strip() == "The gateway certificate expired at 02:00; renewing it now.", shown
