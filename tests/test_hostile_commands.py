"""Issue 16, finding 7: `/support <question>` is handled once per delivery: Slack's retry
(X-Slack-Retry-Num) and a replay of the captured request within the signature's five minutes
open no second ticket; the same question asked again (a new trigger id) does."""

from __future__ import annotations

import asyncio
import time
import urllib.parse

from app.sandbox.stack import Stack
from app.slack.commands import command_delivery_key
from tests.support import eventually


def command_form(stack: Stack, text: str, trigger: str) -> bytes:
    return urllib.parse.urlencode({
        "team_id": "T0001", "channel_id": "C0001", "channel_name": "support", "user_id": "U0001",
        "user_name": "alice", "command": "/support", "text": text, "api_app_id": "A0001",
        "response_url": stack.slack._new_response_url({"kind": "command", "channel": "C0001", "user": "U0001"}),
        "trigger_id": trigger,
    }).encode()


async def test_retries_and_replays_of_a_command_open_one_ticket(stack: Stack) -> None:
    app = stack.start_app()
    sender = stack.slack.events
    body = command_form(stack, "my invoice is wrong", stack.slack.new_trigger("U0001"))
    ts = int(time.time())
    first = await sender.post(body, "application/x-www-form-urlencoded", timestamp=ts)
    retry = await sender.post(body, "application/x-www-form-urlencoded", timestamp=ts + 1,
                              extra_headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    replay = await sender.post(body, "application/x-www-form-urlencoded", timestamp=ts)
    assert (first.status, retry.status, replay.status) == (200, 200, 200)

    def tickets() -> list[object]:
        return list(app.run_coroutine(app.services.store.channel_tickets("T0001", "C0001")))

    await eventually(lambda: len(tickets()) == 1)
    await asyncio.sleep(1.0)  # the lazy listeners of the retry and the replay have run by now
    assert len(tickets()) == 1
    again = command_form(stack, "my invoice is wrong", stack.slack.new_trigger("U0001"))
    await sender.post(again, "application/x-www-form-urlencoded")
    await eventually(lambda: len(tickets()) == 2)


def test_delivery_key_covers_who_where_what_and_the_trigger() -> None:
    base = {"team_id": "T", "channel_id": "C", "user_id": "U", "command": "/support", "text": "q", "trigger_id": "1"}
    key = command_delivery_key(base)
    assert key == command_delivery_key(dict(base))
    for field in base:
        assert command_delivery_key({**base, field: "other"}) != key, field
