"""Thread controls end to end: Stop, ❌ as Stop, Resolve, Reopen and who may use them.

Real HTTP all the way: the Slack emulator delivers signed block_actions and reaction events to
the app (real slack_bolt), the app drives the Managed Agents emulator with the real anthropic
client, Redis is real.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.stack import Stack
from app.slack.blocks import control_blocks
from app.slack.controls import interrupted_at
from app.tickets.model import Ticket, TicketState
from tests.support import eventually

SUPPORT = "C0001"
TEAM = "T0001"
SLOW = {"rules": [
    {"match": "(?i)slow", "steps": [{"message": "Looking into it."}, {"sleep": 30}, {"message": "All done."}]},
]}


@pytest.fixture
def staff_stack(fresh_redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """The shipped config with the emulator's @support-team (S0001 = alice) as staff."""
    text = (ROOT / "support-agent.yml").read_text()
    head, _, _ = text.partition("\nslack:\n")
    config = tmp_path / "support-agent.yml"
    config.write_text(head + "\nslack:\n  staff:\n    usergroups: [S0001]\n  max_question_chars: 4000\n")
    with Stack(fresh_redis_url, data_dir=tmp_path, config_path=config) as s:
        yield s




def bot_texts(stack: Stack, thread_ts: str) -> list[str]:
    return [
        m.get("text", "")
        for m in stack.slack.state.thread(SUPPORT, thread_ts)
        if m.get("bot_id") and m.get("ts") != thread_ts
    ]


def ticket_of(app: InProcessApp, thread_ts: str) -> Ticket | None:
    result: Ticket | None = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, thread_ts))
    return result


def causes(app: InProcessApp, ticket: Ticket) -> list[str]:
    return [t.cause for t in app.run_coroutine(app.services.store.transitions(ticket.id))]


def post_controls(app: InProcessApp, ticket: Ticket) -> str:
    """What a renderer does: a message in the thread carrying the ticket's control buttons."""
    response = app.run_coroutine(
        app.services.slack.chat_postMessage(
            channel=SUPPORT, thread_ts=ticket.thread_ts, text="controls", blocks=control_blocks(ticket)
        )
    )
    return str(response["ts"])


def user_event_types(stack: Stack, session_id: str) -> list[str]:
    return [e["type"] for e in stack.agents.state.received_user_events(session_id)]


async def working_ticket(stack: Stack, app: InProcessApp, text: str = "slow question") -> tuple[str, Ticket]:
    stack.agents.set_scenario(SLOW)
    ts = await stack.slack.user_posts(SUPPORT, text)
    await eventually(lambda: "Looking into it." in bot_texts(stack, ts))
    ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WORKING and t)
    return ts, ticket


async def answered_ticket(stack: Stack, app: InProcessApp, text: str, user: str = "U0001") -> tuple[str, Ticket]:
    ts = await stack.slack.user_posts(SUPPORT, text, user=user)
    await eventually(lambda: f"You asked: {text}" in bot_texts(stack, ts))
    ticket = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t
    )
    return ts, ticket


async def test_stop_button_interrupts_the_turn(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await working_ticket(stack, app)
    assert ticket.session_id
    delivery = await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_stop", user="U0001")
    assert delivery.status == 200 and delivery.elapsed < 1.0
    await eventually(lambda: "user.interrupt" in user_event_types(stack, ticket.session_id or ""))
    stopped = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t
    )
    assert "stopped by U0001" in causes(app, stopped)
    assert app.run_coroutine(interrupted_at(app.services.redis, ticket.id)) is not None
    await eventually(lambda: any("stopped the agent" in t for t in bot_texts(stack, ts)))
    session = await eventually(
        lambda: next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == ticket.session_id)
        if stack.agents.state.sessions_snapshot()[0]["status"] == "idle" else None
    )
    assert session["status"] == "idle"
    await asyncio.sleep(0.3)
    assert "All done." not in bot_texts(stack, ts)


async def test_x_reaction_stops_like_the_button(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await working_ticket(stack, app)
    reaction = {
        "type": "reaction_added", "user": "U0001", "reaction": "x", "item_user": "U0001",
        "item": {"type": "message", "channel": SUPPORT, "ts": ts}, "event_ts": f"{time.time():.6f}",
    }
    delivery = await stack.slack.send_event(reaction)
    assert delivery.status == 200
    # Slack's retry of the same event does nothing more.
    again = await stack.slack.send_event(reaction, event_id=delivery.event_id, retry_num=1)
    assert again.status == 200
    await eventually(lambda: "user.interrupt" in user_event_types(stack, ticket.session_id or ""))
    stopped = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t
    )
    assert "stopped by U0001" in causes(app, stopped)
    await asyncio.sleep(0.3)
    assert user_event_types(stack, ticket.session_id or "").count("user.interrupt") == 1


async def test_other_reactions_change_nothing(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await working_ticket(stack, app)
    await stack.slack.send_event({
        "type": "reaction_added", "user": "U0001", "reaction": "eyes",
        "item": {"type": "message", "channel": SUPPORT, "ts": ts}, "event_ts": f"{time.time():.6f}",
    })
    await asyncio.sleep(0.5)
    assert "user.interrupt" not in user_event_types(stack, ticket.session_id or "")
    current = ticket_of(app, ts)
    assert current is not None and current.state == TicketState.WORKING


async def test_resolve_archives_the_session_and_posts_a_summary(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await answered_ticket(stack, app, "first question")
    await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_resolve", user="U0001")
    resolved = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.RESOLVED and t)
    assert "resolved by U0001" in causes(app, resolved)
    assert resolved.resolved_at is not None
    sessions = stack.agents.state.sessions_snapshot()
    assert len(sessions) == 1 and sessions[0]["archived_at"] is not None
    summary = await eventually(lambda: [t for t in bot_texts(stack, ts) if "resolved by" in t])
    assert summary[0].startswith(f":white_check_mark: Ticket #{ticket.number} resolved by <@U0001>")
    assert "1 turn" in summary[0]


async def test_resolve_while_running_interrupts_first(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await working_ticket(stack, app)
    await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_resolve", user="U0001")
    await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.RESOLVED, timeout=20)
    assert "user.interrupt" in user_event_types(stack, ticket.session_id or "")
    assert stack.agents.state.sessions_snapshot()[0]["archived_at"] is not None
    await asyncio.sleep(0.5)  # the follower finishing the interrupted turn must not undo it
    final = ticket_of(app, ts)
    assert final is not None and final.state == TicketState.RESOLVED


async def test_reopen_continues_the_same_session_while_it_is_usable(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await answered_ticket(stack, app, "first question")
    store = app.services.store
    app.run_coroutine(store.transition(ticket, TicketState.ESCALATED, "handed to a human"))
    await stack.slack.click(SUPPORT, post_controls(app, ticket_of(app, ts) or ticket), "ticket_reopen")
    await eventually(lambda: len(stack.agents.state.processed_messages(ticket.session_id or "")) == 2)
    assert len(stack.agents.state.sessions_snapshot()) == 1
    reopened = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t
    )
    assert reopened.session_id == ticket.session_id
    assert "reopened by U0001" in causes(app, reopened)
    assert any("reopened ticket" in t and "same agent session" in t for t in bot_texts(stack, ts))


async def test_reopen_after_resolve_seeds_a_new_session_with_the_transcript(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await answered_ticket(stack, app, "why is the VPN down?")
    await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_resolve")
    await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.RESOLVED)
    summary_ts = await eventually(
        lambda: next((m["ts"] for m in stack.slack.state.thread(SUPPORT, ts) if "resolved by" in m.get("text", "")),
                     None)
    )
    # The summary itself carries the Reopen button.
    await stack.slack.click(SUPPORT, summary_ts, "ticket_reopen", user="U0001")
    sessions = await eventually(lambda: (s := stack.agents.state.sessions_snapshot()) and len(s) == 2 and s)
    new = next(s for s in sessions if s["id"] != ticket.session_id)
    seed = await eventually(lambda: stack.agents.state.processed_messages(new["id"]))
    assert "reopened by <@U0001>" in seed[0]
    assert "why is the VPN down?" in seed[0] and "You asked: why is the VPN down?" in seed[0]
    reopened = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t
    )
    assert reopened.session_id == new["id"]
    assert [c for c in causes(app, reopened) if "by U0001" in c] == ["resolved by U0001", "reopened by U0001"]
    # A follow-up goes to the new session.
    await stack.slack.user_posts(SUPPORT, "still broken", thread_ts=ts, mention_bot=False)
    await eventually(lambda: stack.agents.state.processed_messages(new["id"])[-1:] == ["still broken"])


async def test_others_are_refused_with_an_ephemeral_and_nothing_changes(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await answered_ticket(stack, app, "alice's question", user="U0001")
    before = causes(app, ticket)
    controls = post_controls(app, ticket)
    await stack.slack.click(SUPPORT, controls, "ticket_resolve", user="U0002")
    refusals = await eventually(
        lambda: [e for e in stack.slack.state.snapshot_list("ephemerals") if e["user"] == "U0002"]
    )
    assert "Only the person who opened ticket" in refusals[0]["text"]
    assert refusals[0]["thread_ts"] == ts
    await stack.slack.send_event({
        "type": "reaction_added", "user": "U0002", "reaction": "x",
        "item": {"type": "message", "channel": SUPPORT, "ts": ts}, "event_ts": f"{time.time():.6f}",
    })
    await eventually(lambda: len([e for e in stack.slack.state.snapshot_list("ephemerals")
                                  if e["user"] == "U0002"]) == 2)
    await asyncio.sleep(0.3)
    after = ticket_of(app, ts)
    assert after is not None and after.state == TicketState.WAITING_REQUESTER
    assert causes(app, after) == before
    assert stack.agents.state.sessions_snapshot()[0]["archived_at"] is None


async def test_staff_usergroup_members_may_use_the_controls(staff_stack: Stack) -> None:
    stack = staff_stack
    app = stack.start_app()
    ts, ticket = await answered_ticket(stack, app, "bob's question", user="U0002")
    await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_resolve", user="U0001")
    resolved = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.RESOLVED and t)
    assert "resolved by U0001" in causes(app, resolved)
    assert stack.slack.state.snapshot_list("ephemerals") == []


async def test_resolve_summary_carries_the_final_cost(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": "(?i)costly", "steps": [
        {"message": "Here you go."}, {"usage": {"input_tokens": 1_000_000, "output_tokens": 0}},
    ]}]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "a costly question")
    await eventually(lambda: "Here you go." in bot_texts(stack, ts))
    ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t)
    await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_resolve")
    summary = await eventually(lambda: [t for t in bot_texts(stack, ts) if "resolved by" in t])
    # claude-sonnet-4-6 input is $3 per million tokens in support-agent.yml.
    assert "cost $3.00" in summary[0]


async def test_a_mention_in_a_resolved_thread_reopens_it_on_a_new_session(stack: Stack) -> None:
    app = stack.start_app()
    ts, ticket = await answered_ticket(stack, app, "printer offline")
    await stack.slack.click(SUPPORT, post_controls(app, ticket), "ticket_resolve", user="U0001")
    await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.RESOLVED)
    # A plain reply to a resolved ticket is not a new request...
    await stack.slack.user_posts(SUPPORT, "thanks!", thread_ts=ts, mention_bot=False)
    await asyncio.sleep(0.5)
    assert len(stack.agents.state.sessions_snapshot()) == 1
    # ...a mention is: the archived session cannot go on, so a new one gets the thread.
    await stack.slack.user_posts(SUPPORT, "it is offline again", thread_ts=ts)
    sessions = await eventually(lambda: (s := stack.agents.state.sessions_snapshot()) and len(s) == 2 and s)
    new = next(s for s in sessions if s["id"] != ticket.session_id)
    seed = await eventually(lambda: stack.agents.state.processed_messages(new["id"]))
    assert len(seed) == 1 and "it is offline again" in seed[0] and "printer offline" in seed[0]
    reopened = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t
    )
    assert reopened.session_id == new["id"]
    assert "reopened by U0001" in causes(app, reopened)
