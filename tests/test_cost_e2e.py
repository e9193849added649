"""Costs end to end through the emulators: capture, ledger, log lines, `/support cost`, budgets.

Real HTTP all the way: the Slack emulator delivers signed events, commands and button clicks to
the app (real slack_bolt); the worker follows the Managed Agents emulator's session with the
real anthropic client; scenario `usage` steps make the emulator report cumulative
`session.usage` events, and its own session usage (with `list_cost`) is the reference the
app's figures must agree with.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cost.budget import ESCALATE_ACTION, RAISE_BUDGET_ACTION
from app.cost.ledger import CostLedger, Totals
from app.cost.model import Usage, compute_cost, format_usd
from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.stack import Stack
from app.sessions.cost_hooks import CostCapture
from app.tickets.model import Ticket, TicketState
from tests.support import eventually

SUPPORT = "C0001"
TRIAGE = "C0009"
TEAM = "T0001"
ALICE = "U0001"  # in @support-team (S0001): staff, so an approver
BOB = "U0002"  # neither staff nor approver
MODEL = "claude-sonnet-4-6"

TWO_TURNS = {"rules": [
    {"match": "(?i)first", "steps": [
        {"thinking": {}},
        {"message": "Checking the worker logs."},
        {"usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_input_tokens": 5000,
                   "cache_creation_5m_input_tokens": 2000, "active_seconds": 12.5}},
        # The stream drops right after a usage event: catch-up lists it again on reconnect.
        {"drop_stream": {"mode": "close"}},
        {"message": "Found it: restart the worker with the new flag."},
        {"usage": {"input_tokens": 800, "output_tokens": 450, "active_seconds": 7.5,
                   "web_search_requests": 1}},
    ]},
    {"match": "(?i)second", "steps": [
        {"message": "Yes, that flag is safe in production."},
        {"usage": {"input_tokens": 2000, "output_tokens": 100, "cache_creation_1h_input_tokens": 1000,
                   "active_seconds": 30}},
    ]},
]}

# 100k input tokens alone list at $0.30: far over a 5-cent budget before the second message.
BIG = {"rules": [
    {"match": "(?i)archive", "steps": [
        {"message": "Reading the whole log archive."},
        {"usage": {"input_tokens": 100_000, "output_tokens": 2000, "active_seconds": 60}},
        {"message": "The archive shows the fix: rotate the signing key."},
        {"usage": {"input_tokens": 500, "output_tokens": 200, "active_seconds": 5}},
    ]},
]}


# -- fixtures and helpers -----------------------------------------------------------------------


def _flush(url: str) -> None:
    import redis as sync_redis

    sync_redis.Redis.from_url(url).flushall()


def write_config(tmp_path: Path, *, budget_usd: float | None = None, triage: str | None = None) -> Path:
    """The shipped config with @support-team as staff and the internal environment adjusted."""
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    internal = data["environments"]["internal"]
    if budget_usd is not None:
        internal["budget_usd"] = budget_usd
    if triage is not None:
        internal["triage_channel"] = triage
    data["slack"]["staff"] = {"users": [], "usergroups": ["S0001"]}
    path = tmp_path / "support-agent.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class CostLines(logging.Handler):
    """Collects the `ticket.cost` records of the `app.cost` logger."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "ticket.cost":
            self.records.append(record)

    def of(self, ticket_id: str, phase: str = "turn") -> list[dict[str, Any]]:
        return [
            dict(r.__dict__) for r in list(self.records)
            if getattr(r, "ticket", None) == ticket_id and getattr(r, "phase", None) == phase
        ]


@pytest.fixture
def cost_lines() -> Iterator[CostLines]:
    logger = logging.getLogger("app.cost")
    handler = CostLines()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    _flush(redis_server.url)
    with Stack(redis_server.url, data_dir=tmp_path, config_path=write_config(tmp_path)) as s:
        yield s


@pytest.fixture
def budget_stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    _flush(redis_server.url)
    config = write_config(tmp_path, budget_usd=0.05, triage=TRIAGE)
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config) as s:
        s.slack.state.add_channel(TRIAGE, "support-triage", members=[ALICE], bot_member=True)
        yield s




def bot_messages(stack: Stack, thread_ts: str, channel: str = SUPPORT) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.thread(channel, thread_ts) if m.get("bot_id") and m.get("ts") != thread_ts]


def bot_texts(stack: Stack, thread_ts: str) -> list[str]:
    return [m.get("text", "") for m in bot_messages(stack, thread_ts)]


def said(stack: Stack, thread_ts: str, text: str) -> bool:
    return any(text in t for t in bot_texts(stack, thread_ts))


def ticket_of(app: InProcessApp, thread_ts: str) -> Ticket | None:
    result: Ticket | None = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, thread_ts))
    return result


async def ticket_in(app: InProcessApp, thread_ts: str, state: TicketState) -> Ticket:
    ticket: Ticket = await eventually(lambda: (t := ticket_of(app, thread_ts)) and t.state == state and t)
    return ticket


def emulated_session(stack: Stack, session_id: str) -> dict[str, Any]:
    return next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == session_id)


def ledger_total(app: InProcessApp, ticket_id: str) -> Totals:
    ledger = CostLedger(app.services.redis, app.services.config.pricing)
    totals: Totals = app.run_coroutine(ledger.ticket_total(ticket_id))
    return totals


def assert_ledger_matches_emulator(totals: Totals, emulated_usage: dict[str, Any], app: InProcessApp) -> Decimal:
    """Token counts, active time and money in the ledger equal the emulator's own usage."""
    reported = Usage.from_sdk(emulated_usage)
    assert totals.input_tokens == emulated_usage["input_tokens"]
    assert totals.output_tokens == emulated_usage["output_tokens"]
    assert totals.cache_read_tokens == emulated_usage["cache_read_input_tokens"]
    assert totals.cache_write_5m_tokens == emulated_usage["cache_creation"]["ephemeral_5m_input_tokens"]
    assert totals.cache_write_1h_tokens == emulated_usage["cache_creation"]["ephemeral_1h_input_tokens"]
    assert totals.web_searches == emulated_usage["server_tool_use"]["web_search_requests"]
    assert totals.active_seconds == Decimal(str(emulated_usage["active_seconds"]))
    expected = compute_cost(reported, MODEL, app.services.config.pricing)
    assert abs(totals.total_usd - expected.total_usd) < Decimal("0.000001")
    # The emulator's list cost (whole cents) agrees to the cent.
    list_cents = int(emulated_usage["list_cost"]["amount"])
    assert abs(totals.total_usd * 100 - list_cents) <= Decimal("0.5")
    return expected.total_usd


def button_message(stack: Stack, thread_ts: str, action_id: str) -> dict[str, Any] | None:
    for m in bot_messages(stack, thread_ts):
        for block in m.get("blocks") or []:
            if any(e.get("action_id") == action_id for e in block.get("elements") or []):
                return m
    return None


def responses(stack: Stack) -> list[dict[str, Any]]:
    return [r["body"] for r in stack.slack.state.snapshot_list("responses")]


# -- capture, ledger, log lines and /support cost -------------------------------------------------


async def test_two_turns_agree_across_ledger_log_lines_and_support_cost(
    stack: Stack, cost_lines: CostLines
) -> None:
    stack.agents.set_scenario(TWO_TURNS)
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "first: the worker keeps crashing")
    await eventually(lambda: said(stack, ts, "Found it: restart the worker with the new flag."))
    ticket = await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    assert ticket.session_id
    await stack.slack.user_posts(SUPPORT, "second: is that flag safe?", thread_ts=ts, mention_bot=False)
    await eventually(lambda: said(stack, ts, "Yes, that flag is safe in production."))
    await eventually(lambda: len(cost_lines.of(ticket.id)) == 2)
    await ticket_in(app, ts, TicketState.WAITING_REQUESTER)

    # The emulator reported this usage; the app saw it through `session.usage` and `retrieve`.
    session = emulated_session(stack, ticket.session_id)
    usage = session["usage"]
    assert usage["input_tokens"] == 1200 + 800 + 2000 and usage["output_tokens"] == 300 + 450 + 100
    assert session["processed_messages"] == ["first: the worker keeps crashing", "second: is that flag safe?"]
    assert any(r["path"].endswith("/stream") for r in stack.agents.state.request_log())  # followed live

    # Ledger.
    totals = ledger_total(app, ticket.id)
    total_usd = assert_ledger_matches_emulator(totals, usage, app)
    assert totals.turns == 2

    # One `ticket.cost` line per turn, with the turn's own delta; together they make the total.
    lines = cost_lines.of(ticket.id)
    assert len(lines) == 2
    first, second = lines
    for line in lines:
        assert line["session"] == ticket.session_id and line["team"] == TEAM
        assert line["channel"] == SUPPORT and line["environment"] == "internal"
        assert line["requester"] == ALICE and line["model"] == MODEL
    assert (first["input_tokens"], first["output_tokens"]) == (2000, 750)
    assert (first["cache_read_input_tokens"], first["cache_write_5m_tokens"]) == (5000, 2000)
    assert first["active_seconds"] == 20.0 and first["web_search_requests"] == 1
    assert (second["input_tokens"], second["output_tokens"], second["cache_write_1h_tokens"]) == (2000, 100, 1000)
    assert second["active_seconds"] == 30.0
    assert sum(line["input_tokens"] for line in lines) == usage["input_tokens"]
    assert abs(Decimal(str(first["total_usd"])) + Decimal(str(second["total_usd"])) - total_usd) < Decimal("0.00001")
    assert abs(Decimal(str(second["ticket_total_usd"])) - total_usd) < Decimal("0.000001")
    assert second["list_cost_cents"] == int(usage["list_cost"]["amount"])

    # The footer at the end of the turn shows the same ticket total.
    assert any(f"ticket total {format_usd(total_usd)}" in str(m) for m in bot_messages(stack, ts))

    # `/support cost` in the channel reports the same money.
    await stack.slack.send_command("/support", "cost", user=ALICE)
    body = (await eventually(lambda: responses(stack)))[0]
    assert body["response_type"] == "ephemeral"
    assert f"today {format_usd(total_usd)}" in body["text"]
    blocks = str(body["blocks"])
    assert "1 ticket · 2 turns" in blocks
    assert f"*{ticket.ref}*" in blocks and format_usd(total_usd) in blocks

    # A replayed usage event never counts twice: feed every usage event of the session (and the
    # turn ends) to the capture hooks again, as a redelivery after a crash would.
    capture = CostCapture(app.services.redis, app.services.anthropic, app.services.config)

    async def replay() -> int:
        events = [e async for e in app.services.anthropic.beta.sessions.events.list(ticket.session_id)]
        usage_events = [e for e in events if e.type == "session.usage"]
        for event in usage_events:
            await capture.on_usage(ticket, event)
            await capture.on_usage(ticket, event)
        for event in events:
            if event.type == "session.status_idle":
                await capture.on_idle(ticket, event)
        # An older cumulative snapshot under a new id adds nothing either.
        await capture.ledger.record_snapshot(
            ticket, model=MODEL, usage_snapshot=usage_events[0].usage, source_event_id="late-copy"
        )
        return len(usage_events)

    assert app.run_coroutine(replay()) >= 3
    after = ledger_total(app, ticket.id)
    assert after == totals
    assert len(cost_lines.of(ticket.id)) == 2
    app.stop()


# -- budgets ------------------------------------------------------------------------------------


async def stopped_at_budget(stack: Stack, app: InProcessApp) -> tuple[str, Ticket, dict[str, Any]]:
    """Bob asks something expensive; the session pauses at its 5-cent budget."""
    stack.agents.set_scenario(BIG)
    ts = await stack.slack.user_posts(SUPPORT, "please read the archive", user=BOB)
    note = await eventually(lambda: button_message(stack, ts, RAISE_BUDGET_ACTION))
    ticket = await ticket_in(app, ts, TicketState.WAITING_APPROVAL)
    assert ticket.session_id and ticket.stop_reason == "budget_reached"
    session = emulated_session(stack, ticket.session_id)
    assert session["budget_paused"] and session["budget"]["max_list_cost"]["amount"] == "5"
    return ts, ticket, note


async def test_budget_stop_and_a_raise_by_an_approver_resume_the_turn(
    budget_stack: Stack, cost_lines: CostLines
) -> None:
    stack = budget_stack
    app = stack.start_app()
    ts, ticket, note = await stopped_at_budget(stack, app)
    assert ticket.session_id
    body = note["blocks"][0]["text"]["text"]
    assert "has reached its spending limit of $0.05, so I have paused work on it" in body
    assert "The archive shows the fix" not in " ".join(bot_texts(stack, ts))
    # The turn so far was costed when the session stopped, and the note says what was spent.
    [stop_line] = await eventually(lambda: cost_lines.of(ticket.id))
    assert stop_line["input_tokens"] == 100_000
    assert f"It has used {format_usd(Decimal(str(stop_line['ticket_total_usd'])))} so far" in body

    # Bob (the requester, not an approver) is refused: nothing changes.
    delivery = await stack.slack.click(SUPPORT, note["ts"], RAISE_BUDGET_ACTION, user=BOB)
    assert delivery.status == 200 and delivery.elapsed < 1.0
    refusals = await eventually(
        lambda: [e for e in stack.slack.state.snapshot_list("ephemerals") if e["user"] == BOB]
    )
    assert "Only approvers" in refusals[0]["text"] and refusals[0]["thread_ts"] == ts
    await asyncio.sleep(0.3)
    session = emulated_session(stack, ticket.session_id)
    assert session["budget_paused"] and session["budget"]["max_list_cost"]["amount"] == "5"
    assert ticket_of(app, ts).state == TicketState.WAITING_APPROVAL  # type: ignore[union-attr]
    log = stack.agents.state.request_log()
    assert not [r for r in log if r["method"] == "POST" and r["path"].endswith(ticket.session_id)]

    # Alice (staff) raises it: the session budget goes up and the turn runs to completion.
    delivery = await stack.slack.click(SUPPORT, note["ts"], RAISE_BUDGET_ACTION, user=ALICE)
    assert delivery.status == 200 and delivery.elapsed < 1.0
    await eventually(lambda: said(stack, ts, "The archive shows the fix: rotate the signing key."))
    await eventually(lambda: any("raised the limit for ticket #1 to $1.05" in t for t in bot_texts(stack, ts)))
    done = await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    session = emulated_session(stack, ticket.session_id)
    assert not session["budget_paused"] and session["budget"]["max_list_cost"]["amount"] == "105"
    assert session["processed_messages"] == ["please read the archive"]  # the same turn, resumed
    transitions = app.run_coroutine(app.services.store.transitions(done.id))
    raised = [t for t in transitions if t.cause == "budget raised to $1.05 by U0001"]
    assert raised and raised[0].actor == ALICE
    # The note's buttons are retired; who acted is recorded on it.
    assert button_message(stack, ts, RAISE_BUDGET_ACTION) is None
    assert "Budget raised by <@U0001>" in str(stack.slack.state.message(SUPPORT, note["ts"]))

    # Costs still agree with the emulator across the pause: stop, then the rest of the turn.
    await eventually(lambda: len(cost_lines.of(ticket.id)) == 2)
    totals = ledger_total(app, ticket.id)
    total_usd = assert_ledger_matches_emulator(totals, session["usage"], app)
    assert sum(line["input_tokens"] for line in cost_lines.of(ticket.id)) == 100_500
    assert total_usd > Decimal("0.05")
    app.stop()


async def test_a_raise_whose_resumption_lags_is_still_followed_to_the_end(budget_stack: Stack) -> None:
    """The raise returns before the session runs again (`budget_resume_lag`): the follower the
    raise wakes finds it still idle at `budget_reached`, yet must not take that as the end."""
    stack = budget_stack
    app = stack.start_app()
    ts, _, note = await stopped_at_budget(stack, app)
    stack.agents.set_scenario({**BIG, "budget_resume_lag": 1.5})
    delivery = await stack.slack.click(SUPPORT, note["ts"], RAISE_BUDGET_ACTION, user=ALICE)
    assert delivery.status == 200
    await eventually(lambda: said(stack, ts, "The archive shows the fix: rotate the signing key."))
    await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    app.stop()


async def test_escalate_at_the_budget_hands_the_ticket_to_triage(budget_stack: Stack) -> None:
    stack = budget_stack
    app = stack.start_app()
    ts, ticket, note = await stopped_at_budget(stack, app)

    await stack.slack.click(SUPPORT, note["ts"], ESCALATE_ACTION, user=BOB)
    await eventually(lambda: [e for e in stack.slack.state.snapshot_list("ephemerals") if e["user"] == BOB])
    assert ticket_of(app, ts).state == TicketState.WAITING_APPROVAL  # type: ignore[union-attr]

    await stack.slack.click(SUPPORT, note["ts"], ESCALATE_ACTION, user=ALICE)
    escalated = await ticket_in(app, ts, TicketState.ESCALATED)
    assert any(t.actor == ALICE for t in app.run_coroutine(app.services.store.transitions(escalated.id)))
    await eventually(lambda: any("escalated ticket #1" in t for t in bot_texts(stack, ts)))
    triage = await eventually(lambda: [m for m in stack.slack.state.history(TRIAGE) if m.get("bot_id")])
    assert "Ticket #1" in triage[0]["text"] and "<@U0001>" in triage[0]["text"]
    assert button_message(stack, ts, ESCALATE_ACTION) is None
    # The session stays paused (idle costs nothing); no budget was raised.
    session = emulated_session(stack, ticket.session_id or "")
    assert session["budget"]["max_list_cost"]["amount"] == "5"
    app.stop()

