"""Specialists end to end: a coordinator hands work to a subagent, and the thread shows it.

Real HTTP all the way: the Slack emulator delivers signed events and button clicks to the app
(real slack_bolt); the app provisions the specialist and the coordinator on first use and drives
the Managed Agents emulator with the real anthropic client; the emulator runs the subagent in a
session thread (scenario `subagent` steps, `app/sandbox/agents/threads.py`); Redis is real.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis

from app.cost.threads import SpecialistLedger
from app.redis_conn import EmbeddedRedis
from app.render.blocks import APPROVE_ACTION_ID
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.stack import Stack
from app.slack.blocks import control_blocks
from app.tickets.model import Ticket, TicketState
from tests.support import eventually

SUPPORT, TEAM = "C0001", "T0001"
ALICE, BOB = "U0001", "U0002"  # alice is in @support-team (S0001): staff and approver
BILLING = "billing@support-agent-internal"
SPECIALISTS = """    specialists:
      billing:
        description: Invoices, refunds and plan changes.
        model: claude-haiku-4-5
        system: You are the billing specialist. Answer from the docs and the ticket history.
        mcp_servers:
          knowledge_base:
            default_policy: always_allow
          ticket_history:
            default_policy: always_ask
"""
ROUTED = {"rules": [{"match": "(?i)refund", "steps": [
    {"subagent": BILLING, "task": "Find the refund policy for: {user_text}", "steps": [
        {"mcp_tool": "search_docs", "server": "knowledge_base", "input": {"query": "refund"}, "result": None},
        {"usage": {"input_tokens": 4000, "output_tokens": 500, "active_seconds": 6}},
    ], "reply": "Refunds: {last_tool_result}"},
    {"message": "Our billing specialist says: {last_tool_result}"},
    {"usage": {"input_tokens": 1000, "output_tokens": 200, "active_seconds": 3}},
]}]}
ASKS = {"rules": [{"match": "(?i)invoice", "steps": [
    {"subagent": BILLING, "task": "What happened to invoice 42?", "steps": [
        {"mcp_tool": "search_tickets", "server": "ticket_history", "input": {"query": "invoice 42"},
         "result": "Ticket 12: invoice 42 was refunded on 3 May."},
    ], "reply": "{last_tool_result}"},
    {"message": "Billing found: {last_tool_result}"},
]}]}
SLOW = {"rules": [{"match": "(?i)slow", "steps": [
    {"subagent": BILLING, "task": "Dig through the invoices", "steps": [{"sleep": 30}], "reply": "done"},
    {"message": "Billing finished: {last_tool_result}"},
]}]}


@pytest.fixture
def stack(
    redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, InProcessApp]]:
    """The shipped config with a billing specialist, @support-team as staff and approvers, and
    the app's public URL (our MCP servers are the specialist's); nothing provisioned yet."""
    sync_redis.Redis.from_url(redis_server.url).flushall()
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", "internal-token-0123456789abcdef")
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "customers-token-0123456789abcdef")
    text = (ROOT / "support-agent.yml").read_text()
    approvers = "    approvers:\n      users: []\n      usergroups: []\n"
    assert approvers in text
    text = text.replace(approvers, "    approvers:\n      users: []\n      usergroups: [S0001]\n" + SPECIALISTS, 1)
    head, _, _ = text.partition("\nslack:\n")
    text = head + "\nslack:\n  staff:\n    usergroups: [S0001]\n  max_question_chars: 4000\n"
    config_path = tmp_path / "support-agent.yml"
    config_path.write_text(text)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config_path) as s:
        app = InProcessApp(s.settings(), s.config)
        config_path.write_text(f"public_base_url: {app.url}\n" + text)
        app.config = s.config
        for name, value in s.env().items():
            monkeypatch.setenv(name, value)
        app.start()
        s.apps.append(app)
        s.slack.set_app_url(f"{app.url}/slack/events")
        yield s, app
    root.handlers[:] = handlers
    root.setLevel(level)


def bot_messages(stack: Stack, ts: str) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.thread(SUPPORT, ts) if m.get("bot_id") and m.get("ts") != ts]


def bot_texts(stack: Stack, ts: str) -> list[str]:
    return [m.get("text", "") for m in bot_messages(stack, ts)]


def tasks(stack: Stack, ts: str) -> dict[str, dict[str, Any]]:
    """Every task the thread's streamed messages show, by id (the latest state of each)."""
    out: dict[str, dict[str, Any]] = {}
    for m in bot_messages(stack, ts):
        out.update((m.get("stream") or {}).get("tasks") or {})
    return out


def thread_task(stack: Stack, ts: str) -> dict[str, Any] | None:
    return next((t for tid, t in tasks(stack, ts).items() if tid.startswith("thread-")), None)


def ticket_of(app: InProcessApp, ts: str) -> Ticket | None:
    result: Ticket | None = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, ts))
    return result


def approval_message(stack: Stack, ts: str) -> dict[str, Any] | None:
    for m in bot_messages(stack, ts):
        if APPROVE_ACTION_ID in json.dumps(m.get("blocks") or []):
            return m
    return None


def user_events(stack: Stack, session_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in stack.agents.state.received_user_events(session_id) if e["type"] == kind]


def emulated_threads(stack: Stack, session_id: str) -> list[Any]:
    session = stack.agents.state.sessions[session_id]
    return list(session.threads.children.values())


async def test_a_question_routed_to_a_specialist_shows_in_the_timeline_with_its_cost(
    stack: tuple[Stack, InProcessApp], capsys: pytest.CaptureFixture[str],
) -> None:
    s, app = stack
    s.agents.set_scenario(ROUTED)
    ts = await s.slack.user_posts(SUPPORT, "what is the refund policy?", user=BOB)
    answer = await eventually(lambda: [t for t in bot_texts(s, ts) if "Our billing specialist says" in t])
    assert "Refunds:" in answer[0]
    ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t)
    assert ticket.session_id
    # The session's agent coordinates the provisioned specialist (first use made both).
    session = s.agents.state.sessions[ticket.session_id]
    roster = session.agent["multiagent"]["subagents"]["predefined_agents"]
    assert [a["name"] for a in roster] == [BILLING] and roster[0]["model"]["id"] == "claude-haiku-4-5"
    # The timeline: a task for the specialist (what it was asked, its answer) and its own tool
    # call, listed from its thread and titled with its name.
    task = await eventually(lambda: (t := thread_task(s, ts)) and t["status"] == "complete" and t)
    assert task["title"] == "Asked billing: Find the refund policy for: what is the refund policy?"
    assert task["output"].startswith("Refunds:")
    [(thread,)] = [(t,) for t in emulated_threads(s, ticket.session_id)]
    own_use = next(e for e in thread.events if e["type"] == "agent.mcp_tool_use")
    assert "session_thread_id" not in own_use  # not cross-posted: only on the thread's stream
    assert not any(e["id"] == own_use["id"] for e in s.agents.state.events(ticket.session_id))
    call = await eventually(lambda: tasks(s, ts).get(own_use["id"]))
    assert call["title"].startswith("billing: knowledge_base · search docs") and call["status"] == "complete"
    # Its MCP call went through the session's vault credential at our server.
    [mcp] = s.agents.state.mcp_call_log()
    assert (mcp["thread_id"], mcp["server"], mcp["authenticated"]) == (thread.id, "knowledge_base", True)
    # Per-specialist cost: the thread's tokens at the specialist's own model, its runtime.
    ledger = SpecialistLedger(app.services.redis, app.config.pricing)
    [billing] = await eventually(lambda: app.run_coroutine(ledger.ticket_specialists(ticket.id)))
    assert (billing.specialist, billing.models, billing.threads) == ("billing", ["claude-haiku-4-5"], 1)
    assert (billing.input_tokens, billing.output_tokens, float(billing.active_seconds)) == (4000, 500, 6.0)
    assert billing.tokens_usd == Decimal("0.0065")  # 4000 x $1/M + 500 x $5/M (Haiku 4.5)
    # ...and reported: `support-agent costs --by specialist` (the stack's REDIS_URL is set).
    from app.cli import main

    assert await asyncio.to_thread(main, ["costs", "--by", "specialist", "--format", "json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["specialist"], row["threads"], row["input_tokens"]) == ("billing", 1, 4000)
    assert Decimal(row["tokens_usd"]) == Decimal("0.0065")
    # The emulator's own thread usage is the reference.
    retrieved = app.run_coroutine(
        app.services.anthropic.beta.sessions.threads.retrieve(thread.id, session_id=ticket.session_id)
    )
    assert retrieved.usage is not None and retrieved.usage.input_tokens == 4000
    # The trace shows the thread with its runtime and tokens.
    from app.observability.scrub import Scrubber
    from app.trace.build import build_trace

    trace = app.run_coroutine(build_trace(app.services.anthropic, app.services.store, ticket, Scrubber()))
    [entry] = [e for e in trace.entries if e.kind == "specialist"]
    assert entry.detail["thread_id"] == thread.id and entry.detail["input_tokens"] == 4000
    assert "billing" in entry.summary and "6s" in entry.summary


async def test_a_subagents_approval_is_pressed_in_the_thread_and_reaches_its_thread(
    stack: tuple[Stack, InProcessApp],
) -> None:
    s, app = stack
    s.agents.set_scenario(ASKS)
    ts = await s.slack.user_posts(SUPPORT, "what happened to invoice 42?", user=BOB)
    message = await eventually(lambda: approval_message(s, ts))
    ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_APPROVAL and t)
    assert ticket.session_id
    # The request came from the specialist's thread, and the button says whose call it is.
    cross = next(e for e in s.agents.state.events(ticket.session_id) if e["type"] == "agent.mcp_tool_use")
    [thread] = emulated_threads(s, ticket.session_id)
    assert cross["session_thread_id"] == thread.id
    assert "billing: ticket_history · search tickets" in json.dumps(message["blocks"], ensure_ascii=False)
    waiting = await eventually(lambda: (t := thread_task(s, ts)) and t["status"] == "pending" and t)
    assert waiting["title"] == "Asked billing: What happened to invoice 42?"
    assert waiting["output"] == "Waiting for approval"
    await s.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=ALICE)
    answer = await eventually(lambda: [t for t in bot_texts(s, ts) if "Billing found" in t])
    assert "invoice 42 was refunded" in answer[0]
    # One confirmation, by tool-use id only (the SDK's params have no thread id), and the
    # subagent's thread is the one that went on: its own stream has the call's result.
    [confirmation] = user_events(s, ticket.session_id, "user.tool_confirmation")
    assert confirmation["tool_use_id"] == cross["id"] and confirmation["result"] == "allow"
    assert "session_thread_id" not in confirmation
    result = next(e for e in thread.events if e["type"] == "agent.mcp_tool_result")
    assert result["mcp_tool_use_id"] == cross["id"] and not result["is_error"]
    # The approval's message, closed when the turn paused, is updated in place (chat.update).
    call = tasks(s, ts)[cross["id"]]
    assert call["title"] == "billing: ticket_history · search tickets: “invoice 42”"
    await eventually(lambda: any(f"{call['title']}: complete" in t for t in bot_texts(s, ts)))
    asked = "Asked billing: What happened to invoice 42?: complete"
    await eventually(lambda: any(asked in t for t in bot_texts(s, ts)))


async def test_stop_during_a_subagents_work_stops_every_thread(stack: tuple[Stack, InProcessApp]) -> None:
    s, app = stack
    s.agents.set_scenario(SLOW)
    ts = await s.slack.user_posts(SUPPORT, "a slow billing question", user=BOB)
    await eventually(lambda: (t := thread_task(s, ts)) and t["title"] == "Asked billing: Dig through the invoices")
    ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WORKING and t)
    assert ticket.session_id
    [thread] = emulated_threads(s, ticket.session_id)
    assert thread.status == "running"
    posted = app.run_coroutine(app.services.slack.chat_postMessage(
        channel=SUPPORT, thread_ts=ts, text="controls", blocks=control_blocks(ticket)))
    await s.slack.click(SUPPORT, str(posted["ts"]), "ticket_stop", user=ALICE)
    # One interrupt with no thread id: the SDK's "every non-archived thread".
    [interrupt] = await eventually(lambda: user_events(s, ticket.session_id or "", "user.interrupt"))
    assert "session_thread_id" not in interrupt
    await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER)
    assert thread.status == "idle" and thread.events[-1]["type"] == "session.thread_status_idle"
    assert thread.events[-1]["stop_reason"] == {"type": "end_turn"}
    stopped = await eventually(lambda: (t := thread_task(s, ts)) and t["status"] == "error" and t)
    assert stopped["output"] == "Stopped before it answered"
    await asyncio.sleep(0.3)
    assert not any("Billing finished" in t for t in bot_texts(s, ts))

