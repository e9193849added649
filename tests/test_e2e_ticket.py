"""One ticket end to end: signed Slack event in, the agent's answer in the thread out.

Everything goes over real sockets: the Slack emulator signs and delivers events to the app's
HTTP endpoint (real slack_bolt), the worker drives the Managed Agents emulator with the real
anthropic client, and posts to the Slack emulator with the real slack_sdk client.
"""

from __future__ import annotations

import asyncio

from app.sandbox.stack import Stack
from tests.support import eventually

SUPPORT = "C0001"






def bot_replies(stack: Stack, thread_ts: str) -> list[str]:
    return [
        m.get("text", "")
        for m in stack.slack.state.thread(SUPPORT, thread_ts)
        if m.get("bot_id") and m.get("ts") != thread_ts
    ]


def finished_replies(stack: Stack, thread_ts: str) -> list[str]:
    """The bot's replies once none of them is still streaming ([] until then)."""
    thread = [m for m in stack.slack.state.thread(SUPPORT, thread_ts) if m.get("bot_id") and m.get("ts") != thread_ts]
    if any((m.get("stream") or {}).get("state") == "streaming" for m in thread):
        return []
    return [m.get("text", "") for m in thread]


async def test_mention_opens_a_ticket_and_the_answer_lands_in_the_thread(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": "(?i)password", "steps": [
        {"thinking": {}},
        {"message": "Use the reset link on the sign-in page.", "deltas": 3},
    ]}]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "how do I reset my password?")
    replies = await eventually(lambda: finished_replies(stack, ts))
    assert replies == ["Use the reset link on the sign-in page."]
    ticket = app.run_coroutine(app.services.store.by_thread("T0001", SUPPORT, ts))
    assert ticket.number == 1 and ticket.session_id and ticket.environment == "internal"
    assert stack.agents.state.processed_messages(ticket.session_id) == ["how do I reset my password?"]


async def test_follow_up_in_the_thread_goes_to_the_same_session(stack: Stack) -> None:
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "first question")
    await eventually(lambda: len(finished_replies(stack, ts)) == 1)
    await stack.slack.user_posts(SUPPORT, "and a follow-up", thread_ts=ts, mention_bot=False)
    await eventually(lambda: len(finished_replies(stack, ts)) == 2)
    assert bot_replies(stack, ts) == ["You asked: first question", "You asked: and a follow-up"]
    sessions = stack.agents.state.sessions_snapshot()
    assert len(sessions) == 1
    assert stack.agents.state.processed_messages(sessions[0]["id"]) == ["first question", "and a follow-up"]
    ticket = app.run_coroutine(app.services.store.by_thread("T0001", SUPPORT, ts))
    assert ticket.session_id == sessions[0]["id"]


async def test_restart_keeps_the_thread_to_session_mapping(stack: Stack) -> None:
    first = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "before restart")
    await eventually(lambda: len(finished_replies(stack, ts)) == 1)
    first.stop()
    stack.apps.remove(first)
    stack.start_app()
    await stack.slack.user_posts(SUPPORT, "after restart", thread_ts=ts, mention_bot=False)
    await eventually(lambda: len(finished_replies(stack, ts)) == 2)
    sessions = stack.agents.state.sessions_snapshot()
    assert len(sessions) == 1
    assert stack.agents.state.processed_messages(sessions[0]["id"]) == ["before restart", "after restart"]


async def test_duplicate_deliveries_make_one_ticket_and_one_reply(stack: Stack) -> None:
    stack.start_app()
    ts, deliveries = await stack.slack.user_posts_detailed(SUPPORT, "are you there?")
    # Slack's pair for one message: app_mention and message, both acknowledged.
    assert [d.status for d in deliveries] == [200, 200]
    mention = next(d for d in deliveries if d.request and d.request.get("event", {}).get("type") == "app_mention")
    for retry in range(1, 5):
        again = await stack.slack.events.send_event(
            mention.request["event"], event_id=mention.event_id, retry_num=retry
        )
        assert again.status == 200
    await eventually(lambda: bot_replies(stack, ts))
    await asyncio.sleep(1.0)  # give any duplicate time to show up
    assert bot_replies(stack, ts) == ["You asked: are you there?"]
    assert len(stack.agents.state.sessions_snapshot()) == 1


async def test_bot_ignores_its_own_messages(stack: Stack) -> None:
    stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "echo test")
    await eventually(lambda: bot_replies(stack, ts))
    # Slack echoes the bot's own messages back; streamed replies are not echoed by the emulator,
    # so deliver the echo Slack would send: in the thread, even mentioning the bot, it is ignored.
    reply = next(m for m in stack.slack.state.thread(SUPPORT, ts) if m.get("bot_id"))
    echo = {
        "type": "message", "channel": SUPPORT, "channel_type": "channel", "user": "UBOT", "bot_id": "B0001",
        "text": "<@UBOT> " + (reply.get("text") or "answer"), "ts": f"{float(reply['ts']) + 0.5:.6f}",
        "thread_ts": ts,
    }
    assert (await stack.slack.send_event(echo)).status == 200
    await asyncio.sleep(0.5)
    sessions = stack.agents.state.sessions_snapshot()
    assert stack.agents.state.processed_messages(sessions[0]["id"]) == ["echo test"]
