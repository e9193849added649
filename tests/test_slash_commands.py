"""`/support` end to end through the Slack and Managed Agents emulators (real HTTP, real Redis)."""

from __future__ import annotations

import asyncio
from typing import Any

from app.sandbox.app_runner import InProcessApp
from app.sandbox.stack import Stack
from app.slack.commands import Parsed, parse
from app.tickets.model import Ticket, TicketState
from tests.support import eventually
from tests.test_e2e_ticket import finished_replies

SUPPORT = "C0001"
TEAM = "T0001"






def bot_roots(stack: Stack) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.history(SUPPORT) if m.get("bot_id")]


def replies(stack: Stack, thread_ts: str) -> list[str]:
    return [
        m.get("text", "")
        for m in stack.slack.state.thread(SUPPORT, thread_ts)
        if m.get("bot_id") and m.get("ts") != thread_ts
    ]


def tickets(app: InProcessApp) -> list[Ticket]:
    result: list[Ticket] = app.run_coroutine(app.services.store.channel_tickets(TEAM, SUPPORT))
    return result


def responses(stack: Stack) -> list[dict[str, Any]]:
    return [r["body"] for r in stack.slack.state.snapshot_list("responses")]


async def test_question_opens_a_ticket_and_the_answer_lands_in_its_thread(stack: Stack) -> None:
    app = stack.start_app()
    delivery = await stack.slack.send_command("/support", "how do I reset my password? <!channel>")
    assert delivery.status == 200 and delivery.elapsed < 1.0
    root = (await eventually(lambda: bot_roots(stack)))[0]
    answer = await eventually(lambda: finished_replies(stack, root["ts"]))
    assert len(answer) == 1 and answer[0].startswith("You asked: how do I reset my password?")
    ticket = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, root["ts"]))
    assert ticket is not None and ticket.number == 1
    assert ticket.requester_id == "U0001" and ticket.environment == "internal"
    assert ticket.title.startswith("how do I reset my password?")
    # The root quotes the question and who asked, names the ticket, and pings no one.
    root = await eventually(lambda: (m := bot_roots(stack)[0]) and "Ticket #1" in m["text"] and m)
    blocks_text = " ".join(str(b) for b in root["blocks"])
    assert "<@U0001>" in blocks_text and "> how do I reset my password?" in blocks_text
    assert "<!channel>" not in blocks_text
    assert any(b.get("type") == "actions" for b in root["blocks"])
    session = stack.agents.state.sessions_snapshot()[0]
    assert stack.agents.state.processed_messages(session["id"]) == ["how do I reset my password? <!channel>"]
    # A reply in the new thread is a follow-up on the same ticket and session.
    await stack.slack.user_posts(SUPPORT, "thanks, and 2FA?", thread_ts=root["ts"], mention_bot=False)
    await eventually(lambda: len(replies(stack, root["ts"])) == 2)
    assert len(stack.agents.state.sessions_snapshot()) == 1
    assert len(tickets(app)) == 1


async def test_status_lists_the_open_tickets_of_the_channel(stack: Stack) -> None:
    app = stack.start_app()
    await stack.slack.send_command("/support", "first problem")
    await stack.slack.send_command("/support", "second problem", user="U0002", user_name="bob")
    await eventually(lambda: len(tickets(app)) == 2 and all(replies(stack, t.thread_ts) for t in tickets(app)))
    # Both turns over (their followers have moved the tickets on), so nothing moves them again.
    await eventually(lambda: all(t.state == TicketState.WAITING_REQUESTER for t in tickets(app)))
    first = next(t for t in tickets(app) if t.number == 1)
    app.run_coroutine(app.services.store.transition(first, TicketState.RESOLVED, "test"))
    delivery = await stack.slack.send_command("/support", "status")
    assert delivery.status == 200
    body = (await eventually(lambda: responses(stack)))[0]
    assert body["response_type"] == "ephemeral"
    assert "1 open ticket in <#C0001>" in body["text"]
    assert "*#2* second problem · waiting on requester" in body["text"] and "<@U0002>" in body["text"]
    assert "#1" not in body["text"]


async def test_status_with_no_tickets(stack: Stack) -> None:
    stack.start_app()
    await stack.slack.send_command("/support", "STATUS")
    body = (await eventually(lambda: responses(stack)))[0]
    assert body["text"] == "No open tickets in <#C0001>."


async def test_help_empty_oversized_and_unknown_are_answered_in_the_ack(stack: Stack) -> None:
    app = stack.start_app()
    help_reply = (await stack.slack.send_command("/support", "help")).json()
    assert help_reply["response_type"] == "ephemeral" and "`/support status`" in help_reply["text"]
    empty = (await stack.slack.send_command("/support", "   ")).json()
    assert empty["text"].startswith("Tell me what you need help with") and "`/support status`" in empty["text"]
    limit = app.services.config.slack.max_question_chars
    oversized = (await stack.slack.send_command("/support", "x" * (limit + 1))).json()
    assert oversized["response_type"] == "ephemeral"
    assert f"{limit + 1:,} characters" in oversized["text"] and f"the limit is {limit:,}" in oversized["text"]
    unknown = (await stack.slack.send_command("/support", "status #3")).json()
    assert unknown["text"].startswith("Unknown subcommand `status`")
    await asyncio.sleep(0.5)
    assert tickets(app) == [] and bot_roots(stack) == [] and responses(stack) == []


async def test_cost_answers_with_the_channel_report(stack: Stack) -> None:
    stack.start_app()
    await stack.slack.send_command("/support", "cost")
    body = (await eventually(lambda: responses(stack)))[0]
    assert body["response_type"] == "ephemeral" and "Support costs in <#C0001>" in body["text"]


async def test_a_channel_the_bot_is_not_in_gets_a_clear_answer(stack: Stack) -> None:
    stack.slack.state.add_channel("C0009", "support-internal", members=["U0001"], bot_member=False)
    app = stack.start_app()
    await stack.slack.send_command("/support", "hello?", channel="C0009", channel_name="support-internal")
    body = (await eventually(lambda: responses(stack)))[0]
    assert "not in this channel" in body["text"]
    assert app.run_coroutine(app.services.store.channel_tickets(TEAM, "C0009")) == []


def test_parse() -> None:
    assert parse("", 10).kind == "empty"
    assert parse(" Help ", 10).kind == "help"
    assert parse("status of my order", 100).kind == "question"
    assert parse("trace #4", 100) == Parsed("trace", "#4")
    assert parse("status #4", 100).kind == "unknown"
    assert parse("trace", 100).kind == "unknown"
    assert parse("a" * 11, 10).kind == "too_long"
    assert parse("a" * 10, 10).kind == "question"
