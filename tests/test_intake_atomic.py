"""Intake commits a Slack message whole or not at all: whichever Redis call fails, before it ran
or after it ran with its reply lost, Slack's retry of the delivery leaves exactly one inbox
message and one job, on one ticket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from app.config.model import AppConfig
from app.jobs.queue import STREAM, JobQueue
from app.slack.intake import Intake
from app.tickets.store import TicketStore

BOT = "UBOT"


def mention(ts: str, thread_ts: str | None = None, text: str = "help me") -> dict[str, Any]:
    event = {"type": "app_mention", "channel": "C1", "user": "U1", "ts": ts, "text": f"<@{BOT}> {text}"}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


class FailingRedis:
    """Makes call number `index` of the wrapped client fail, before or after Redis ran it."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.calls = 0
        self.fail_at: int | None = None
        self.after = False
        self.injected = False
        self._real: Callable[..., Awaitable[Any]] = client.execute_command

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        index = self.calls
        self.calls += 1
        if index == self.fail_at and not self.after:
            self.injected = True
            raise RedisConnectionError("injected: connection lost before the command")
        result = await self._real(*args, **kwargs)
        if index == self.fail_at and self.after:
            self.injected = True
            raise RedisConnectionError("injected: reply lost after the command ran")
        return result


async def count_calls(redis: aioredis.Redis, app_config: AppConfig, event: dict[str, Any]) -> int:
    await redis.script_flush()  # the first delivery after a Redis restart also loads the script
    failing = FailingRedis(redis)
    redis.execute_command = failing.execute_command  # type: ignore[method-assign]
    try:
        await Intake(TicketStore(redis), JobQueue(redis, "w"), app_config).handle(
            event_id="Ev-count", team_id="T1", event=event, bot_user_id=BOT, bot_id="B1"
        )
    finally:
        del redis.execute_command
    await redis.flushall()
    return failing.calls


async def work_of(redis: aioredis.Redis) -> tuple[int, int, list[str]]:
    tickets = [k for k in await redis.keys("sa:ticket:*") if k.count(":") == 2]
    inboxes = [k for k in await redis.keys("sa:ticket:*:inbox")]
    messages = [m for k in inboxes for m in await redis.lrange(k, 0, -1)]
    jobs = await redis.xlen(STREAM)
    return len(tickets), jobs, messages


@pytest.mark.parametrize("after", [False, True], ids=["before-it-ran", "reply-lost"])
@pytest.mark.parametrize("follow_up", [False, True], ids=["new-ticket", "follow-up"])
async def test_any_failed_intake_call_is_redone_exactly_once_by_slacks_retry(
    redis: aioredis.Redis, app_config: AppConfig, after: bool, follow_up: bool
) -> None:
    event = mention("200.1", thread_ts="100.1" if follow_up else None)
    calls = await count_calls(redis, app_config, event)
    assert calls >= 1
    for index in range(calls):
        await redis.flushall()
        intake = Intake(TicketStore(redis), JobQueue(redis, "w"), app_config)
        if follow_up:  # the thread's ticket exists already
            await intake.handle(event_id="Ev-0", team_id="T1", event=mention("100.1"), bot_user_id=BOT, bot_id="B1")
        before = await work_of(redis)
        await redis.script_flush()
        failing = FailingRedis(redis)
        failing.fail_at, failing.after = index, after
        redis.execute_command = failing.execute_command  # type: ignore[method-assign]
        try:
            with pytest.raises(Exception) as raised:
                await intake.handle(event_id="Ev-1", team_id="T1", event=event, bot_user_id=BOT, bot_id="B1")
        except pytest.fail.Exception:
            # This call was EVALSHA answered NOSCRIPT (a reply, not a lost one): the script is
            # then loaded and run, so there is no reply to lose here.
            assert after and not failing.injected
            continue
        finally:
            del redis.execute_command
        assert isinstance(raised.value, RedisConnectionError) and failing.injected
        if not after:  # nothing of a delivery that failed before Redis ran it may remain
            assert await work_of(redis) == before
        # Slack retries the same delivery, and also sends the message event of the same message.
        retry = await intake.handle(event_id="Ev-1", team_id="T1", event=event, bot_user_id=BOT, bot_id="B1")
        pair = await intake.handle(
            event_id="Ev-2", team_id="T1", event={**event, "type": "message"}, bot_user_id=BOT, bot_id="B1"
        )
        assert pair.action == "duplicate"
        # A lost reply may belong to the script run that committed (the retry is then a
        # duplicate) or to a step before it (the retry commits); either way exactly once.
        taken = "continued" if follow_up else "opened"
        assert retry.action in (("duplicate", taken) if after else (taken,))
        tickets, jobs, messages = await work_of(redis)
        assert tickets == 1
        assert jobs == before[1] + 1
        assert len(messages) == len(before[2]) + 1
        assert sum('"ts":"200.1"' in m for m in messages) == 1


async def test_an_ignored_message_writes_nothing(redis: aioredis.Redis, app_config: AppConfig) -> None:
    intake = Intake(TicketStore(redis), JobQueue(redis, "w"), app_config)
    chatter = {"type": "message", "channel": "C1", "user": "U1", "ts": "300.1", "text": "just chatting"}
    result = await intake.handle(event_id="Ev-9", team_id="T1", event=chatter, bot_user_id=BOT, bot_id="B1")
    assert result.action == "ignored"
    assert await redis.keys("*") == []


async def test_a_reply_in_a_resolved_thread_is_ignored_but_a_mention_is_taken(
    redis: aioredis.Redis, app_config: AppConfig
) -> None:
    store = TicketStore(redis)
    intake = Intake(store, JobQueue(redis, "w"), app_config)
    opened = await intake.handle(event_id="Ev-1", team_id="T1", event=mention("100.1"), bot_user_id=BOT, bot_id="B1")
    assert opened.ticket_id
    ticket = await store.get(opened.ticket_id)
    assert ticket is not None
    from app.tickets.model import TicketState

    await store.transition(ticket, TicketState.RESOLVED, "resolved")
    reply = {"type": "message", "channel": "C1", "user": "U1", "ts": "101.1", "thread_ts": "100.1", "text": "thanks"}
    ignored = await intake.handle(event_id="Ev-2", team_id="T1", event=reply, bot_user_id=BOT, bot_id="B1")
    assert ignored.action == "ignored"
    again = await intake.handle(
        event_id="Ev-3", team_id="T1", event=mention("102.1", thread_ts="100.1"), bot_user_id=BOT, bot_id="B1"
    )
    assert again.action == "continued" and again.ticket_id == opened.ticket_id
    assert len(await store.pending_messages(opened.ticket_id)) == 2
