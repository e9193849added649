"""StreamRenderer against the Slack emulator: real AsyncWebClient over HTTP, real Redis.

The emulator enforces Slack's per-method rate limits (scaled x60 here so a minute's budget
passes in a second, with our buckets scaled the same), stream expiry and content limits.
No assertion depends on timing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.bench.stream import lost_chars
from app.bench.synthetic import delta, event, message, play, start, synthetic_turn
from app.render.blocks import parse_approval_value, parse_feedback_value
from app.render.ratelimit import TokenBuckets
from app.render.slack_text import neutralise_mentions
from app.render.stream import StreamRenderer
from app.sandbox.slack import RateLimitConfig, SlackEmulator, visible_tasks, visible_text
from app.tickets.model import Ticket
from app.trace import record

SCALE = 60.0
BOT = "UBOT"


@pytest.fixture(scope="module")
def emulator() -> Iterator[SlackEmulator]:
    emu = SlackEmulator(rate_limits=RateLimitConfig(scale=SCALE)).start()
    yield emu
    emu.stop()


@pytest.fixture
def slack(emulator: SlackEmulator) -> SlackEmulator:
    emulator.state.reset()
    emulator.configure(rate_limits=RateLimitConfig(scale=SCALE), stream_lifetime=300.0)
    return emulator


@pytest.fixture
async def make(slack: SlackEmulator, redis: aioredis.Redis) -> AsyncIterator[Any]:
    made: list[StreamRenderer] = []

    def factory(bucket_scale: float = SCALE, **kwargs: Any) -> StreamRenderer:
        kwargs.setdefault("flush_interval", 0.05)
        renderer = StreamRenderer(
            slack.client(), redis, buckets=TokenBuckets(redis, scale=bucket_scale), **kwargs
        )
        made.append(renderer)
        return renderer

    yield factory
    for renderer in made:
        await renderer.aclose()


async def new_ticket(emu: SlackEmulator, n: int = 1, title: str = "VPN down") -> Ticket:
    ts = await emu.user_posts("C0001", f"help with ticket {n}", user="U0001")
    return Ticket(
        id=f"T0001-{n}", number=n, team_id="T0001", channel_id="C0001", thread_ts=ts,
        requester_id="U0001", environment="internal", title=title,
    )


def bot_messages(emu: SlackEmulator, ticket: Ticket) -> list[dict[str, Any]]:
    return [m for m in emu.state.thread("C0001", ticket.thread_ts) if m.get("user") == BOT]


def shown(emu: SlackEmulator, ticket: Ticket) -> str:
    return "".join(visible_text(m) for m in bot_messages(emu, ticket))


def task_states(msgs: list[dict[str, Any]]) -> dict[str, str]:
    """Each task's status as the thread shows it; a task shown in two messages fails."""
    states: dict[str, str] = {}
    for m in msgs:
        for title, status in visible_tasks(m).items():
            assert title not in states, f"task {title!r} shown twice"
            states[title] = status
    return states


def final_tasks(msgs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    tasks: dict[str, dict[str, Any]] = {}
    for m in msgs:
        for tid, task in (m.get("stream") or {}).get("tasks", {}).items():
            tasks[tid] = task
    return tasks


def block_types(msg: dict[str, Any]) -> list[str]:
    return [b["type"] for b in msg.get("blocks") or []]


# ---- one turn ---------------------------------------------------------------------------


async def test_turn_with_20_tool_calls_and_a_long_streamed_answer(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    turn = synthetic_turn("big", tool_calls=20, answer_chars=30_000, delta_chars=80, seconds=1.5)
    await play(renderer, ticket, turn)

    intro, answer = turn.messages
    msgs = bot_messages(slack, ticket)
    assert shown(slack, ticket) == intro + "\n\n" + answer  # nothing doubled, nothing cut
    assert len(msgs) >= 3  # 30,000 characters need three 12,000-character messages
    for m in msgs:
        assert m["stream"]["state"] == "stopped"
        assert len(m["text"]) <= 12_000
    for m in msgs[:-1]:
        assert m["text"].endswith("\n\n")  # split between paragraphs
    tasks = final_tasks(msgs)
    assert len(tasks) == 20
    assert {t["status"] for t in tasks.values()} == {"complete"}
    first = next(t for t in tasks.values() if "ping" in t["title"])
    assert first["history"][0] == "in_progress" and first["history"][-1] == "complete"
    assert any(t["title"].startswith("tickets · search issues: “vpn") for t in tasks.values())
    for call in slack.state.ok_calls("chat.startStream"):
        assert call.params["recipient_user_id"] == "U0001"
        assert call.params["recipient_team_id"] == "T0001"
    feedback = msgs[-1]["blocks"][0]["elements"][0]
    assert feedback["type"] == "feedback_buttons" and feedback["action_id"] == "feedback"
    assert parse_feedback_value(feedback["positive_button"]["value"]) == ("good", ticket.id)
    assert msgs[-1]["metadata"]["event_payload"]["ticket_id"] == ticket.id
    # coalesced: far fewer Slack calls than agent events
    assert len(slack.state.calls()) < turn.content_events / 5
    assert slack.state.ratelimited_count == 0


async def test_a_turn_many_stream_lifetimes_long_rotates_streams(slack: SlackEmulator, make: Any) -> None:
    """A two-hour turn, scaled: streams rotate every 0.3 s here and the turn lasts ten of them.
    The lifetime (0.8 s) leaves room for a loaded machine's scheduling delays: this test is about
    rotation; a stream that expires before its rotation is #12's to reconcile."""
    slack.configure(stream_lifetime=0.8)
    renderer = make(rotate_after=0.3, flush_interval=0.03)
    ticket = await new_ticket(slack)
    turn = synthetic_turn("long", tool_calls=6, answer_chars=4_000, delta_chars=20, seconds=3.0)
    await play(renderer, ticket, turn)

    intro, answer = turn.messages
    assert shown(slack, ticket) in (intro + "\n\n" + answer, intro + answer)
    msgs = bot_messages(slack, ticket)
    assert len(msgs) >= 6 and renderer.stats.rotations >= 5
    for m in msgs:
        assert m["stream"]["state"] == "stopped" or "edited" in m  # never left broken
    assert all(c.params["recipient_user_id"] == "U0001" for c in slack.state.calls("chat.startStream"))
    assert set(task_states(msgs).values()) == {"complete"}  # each task once, none left running
    assert "context_actions" in block_types(msgs[-1])


async def test_rotations_are_reported_for_the_trace(
    slack: SlackEmulator, make: Any, redis: aioredis.Redis
) -> None:
    """The worker's hook: each rotation (and expiry) lands in the ticket's trace record."""
    slack.configure(stream_lifetime=0.25)

    async def to_trace(ticket: Ticket, event: str, detail: dict[str, Any]) -> None:
        await record.record_stream(redis, ticket.id, event=event, detail=detail)

    renderer = make(rotate_after=0.15, flush_interval=0.03, on_stream_event=to_trace)
    ticket = await new_ticket(slack)
    turn = synthetic_turn("rot", tool_calls=3, answer_chars=1_500, delta_chars=20, seconds=1.0)
    await play(renderer, ticket, turn)

    recorded = await record.streams(redis, ticket.id)
    rotated = [r["detail"] for r in recorded if r["event"] == "rotated"]
    assert renderer.stats.rotations >= 1 and len(rotated) == renderer.stats.rotations
    assert len([r for r in recorded if r["event"] == "expired"]) == renderer.stats.expired
    assert {r["event"] for r in recorded} <= {"rotated", "expired"}
    # Each rotated message was stopped (or, expired first, finished with chat.update).
    finished = {c.params["ts"] for method in ("chat.stopStream", "chat.update") for c in slack.state.ok_calls(method)}
    for detail in rotated:
        assert set(detail) == {"ts", "age_seconds"}
        assert detail["age_seconds"] >= 0.15  # rotated only once rotate_after had passed
        assert detail["ts"] in {m["ts"] for m in bot_messages(slack, ticket)} and detail["ts"] in finished
    assert all(isinstance(r["at"], float) for r in recorded)


def tool_use(tid: str, name: str = "lookup") -> Any:
    return event("agent.tool_use", id=tid, name=name, input={"q": "vpn"})


def tool_result(tid: str, rid: str) -> Any:
    return event("agent.tool_result", id=rid, tool_use_id=tid, is_error=False, content=[])


def die(renderer: StreamRenderer) -> None:
    """The process dies: its flushers stop where they are, nothing is stopped or cleaned up."""
    for turn in list(renderer._turns.values()):
        assert turn.runner is not None
        turn.runner.cancel()
    renderer._turns.clear()


async def test_a_worker_dying_mid_answer_is_completed_in_the_same_message(
    slack: SlackEmulator, make: Any
) -> None:
    """The dead worker streamed part of an answer; the next one finishes that message in place
    from the replayed buffered event: every character once, no second copy, no note."""
    ticket = await new_ticket(slack)
    answer = "Looking at the VPN logs now. The gateway certificate expired at 02:00; renewing it."
    dying = make()
    await dying.delta(ticket, start("m1"))
    await dying.delta(ticket, delta("m1", answer[:40]))
    orphan = await eventually_call(slack, "chat.startStream")
    die(dying)
    assert slack.state.stream("C0001", orphan)["state"] == "streaming"  # type: ignore[index]

    events: list[tuple[str, dict[str, Any]]] = []

    async def hook(t: Ticket, name: str, detail: dict[str, Any]) -> None:
        events.append((name, detail))

    taker = make(on_stream_event=hook)
    await taker.event(ticket, message("m1", answer), replay=True)
    await taker.turn_ended(ticket, "end_turn")

    (msg,) = bot_messages(slack, ticket)
    assert msg["ts"] == orphan
    assert shown(slack, ticket) == answer
    assert "continued below" not in json.dumps(msg)
    assert slack.state.stream("C0001", orphan)["state"] == "stopped"  # type: ignore[index]
    assert ("adopted", {"ts": orphan}) in events and taker.stats.adopted == 1
    assert "context_actions" in block_types(msg)  # the turn's end is on it


async def test_a_tool_call_shown_by_a_dead_worker_ends_complete_in_its_one_place(
    slack: SlackEmulator, make: Any
) -> None:
    ticket = await new_ticket(slack)
    dying = make()
    await dying.event(ticket, event("session.status_running", id="run"), replay=False)
    await dying.event(ticket, tool_use("t1"), replay=False)
    orphan = await eventually_call(slack, "chat.startStream")
    die(dying)

    taker = make()
    # The takeover replays what was never marked shown: the tool use again, then what followed.
    await taker.event(ticket, tool_use("t1"), replay=True)
    await taker.event(ticket, tool_result("t1", "r1"), replay=True)
    await taker.event(ticket, message("m1", "Done: the lookup found it."), replay=True)
    await taker.turn_ended(ticket, "end_turn")

    msgs = bot_messages(slack, ticket)
    assert msgs[0]["ts"] == orphan
    assert shown(slack, ticket) == "Done: the lookup found it."
    states = task_states(msgs)  # fails if the task is in two messages
    assert list(states.values()) == ["complete"]


async def test_two_workers_dying_in_a_row_still_show_everything_once(slack: SlackEmulator, make: Any) -> None:
    ticket = await new_ticket(slack)
    words = [f"word{i} " for i in range(60)]
    text = "".join(words).strip()
    first = make()
    await first.delta(ticket, start("m1"))
    for w in words[:20]:
        await first.delta(ticket, delta("m1", w))
    await eventually_call(slack, "chat.startStream")
    await asyncio.sleep(0.2)
    die(first)
    second = make()
    await second.event(ticket, event("agent.thinking", id="th"), replay=True)
    await asyncio.sleep(0.3)
    die(second)
    third = make()
    await third.event(ticket, message("m1", text), replay=True)
    await third.turn_ended(ticket, "end_turn")
    assert shown(slack, ticket) == text
    assert len(bot_messages(slack, ticket)) == 1


async def test_a_finished_turn_is_not_shown_again_when_its_events_come_back(
    slack: SlackEmulator, make: Any
) -> None:
    """A Redis restart can lose the last "shown" marks: the same process must not repeat itself."""
    ticket = await new_ticket(slack)
    renderer = make()
    await renderer.event(ticket, message("m1", "The answer."), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    await renderer.event(ticket, message("m1", "The answer."), replay=True)
    await renderer.turn_ended(ticket, "end_turn")
    assert shown(slack, ticket) == "The answer."


async def eventually_call(slack: SlackEmulator, method: str) -> str:
    for _ in range(200):
        calls = slack.state.ok_calls(method)
        if calls:
            return str(calls[0].response["ts"])
        await asyncio.sleep(0.02)
    raise AssertionError(f"no {method} call")


async def test_a_failing_stream_hook_does_not_break_the_turn(
    slack: SlackEmulator, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    slack.configure(stream_lifetime=0.25)
    calls: list[str] = []

    async def broken(ticket: Ticket, event: str, detail: dict[str, Any]) -> None:
        calls.append(event)
        raise RuntimeError("redis is down")

    renderer = make(rotate_after=0.15, flush_interval=0.03, on_stream_event=broken)
    ticket = await new_ticket(slack)
    turn = synthetic_turn("brk", tool_calls=3, answer_chars=1_500, delta_chars=20, seconds=1.0)
    with caplog.at_level(logging.ERROR, logger="app.render.stream"):
        await play(renderer, ticket, turn)

    intro, answer = turn.messages
    assert renderer.stats.rotations >= 1 and calls.count("rotated") == renderer.stats.rotations
    assert shown(slack, ticket) in (intro + "\n\n" + answer, intro + answer)
    assert lost_chars(turn.messages, shown(slack, ticket)) == 0
    msgs = bot_messages(slack, ticket)
    for m in msgs:
        assert m["stream"]["state"] == "stopped" or "edited" in m
    assert "context_actions" in block_types(msgs[-1])  # the turn was finished
    failures = [r for r in caplog.records if r.getMessage() == "recording a stream event failed"]
    assert len(failures) == len(calls)
    assert not [r for r in caplog.records if r.getMessage() in ("rendering failed", "renderer stopped")]


async def test_an_expired_stream_is_finished_with_chat_update(slack: SlackEmulator, make: Any) -> None:
    slack.configure(stream_lifetime=0.3)
    renderer = make(rotate_after=600.0, flush_interval=0.05)  # never rotates in time
    ticket = await new_ticket(slack)
    turn = synthetic_turn("exp", tool_calls=3, answer_chars=2_000, delta_chars=20, seconds=1.5)
    await play(renderer, ticket, turn)

    intro, answer = turn.messages
    assert renderer.stats.expired >= 2
    errors = [c for c in slack.state.calls("chat.appendStream") if c.error == "message_not_in_streaming_state"]
    assert errors
    updated = {c.params["ts"] for c in slack.state.ok_calls("chat.update")}
    assert {c.params["ts"] for c in errors} <= updated  # continued on the same message
    msgs = bot_messages(slack, ticket)
    for m in msgs:
        assert m["stream"]["state"] == "stopped" or "edited" in m
    assert lost_chars(turn.messages, shown(slack, ticket)) == 0
    assert shown(slack, ticket) in (intro + "\n\n" + answer, intro + answer)
    assert "context_actions" in block_types(msgs[-1])


# ---- many tickets -----------------------------------------------------------------------


async def test_fifty_tickets_streaming_at_once_in_one_channel(slack: SlackEmulator, make: Any) -> None:
    # Our buckets run four times as fast as the emulator's limits, so Slack's 429s really happen.
    renderer = make(bucket_scale=SCALE * 4, flush_interval=0.2)
    tickets = [await new_ticket(slack, n) for n in range(1, 51)]
    turns = [
        synthetic_turn(f"t{n}", tool_calls=3, answer_chars=1_500, delta_chars=30, seconds=1.5, seed=n)
        for n in range(50)
    ]
    # And one 429 for sure, whatever the machine's pace makes of the buckets.
    slack.state.fail_next("chat.appendStream", "ratelimited", status=429, retry_after=1)
    await asyncio.gather(*(play(renderer, t, turn) for t, turn in zip(tickets, turns, strict=True)))

    assert renderer.stats.rate_limited >= max(1, slack.state.ratelimited_count)  # each 429 was seen...
    assert renderer.stats.dropped_chars == 0
    for ticket, turn in zip(tickets, turns, strict=True):  # ...and recovered from
        intro, answer = turn.messages
        assert shown(slack, ticket) == intro + "\n\n" + answer
        msgs = bot_messages(slack, ticket)
        assert len(msgs) == 1 and msgs[0]["stream"]["state"] == "stopped"
        assert {t["status"] for t in final_tasks(msgs).values()} == {"complete"}
    assert len(slack.state.calls()) / 50 < 15


# ---- fallback, splitting, mentions --------------------------------------------------------


@pytest.mark.parametrize("refusal", ["not_allowed", "unknown_method"])
async def test_fallback_updates_one_message_where_streaming_is_refused(
    slack: SlackEmulator, make: Any, refusal: str
) -> None:
    slack.state.fail_next("chat.startStream", refusal)
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def hook(ticket: Ticket, event: str, detail: dict[str, Any]) -> None:
        events.append((ticket.id, event, detail))

    renderer = make(on_stream_event=hook)
    for n in (1, 2):
        ticket = await new_ticket(slack, n)
        turn = synthetic_turn(f"fb{n}", tool_calls=3, answer_chars=1_500, seconds=0.6)
        await play(renderer, ticket, turn)
        intro, answer = turn.messages
        msgs = bot_messages(slack, ticket)
        assert len(msgs) == 1 and "stream" not in msgs[0]
        assert msgs[0]["text"] == intro + "\n\n" + answer
        blocks = msgs[0]["blocks"]
        assert block_types(msgs[0]) == ["section", "markdown", "context_actions"]
        assert blocks[1]["text"] == intro + "\n\n" + answer
        assert blocks[0]["text"]["text"].count(":white_check_mark:") == 3
    # the workspace refused once: the second turn did not even try
    assert len(slack.state.calls("chat.startStream")) == 1
    assert len(slack.state.ok_calls("chat.postMessage")) == 2
    assert len(slack.state.ok_calls("chat.update")) >= 2
    assert renderer.stats.fallbacks == 1
    assert events == [("T0001-1", "refused", {"error": refusal, "scope": "workspace"})]


async def test_a_recipient_slack_refuses_falls_back_for_that_turn_only(
    slack: SlackEmulator, make: Any
) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    await renderer.begin_turn(ticket, "U0404")  # not a member of the workspace
    await play(renderer, ticket, synthetic_turn("r1", tool_calls=1, answer_chars=200, seconds=0.3))
    await renderer.begin_turn(ticket, "U0002")
    await play(renderer, ticket, synthetic_turn("r2", tool_calls=1, answer_chars=200, seconds=0.3))
    starts = slack.state.calls("chat.startStream")
    assert [c.params["recipient_user_id"] for c in starts] == ["U0404", "U0002"]
    assert [c.ok for c in starts] == [False, True]
    msgs = bot_messages(slack, ticket)
    assert "stream" not in msgs[0] and msgs[-1]["stream"]["state"] == "stopped"


async def test_long_answers_split_without_losing_a_character_in_fallback(
    slack: SlackEmulator, make: Any
) -> None:
    renderer = make(streaming=False)
    ticket = await new_ticket(slack)
    turn = synthetic_turn("split", tool_calls=2, answer_chars=40_000, delta_chars=500, seconds=0.8)
    await play(renderer, ticket, turn)
    intro, answer = turn.messages
    msgs = bot_messages(slack, ticket)
    assert len(msgs) >= 4
    assert shown(slack, ticket) == intro + "\n\n" + answer
    for m in msgs:
        assert len(m["text"]) <= 12_000
        markdown = [b["text"] for b in m["blocks"] if b["type"] == "markdown"]
        assert markdown == [m["text"]]
    for m in msgs[:-1]:
        assert m["text"].endswith("\n\n")
    assert not slack.state.calls("chat.startStream")


async def test_mentions_in_agent_output_are_neutralised_even_split_across_deltas(
    slack: SlackEmulator, make: Any
) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    text = "Heads up @channel and <!here>: <!subteam^S0001|@support-team> will fix it. @everyone ok"
    cuts = ["Heads up @chan", "nel and <!he", "re>: <!subteam^S0001|@sup", "port-team> will fix it. @every",
            "one ok"]
    await renderer.event(ticket, event("session.status_running", id="e0"), replay=False)
    await renderer.delta(ticket, start("m1"))
    for i, piece in enumerate(cuts):
        await renderer.delta(ticket, delta("m1", piece))
        if i % 2:
            await asyncio.sleep(0.08)
    await renderer.event(ticket, message("m1", text), replay=False)
    await renderer.event(ticket, event("agent.tool_use", id="u1", name="web_search",
                                       input={"query": "@here status"}), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    out = shown(slack, ticket)
    assert out == neutralise_mentions(text)
    for bad in ("@channel", "<!here>", "<!subteam", "@everyone"):
        assert bad not in out
    assert "@here" not in json.dumps(final_tasks(bot_messages(slack, ticket)))


# ---- deltas and the buffered message -----------------------------------------------------


async def _one_message(renderer: StreamRenderer, ticket: Ticket, deltas: list[str], final: str) -> None:
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    if deltas:
        await renderer.delta(ticket, start("m1"))
    for piece in deltas:
        await renderer.delta(ticket, delta("m1", piece))
        await asyncio.sleep(0.03)
    await asyncio.sleep(0.1)  # let the live text reach Slack first
    await renderer.event(ticket, message("m1", final), replay=False)
    await renderer.turn_ended(ticket, "end_turn")


@pytest.mark.parametrize(
    ("deltas", "final"),
    [
        (["The gateway ", "certificate ", "expired"], "The gateway certificate expired."),  # prefix
        (["The gateway ", "certificate ", "expired."], "The gateway certificate expired."),  # all
        ([], "The gateway certificate expired."),  # no deltas at all
    ],
)
async def test_buffered_message_completes_live_text_without_doubling(
    slack: SlackEmulator, make: Any, deltas: list[str], final: str
) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    await _one_message(renderer, ticket, deltas, final)
    assert shown(slack, ticket) == final
    assert renderer.stats.fixups == 0
    streamed = "".join(
        chunk.get("text", "")
        for c in slack.state.ok_calls()
        if c.method.startswith("chat.") and c.method.endswith("Stream")
        for chunk in c.params.get("chunks") or []
        if chunk["type"] == "markdown_text"
    )
    assert streamed == final


async def test_live_text_that_went_astray_is_fixed_at_the_stop(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    final = "The gateway certificate expired at 02:00; renewing it now."
    await _one_message(renderer, ticket, ["The gatway ", "certifcate ", "expired "], final)
    assert shown(slack, ticket) == final  # the buffered text wins
    assert renderer.stats.diverged == 1 and renderer.stats.fixups == 1
    (msg,) = bot_messages(slack, ticket)
    assert "edited" in msg and "context_actions" in block_types(msg)  # feedback kept


# ---- status, approvals, errors, recipient, footer -------------------------------------------


async def test_status_shows_while_thinking_and_is_gone_after(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, event("agent.thinking", id="th"), replay=False)
    for _ in range(100):
        if slack.state.status("C0001", ticket.thread_ts):
            break
        await asyncio.sleep(0.02)
    status = slack.state.status("C0001", ticket.thread_ts)
    assert status is not None and status["status"] == "is working on it…"
    assert not slack.state.calls("chat.startStream")
    await renderer.event(ticket, message("m1", "Found it."), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    assert slack.state.status("C0001", ticket.thread_ts) is None
    # a turn that shows nothing clears its status itself
    other = await new_ticket(slack, 2)
    await renderer.event(other, event("session.status_running", id="r2"), replay=False)
    for _ in range(100):
        if slack.state.status("C0001", other.thread_ts):
            break
        await asyncio.sleep(0.02)
    await renderer.turn_ended(other, "end_turn")
    assert slack.state.status("C0001", other.thread_ts) is None
    assert not bot_messages(slack, other)


async def test_tool_calls_waiting_for_approval_get_approve_and_deny_buttons(
    slack: SlackEmulator, make: Any
) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    ask = event("agent.mcp_tool_use", id="sevt_ask", name="restart_gateway", mcp_server_name="ops",
                input={"host": "gw1"}, evaluated_permission="ask")
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, message("m1", "I need to restart the gateway."), replay=False)
    await renderer.event(ticket, ask, replay=False)
    idle = event("session.status_idle", id="i", stop_reason={"type": "requires_action", "event_ids": ["sevt_ask"]})
    await renderer.event(ticket, idle, replay=False)
    await renderer.turn_ended(ticket, "requires_action")

    (first,) = bot_messages(slack, ticket)
    assert first["stream"]["tasks"]["sevt_ask"]["status"] == "pending"
    actions = next(b for b in first["blocks"] if b["type"] == "actions")
    ids = [e["action_id"] for e in actions["elements"]]
    assert ids == ["tool_approve", "tool_deny"]
    assert parse_approval_value(actions["elements"][0]["value"]) == (ticket.id, "sevt_ask")
    assert "context_actions" not in block_types(first)  # no feedback before the turn is done

    # approved: the session runs on; the answer lands in a new stream, and the call ends
    # complete where it was shown, its buttons gone: not a second card in the new message
    await renderer.event(ticket, event("session.status_running", id="r2"), replay=False)
    await renderer.event(ticket, event("agent.mcp_tool_result", id="res", mcp_tool_use_id="sevt_ask",
                                       content=[{"type": "text", "text": "restarted"}]), replay=False)
    await renderer.event(ticket, message("m2", "Done: the gateway is back."), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    msgs = bot_messages(slack, ticket)
    first, second = msgs[0], msgs[-1]
    assert list(task_states(msgs).values()) == ["complete"]  # one card, in the first message
    assert "restarted" in json.dumps(first["blocks"])
    assert "actions" not in block_types(first)
    assert visible_text(second) == "Done: the gateway is back." and "context_actions" in block_types(second)


async def test_errors_and_stops_are_shown_in_plain_words(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    err = {"type": "model_overloaded_error", "message": "x", "retry_status": {"type": "retrying"}}
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, message("m1", "Looking."), replay=False)
    await renderer.event(ticket, event("session.error", id="e1", error=err), replay=False)
    await renderer.event(ticket, event("session.status_rescheduled", id="rs"), replay=False)
    await renderer.event(ticket, event("session.status_running", id="r2"), replay=False)
    await renderer.event(ticket, event("session.usage", id="u", usage={}), replay=False)  # ignored
    err["retry_status"] = {"type": "exhausted"}
    await renderer.event(ticket, event("session.error", id="e2", error=err), replay=False)
    await renderer.turn_ended(ticket, "retries_exhausted")
    (msg,) = bot_messages(slack, ticket)
    tasks = msg["stream"]["tasks"]
    assert tasks["note-e1"]["title"] == "The model is overloaded: retrying"
    assert tasks["note-e1"]["status"] == "complete"
    assert tasks["note-rs"]["status"] == "complete"
    assert tasks["note-e2"]["status"] == "error"
    notes = [b for b in msg["blocks"] if b["type"] == "context"]
    assert "gave up" in notes[0]["elements"][0]["text"]

    other = await new_ticket(slack, 2)
    await renderer.event(other, event("session.status_running", id="r3"), replay=False)
    await renderer.event(other, message("m3", "Starting."), replay=False)
    await renderer.turn_ended(other, "terminated")
    (msg,) = bot_messages(slack, other)
    assert block_types(msg) == ["context"]  # the note; no feedback on a dead session


async def test_recipient_is_kept_in_redis_across_workers(
    slack: SlackEmulator, make: Any, redis: aioredis.Redis
) -> None:
    ticket = await new_ticket(slack)
    await make().begin_turn(ticket, "U0002")
    other = make()  # another worker process picks the ticket up
    await play(other, ticket, synthetic_turn("rc", tool_calls=0, answer_chars=100, seconds=0.2))
    (call,) = slack.state.ok_calls("chat.startStream")
    assert call.params["recipient_user_id"] == "U0002"


async def test_cost_footer_and_plan_title(slack: SlackEmulator, make: Any) -> None:
    async def footer(ticket: Ticket) -> str:
        return f"{ticket.ref} so far: $0.42"

    renderer = make(footer=footer, task_display_mode="plan")
    ticket = await new_ticket(slack, title="VPN down in Europe")
    await play(renderer, ticket, synthetic_turn("cf", tool_calls=2, answer_chars=200, seconds=0.3))
    (msg,) = bot_messages(slack, ticket)
    assert msg["stream"]["plan_title"] == "VPN down in Europe"
    assert msg["stream"]["task_display_mode"] == "plan"
    context = [b for b in msg["blocks"] if b["type"] == "context"]
    assert context[-1]["elements"][0]["text"] == "#1 so far: $0.42"


async def test_notices_are_posted_with_mentions_neutralised(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    await renderer.notice(ticket, "The session failed, @channel please look")
    (msg,) = bot_messages(slack, ticket)
    assert msg["text"] == "The session failed, @\u200bchannel please look"


# ---- failures ---------------------------------------------------------------------------------


async def test_transient_and_too_long_errors_lose_nothing(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    slack.state.fail_next("chat.appendStream", "internal_error")
    slack.state.fail_next("chat.appendStream", "msg_too_long")
    turn = synthetic_turn("tr", tool_calls=2, answer_chars=1_500, delta_chars=20, seconds=0.8)
    await play(renderer, ticket, turn)
    assert {c.error for c in slack.state.calls("chat.appendStream")} >= {"internal_error", "msg_too_long"}
    assert lost_chars(turn.messages, shown(slack, ticket)) == 0
    assert renderer.stats.dropped_chars == 0
    for m in bot_messages(slack, ticket):
        assert m["stream"]["state"] == "stopped"


async def test_a_thread_slack_refuses_for_good_does_not_hang_the_turn(
    slack: SlackEmulator, make: Any
) -> None:
    renderer = make()
    ticket = await new_ticket(slack)
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, message("m1", "First part."), replay=False)
    for _ in range(100):
        if bot_messages(slack, ticket):
            break
        await asyncio.sleep(0.02)
    slack.state.archive("C0001")
    try:
        await renderer.event(ticket, message("m2", "Second part."), replay=False)
        await asyncio.wait_for(renderer.turn_ended(ticket, "end_turn"), 20)  # a guard, not a timing
    finally:
        slack.state.archive("C0001", False)
    assert any(c.error == "is_archived" for c in slack.state.calls())
    # the next turn starts afresh
    await play(renderer, ticket, synthetic_turn("after", tool_calls=0, answer_chars=80, seconds=0.2))
    assert bot_messages(slack, ticket)[-1]["stream"]["state"] == "stopped"


async def test_an_abandoned_turn_is_closed_after_the_idle_timeout(slack: SlackEmulator, make: Any) -> None:
    renderer = make(idle_timeout=0.3)
    ticket = await new_ticket(slack)
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, message("m1", "Working on it."), replay=False)
    for _ in range(250):  # no turn_ended: the follower went away
        msgs = bot_messages(slack, ticket)
        if msgs and msgs[0]["stream"]["state"] == "stopped":
            break
        await asyncio.sleep(0.02)
    (msg,) = bot_messages(slack, ticket)
    assert msg["stream"]["state"] == "stopped" and msg["text"] == "Working on it."
    assert "context_actions" not in block_types(msg)


async def test_without_redis_the_turn_is_still_shown(slack: SlackEmulator, tmp_path: Any) -> None:
    from app.redis_conn import connect

    broken = connect(f"unix://{tmp_path}/no-redis.sock")
    renderer = StreamRenderer(slack.client(), broken, flush_interval=0.05)
    ticket = await new_ticket(slack)
    await renderer.begin_turn(ticket, "U0002")
    turn = synthetic_turn("nr", tool_calls=2, answer_chars=500, seconds=0.4)
    await play(renderer, ticket, turn)
    assert shown(slack, ticket) == "\n\n".join(turn.messages)
    assert slack.state.ok_calls("chat.startStream")[0].params["recipient_user_id"] == "U0002"
    await broken.aclose()


async def test_when_stream_starts_run_short_a_turn_posts_instead(
    slack: SlackEmulator, redis: aioredis.Redis
) -> None:
    from app.render.ratelimit import DEFAULT_LIMITS, Limit

    limits = {**DEFAULT_LIMITS, "chat.startStream": Limit(per_minute=1, burst=1)}
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def hook(ticket: Ticket, event: str, detail: dict[str, Any]) -> None:
        events.append((ticket.id, event, detail))

    renderer = StreamRenderer(slack.client(), redis, buckets=TokenBuckets(redis, limits, safety=0),
                              flush_interval=0.05, start_wait=0.2, on_stream_event=hook)
    first, second = await new_ticket(slack, 1), await new_ticket(slack, 2)
    turns = [synthetic_turn(f"c{n}", tool_calls=2, answer_chars=400, seconds=0.4) for n in (1, 2)]
    await asyncio.gather(play(renderer, first, turns[0]), play(renderer, second, turns[1]))
    kinds = sorted("stream" in bot_messages(slack, t)[0] for t in (first, second))
    assert kinds == [False, True] and renderer.stats.congested == 1
    posted = next(t for t in (first, second) if "stream" not in bot_messages(slack, t)[0])
    assert events == [(posted.id, "congested", {"ts": bot_messages(slack, posted)[0]["ts"], "waited_seconds": 0.2})]
    for ticket, turn in ((first, turns[0]), (second, turns[1])):
        assert shown(slack, ticket) == "\n\n".join(turn.messages)
        assert "context_actions" in block_types(bot_messages(slack, ticket)[-1])
    await renderer.aclose()


async def _refused_mid_turn(slack: SlackEmulator, renderer: StreamRenderer, error: str) -> Ticket:
    ticket = await new_ticket(slack)
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, message("m1", "Shown first."), replay=False)
    for _ in range(100):
        if bot_messages(slack, ticket):
            break
        await asyncio.sleep(0.02)
    slack.state.inject("chat.appendStream", error, count=3)
    await renderer.event(ticket, message("m2", "Refused three times."), replay=False)
    for _ in range(250):
        if not slack.state.pending_failures("chat.appendStream"):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    await renderer.event(ticket, message("m3", "Shown after."), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    return ticket


async def test_a_payload_form_slack_refuses_goes_on_in_plain_text(slack: SlackEmulator, make: Any) -> None:
    renderer = make()
    ticket = await _refused_mid_turn(slack, renderer, "invalid_chunks")
    assert renderer.stats.dropped_chars == 0
    assert shown(slack, ticket) == "Shown first.\n\nRefused three times.\n\nShown after."


async def test_a_payload_slack_keeps_refusing_is_dropped_and_the_thread_says_so(
    slack: SlackEmulator, make: Any, redis: aioredis.Redis
) -> None:
    async def to_trace(ticket: Ticket, name: str, detail: dict[str, Any]) -> None:
        await record.record_stream(redis, ticket.id, event=name, detail=detail)

    renderer = make(on_stream_event=to_trace)
    ticket = await _refused_mid_turn(slack, renderer, "slack_connect_canvas_sharing_blocked")
    assert renderer.stats.dropped_chars > 0
    out = shown(slack, ticket)
    assert out.startswith("Shown first.") and out.endswith("Shown after.")
    assert "could not be shown in Slack (slack_connect_canvas_sharing_blocked)" in out
    dropped = [r for r in await record.streams(redis, ticket.id) if r["event"] == "dropped"]
    assert dropped and dropped[0]["detail"]["error"] == "slack_connect_canvas_sharing_blocked"


async def test_channel_type_not_supported_falls_back_to_a_posted_message(slack: SlackEmulator, make: Any) -> None:
    """Issue 15 item 1: chat.startStream's documented refusal keeps the whole answer."""
    slack.state.inject("chat.startStream", "channel_type_not_supported")
    renderer = make()
    ticket = await new_ticket(slack)
    turn = synthetic_turn("ct", tool_calls=2, answer_chars=800, seconds=0.4)
    await play(renderer, ticket, turn)
    intro, answer = turn.messages
    msgs = bot_messages(slack, ticket)
    assert len(slack.state.calls("chat.startStream")) == 1  # refused once, not retried
    assert len(msgs) == 1 and msgs[0]["text"] == intro + "\n\n" + answer
    assert renderer.stats.fallbacks == 1 and renderer.stats.dropped_chars == 0


async def test_a_long_turn_shows_stop_while_it_works_and_removes_it_at_its_end(
    slack: SlackEmulator, make: Any
) -> None:
    def working(t: Ticket) -> list[dict[str, Any]]:
        return [{"type": "actions", "block_id": f"ticket_controls:{t.id}", "elements": [
            {"type": "button", "action_id": "ticket_stop", "text": {"type": "plain_text", "text": "Stop"},
             "value": t.id},
        ]}]

    renderer = make(working_controls=working, working_after=0.3)
    ticket = await new_ticket(slack)
    await renderer.event(ticket, event("session.status_running", id="r"), replay=False)
    await renderer.event(ticket, message("m1", "Still digging through the logs."), replay=False)
    for _ in range(100):
        if any("ticket_stop" in json.dumps(m.get("blocks")) for m in bot_messages(slack, ticket)):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("no Stop while the turn works")
    await renderer.event(ticket, message("m2", "Found it."), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    msgs = bot_messages(slack, ticket)
    assert not any("ticket_stop" in json.dumps(m.get("blocks")) for m in msgs)  # no Stop outlives the work
    assert shown(slack, ticket) == "Still digging through the logs.\n\nFound it."


async def test_a_short_turn_never_shows_stop(slack: SlackEmulator, make: Any) -> None:
    renderer = make(working_controls=lambda t: [{"type": "actions", "elements": []}], working_after=30)
    ticket = await new_ticket(slack)
    await renderer.event(ticket, message("m1", "Quick answer."), replay=False)
    await renderer.turn_ended(ticket, "end_turn")
    assert len(bot_messages(slack, ticket)) == 1 and not slack.state.calls("chat.delete")
