"""The app against the documented behaviour of Managed Agents and Slack (issue 15 items 3, 4, 5,
8, 9), end to end through both emulators (real HTTP, real SDK clients, real Redis).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cost.budget import RAISE_BUDGET_ACTION
from app.render.blocks import APPROVE_ACTION_ID, FEEDBACK_ACTION_ID
from app.render.threads import THREAD_EVENTS
from app.sandbox.agents.events import PREVIEW_TYPES, sdk_event_types
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.slack import visible_text
from app.sandbox.stack import Stack
from app.sessions.event_table import HANDLED, IGNORED
from app.sessions.follower import HELD_NOTICE
from app.slack.blocks import control_blocks
from app.tickets.model import Ticket, TicketState
from tests.support import eventually

SUPPORT = "C0001"
TEAM = "T0001"
ALICE, BOB = "U0001", "U0002"


def bot_texts(stack: Stack, thread_ts: str) -> list[str]:
    return [
        m.get("text", "") for m in stack.slack.state.thread(SUPPORT, thread_ts)
        if m.get("bot_id") and m.get("ts") != thread_ts
    ]


def ticket_of(app: InProcessApp, thread_ts: str) -> Ticket | None:
    found: Ticket | None = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, thread_ts))
    return found


async def settled(app: InProcessApp, ts: str, state: TicketState) -> Ticket:
    ticket: Ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == state and t)
    return ticket


def leased(app: InProcessApp, ticket: Ticket) -> bool:
    return bool(app.run_coroutine(app.services.redis.exists(f"sa:lease:{ticket.id}")))


def session_of(stack: Stack, session_id: str) -> dict[str, Any]:
    return next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == session_id)


def causes(app: InProcessApp, ticket: Ticket) -> list[str]:
    return [t.cause for t in app.run_coroutine(app.services.store.transitions(ticket.id))]


# -- items 9 and 8: the SDK's union through the app; a newer stop reason; Stop at a safe boundary --


SENTENCE = "Checking the whole account history, one entry at a time."
# The union through the app: every type but the turn's own lifecycle (which this turn produces
# anyway), previews (the message's deltas) and the two that need a real counterpart, covered
# where they have one: agent.custom_tool_use (test_tools_e2e.py, a pending custom tool),
# session.error and session.status_rescheduled (a real retry: test_agents_emulator.py and the
# failed-attempt sequence of test_contract_agents.py), termination (test_durability.py, a terminal
# error) and deletion (test_retention.py).
NATURAL = {"session.status_running", "session.status_idle", "span.model_request_start",
           "span.model_request_end", "event_start", "event_delta", "agent.message", "user.message"}
ELSEWHERE = {"agent.custom_tool_use", "session.error", "session.status_rescheduled", "session.status_terminated",
             "session.deleted"}
# Shown as a specialist's task, so not injected with sample ids here: tests/test_specialists_e2e.py.
ELSEWHERE |= THREAD_EVENTS
INJECTED = sorted(sdk_event_types() - NATURAL - ELSEWHERE)
MIXED = {"interrupt": "boundary", "rules": [
    {"match": "union", "steps": [*({"event": t} for t in INJECTED),
                                 {"message": "All of it, and nothing else."}]},
    {"match": "odd", "steps": [{"message": "Partial."}, {"idle": "paused_for_maintenance"}]},
    {"match": "account", "steps": [
        {"message": "Starting."},
        {"message": SENTENCE, "deltas": 12, "delta_delay": 0.1},
        {"message": "This step never runs."},
    ]},
]}


async def test_ignored_types_a_newer_stop_reason_and_a_stop_at_a_safe_boundary(stack: Stack) -> None:
    stack.agents.set_scenario(MIXED)
    app = stack.start_app()

    # Item 9: the SDK's union, emitted in one turn: each type is handled or passed over as the
    # app's table says, nothing ignored is shown, the answer lands once, the turn ends normally.
    ts = await stack.slack.user_posts(SUPPORT, "the whole union please")
    ticket = await settled(app, ts, TicketState.WAITING_REQUESTER)
    await eventually(lambda: not leased(app, ticket))
    assert bot_texts(stack, ts) == ["All of it, and nothing else."]
    assert ticket.session_id
    emitted = {e["type"] for e in stack.agents.state.events(ticket.session_id)}
    assert sdk_event_types() - emitted - PREVIEW_TYPES == ELSEWHERE  # previews are stream-only
    assert set(IGNORED) <= emitted and set(IGNORED) | set(HANDLED) == sdk_event_types()

    # Item 8: a stop reason newer than the SDK leaves the ticket waiting, not working.
    ts = await stack.slack.user_posts(SUPPORT, "something odd")
    ticket = await settled(app, ts, TicketState.WAITING_REQUESTER)
    assert "agent stopped (paused_for_maintenance)" in causes(app, ticket)
    await eventually(lambda: not leased(app, ticket))
    assert "Partial." in " ".join(bot_texts(stack, ts))

    # Item 8: Stop while a sentence streams; the real API stops at a safe boundary, so the
    # sentence still finishes after our "stopped" note, and nothing after it runs.
    ts = await stack.slack.user_posts(SUPPORT, "check my account")
    ticket = await settled(app, ts, TicketState.WORKING)
    session_id = ticket.session_id or ""
    await eventually(lambda: any(e["type"] == "span.model_request_start"
                                 for e in stack.agents.state.events(session_id)[-2:]))
    posted = app.run_coroutine(app.services.slack.chat_postMessage(
        channel=SUPPORT, thread_ts=ts, text="controls", blocks=control_blocks(ticket)))
    await stack.slack.click(SUPPORT, str(posted["ts"]), "ticket_stop", user=ALICE)
    await eventually(lambda: any(SENTENCE in t for t in bot_texts(stack, ts)))
    done = await settled(app, ts, TicketState.WAITING_REQUESTER)
    await eventually(lambda: not leased(app, done))
    assert not any("never runs" in t for t in bot_texts(stack, ts))
    assert any("stopped the agent" in t for t in bot_texts(stack, ts))
    assert session_of(stack, session_id)["status"] == "idle"
    interrupt_at = next(i for i, e in enumerate(stack.agents.state.events(session_id)) if e["type"] == "user.interrupt")
    finished_at = next(i for i, e in enumerate(stack.agents.state.events(session_id))
                       if e["type"] == "agent.message" and SENTENCE in e["content"][0]["text"])
    assert interrupt_at < finished_at


# -- item 4: the idle event before retrieve says idle; archive 400 right after -----------------


async def test_idle_before_retrieve_the_follower_lets_go_and_resolve_still_archives(stack: Stack) -> None:
    stack.agents.set_scenario({"status_lag": 1.0, "rules": [{"steps": [{"message": "Quick answer."}]}]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "a quick one")
    ticket = await settled(app, ts, TicketState.WAITING_REQUESTER)
    assert ticket.session_id
    session_id = ticket.session_id
    started = time.monotonic()
    # Without the re-check the follower read the silent stream (pings only) and kept the lease.
    await eventually(lambda: not leased(app, ticket) and session_of(stack, session_id)["open_streams"] == 0, timeout=6)
    assert time.monotonic() - started < 4
    retrieves = [r for r in stack.agents.state.request_log()
                 if r["method"] == "GET" and r["path"] == f"/v1/sessions/{session_id}"]
    assert len(retrieves) >= 2  # asked again after the first said running

    # A second turn, and Resolve at once: archive answers 400 while the status lags; the
    # session is archived all the same.
    await stack.slack.user_posts(SUPPORT, "one more", thread_ts=ts, mention_bot=False)
    await eventually(lambda: len([t for t in bot_texts(stack, ts) if t == "Quick answer."]) == 2)
    posted = app.run_coroutine(app.services.slack.chat_postMessage(
        channel=SUPPORT, thread_ts=ts, text="controls", blocks=control_blocks(ticket)))
    await stack.slack.click(SUPPORT, str(posted["ts"]), "ticket_resolve", user=ALICE)
    await settled(app, ts, TicketState.RESOLVED)
    assert session_of(stack, session_id)["archived_at"] is not None
    assert not any("could not be archived" in t or "left open" in t for t in bot_texts(stack, ts))


# -- item 3: a reply while paused at the budget --------------------------------------------------


def staff_config(tmp_path: Path, budget_usd: float | None = None) -> Path:
    """The shipped config with the emulator's @support-team (S0001: alice) as staff."""
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    if budget_usd is not None:
        data["environments"]["internal"]["budget_usd"] = budget_usd
    data["slack"]["staff"] = {"users": [], "usergroups": ["S0001"]}
    config = tmp_path / "support-agent.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


@pytest.fixture
def budget_stack(fresh_redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    with Stack(fresh_redis_url, data_dir=tmp_path, config_path=staff_config(tmp_path, 0.05)) as s:
        yield s


async def test_a_reply_during_a_budget_pause_waits_for_the_raise(budget_stack: Stack) -> None:
    stack = budget_stack
    stack.agents.set_scenario({"rules": [
        {"match": "archive", "steps": [
            {"message": "Reading the archive."},
            {"usage": {"input_tokens": 100_000, "output_tokens": 2000}},
            {"message": "The archive says: rotate the key."},
        ]},
        {"match": "also", "steps": [{"message": "And the backup too."}]},
    ]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "please read the archive", user=BOB)
    ticket = await settled(app, ts, TicketState.WAITING_APPROVAL)
    assert ticket.session_id and ticket.stop_reason == "budget_reached"
    await eventually(lambda: not leased(app, ticket))
    await stack.slack.user_posts(SUPPORT, "also check the backup", user=BOB, thread_ts=ts, mention_bot=False)
    await eventually(lambda: any(HELD_NOTICE in t for t in bot_texts(stack, ts)))
    await eventually(lambda: not leased(app, ticket))
    held = ticket_of(app, ts)
    assert held is not None and held.state == TicketState.WAITING_APPROVAL  # not failed, not working
    sent = [e for e in stack.agents.state.received_user_events(ticket.session_id) if e["type"] == "user.message"]
    assert len(sent) == 1  # the reply waits in the inbox, not in a paused session
    # An approver raises the budget: the paused turn finishes, then the reply is answered.
    note = await eventually(lambda: next((m for m in stack.slack.state.thread(SUPPORT, ts)
                                          if RAISE_BUDGET_ACTION in json.dumps(m.get("blocks") or [])), None))
    await stack.slack.click(SUPPORT, note["ts"], RAISE_BUDGET_ACTION, user=ALICE)
    await eventually(lambda: any("And the backup too." in t for t in bot_texts(stack, ts)), timeout=20)
    assert stack.agents.state.processed_messages(ticket.session_id) == [
        "please read the archive", "also check the backup"
    ]
    assert any("rotate the key" in t for t in bot_texts(stack, ts))
    assert sum(HELD_NOTICE in t for t in bot_texts(stack, ts)) == 1


# -- item 5: buttons on a streamed message never rewrite it --------------------------------------


def streamed_message(stack: Stack, ts: str) -> dict[str, Any]:
    """What the click payload carries for a streamed message: per Slack's method reference
    `chat.stopStream`'s blocks are "rendered at the bottom of the finalized message", so the
    blocks hold our buttons but not the streamed answer or task cards. The emulator marks the
    message with `streaming_state`, as Slack does (node-slack-sdk's `BotMessageEvent`)."""
    message = stack.slack.state.message(SUPPORT, ts)
    assert message is not None
    message.pop("stream", None)  # the emulator's own view of the stream, not in Slack's payload
    assert message.get("streaming_state") in ("in_progress", "completed")
    return message


def updates_of(stack: Stack, ts: str) -> list[Any]:
    return [c for c in stack.slack.state.calls("chat.update") if c.params.get("ts") == ts]


def with_action(stack: Stack, ts: str, action_id: str) -> Any:
    return lambda: next((m for m in stack.slack.state.thread(SUPPORT, ts)
                         if action_id in json.dumps(m.get("blocks") or [])), None)


def button(blocks: list[dict[str, Any]], action_id: str) -> dict[str, Any]:
    return next(e for b in blocks if b.get("type") == "actions" for e in b["elements"]
                if e.get("action_id") == action_id)


async def test_buttons_on_a_streamed_message_never_rewrite_it(budget_stack: Stack) -> None:
    stack = budget_stack
    stack.agents.set_scenario({"rules": [
        {"match": "sso", "steps": [
            {"message": "Let me look that up in past tickets."},
            {"mcp_tool": "search_docs", "server": "knowledge_base", "input": {"query": "sso"},
             "permission": "ask", "result": "SSO: use the admin console."},
            {"message": "Found it: use the admin console."},
        ]},
        {"match": "log", "steps": [
            {"message": "Working through a big log."},
            {"usage": {"input_tokens": 100_000, "output_tokens": 2000}},
            {"message": "Finished the log."},
        ]},
    ]})
    app = stack.start_app()

    # Approve, pressed on the streamed message that carries the buttons.
    ts = await stack.slack.user_posts(SUPPORT, "how does sso work?")
    await settled(app, ts, TicketState.WAITING_APPROVAL)
    message = await eventually(with_action(stack, ts, APPROVE_ACTION_ID))
    before = stack.slack.state.message(SUPPORT, message["ts"])
    body = streamed_message(stack, message["ts"])
    await stack.slack.events.send_block_actions(user=ALICE, user_name="alice", channel=SUPPORT, message=body,
                                                actions=[button(body["blocks"], APPROVE_ACTION_ID)])
    await eventually(lambda: any("Found it" in t for t in bot_texts(stack, ts)))
    await eventually(lambda: any(f"Approved by <@{ALICE}>" in t for t in bot_texts(stack, ts)))  # a reply
    # The handler never rewrote the streamed message from the click's blocks; the renderer, which
    # knows what the message shows, finished the call's card in place: the text is all still there,
    # the buttons are gone and who decided is said.
    after = stack.slack.state.message(SUPPORT, message["ts"])
    assert after is not None and before is not None
    for update in updates_of(stack, message["ts"]):
        assert "Let me look that up in past tickets." in json.dumps(update.params)
    assert "Let me look that up in past tickets." in visible_text(after)
    assert "actions" not in [b["type"] for b in after.get("blocks") or []]

    # Raise budget, with the buttons on a streamed message: no rewrite, the turn goes on.
    ts = await stack.slack.user_posts(SUPPORT, "read the big log", user=BOB)
    await settled(app, ts, TicketState.WAITING_APPROVAL)
    note = await eventually(with_action(stack, ts, RAISE_BUDGET_ACTION))
    answer = next(m for m in stack.slack.state.thread(SUPPORT, ts) if "Working through" in (m.get("text") or ""))
    body = streamed_message(stack, answer["ts"])
    body["blocks"] = [*(body.get("blocks") or []), *note["blocks"]]
    await stack.slack.events.send_block_actions(user=ALICE, user_name="alice", channel=SUPPORT, message=body,
                                                actions=[button(note["blocks"], RAISE_BUDGET_ACTION)])
    await eventually(lambda: any("Finished the log." in t for t in bot_texts(stack, ts)), timeout=20)
    assert updates_of(stack, answer["ts"]) == []

    # Feedback on the streamed answer: a thank-you to the person, no edit of the message.
    done = await settled(app, ts, TicketState.WAITING_REQUESTER)
    feedback = {"type": "feedback_buttons", "action_id": FEEDBACK_ACTION_ID, "value": f"good:{done.id}"}
    await stack.slack.events.send_block_actions(user=BOB, user_name="bob", channel=SUPPORT,
                                                message=streamed_message(stack, answer["ts"]), actions=[feedback])
    await eventually(lambda: [e for e in stack.slack.state.snapshot_list("ephemerals")
                              if e["user"] == BOB and "Thanks for the feedback" in e["text"]])
    assert updates_of(stack, answer["ts"]) == []
