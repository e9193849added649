"""Outcomes end to end through the emulators (issue 18): a rubric per ticket category is defined
when a ticket's work starts and after a reopen, each grader check shows in the timeline, drafts
are marked (or held back from the requester where the environment is customer-facing), an answer
that cannot be accepted goes to a person with the grader's explanation, and the grader's tokens
are their own cost line.

Real HTTP all the way: the Slack emulator delivers signed events and button clicks to the app
(real slack_bolt); the worker follows the Managed Agents emulator's session with the real
anthropic client; scenario `evaluate` steps make the emulator grade the outcome the app defined.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from app.cost.grader import GraderLedger
from app.cost.ledger import CostLedger, utc_today
from app.cost.model import Usage, compute_cost, format_usd
from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.stack import Stack
from app.slack.blocks import ACTION_REOPEN, ACTION_RESOLVE
from app.slack.home import build_home
from app.tickets import outcome_record
from app.tickets.model import Ticket, TicketState
from app.trace.build import build_trace
from tests.support import eventually

SUPPORT = "C0001"
TRIAGE = "C0009"
TEAM = "T0001"
ALICE = "U0001"  # in @support-team (S0001): staff
MODEL = "claude-sonnet-4-6"

DRAFT = "Refunds are possible. Ask us in this thread."
REVISED = "Annual plans are refunded in full within 30 days; ask in Settings → Billing."
FIRST_TRY = "Use Forgot password? on the sign-in page; the link is valid for 60 minutes."
GRADER = {"input_tokens": 4000, "output_tokens": 600, "cache_read_input_tokens": 1000,
          "cache_creation_input_tokens": 0}

SCENARIO = {"rules": [
    {"match": "(?i)refund", "steps": [
        {"thinking": {}},
        {"message": DRAFT, "deltas": 3},
        {"usage": {"input_tokens": 1000, "output_tokens": 200, "active_seconds": 5}},
        {"evaluate": "needs_revision", "explanation": "no refund window given", "grader_usage": GRADER},
        {"message": REVISED, "deltas": 3},
        {"usage": {"input_tokens": 800, "output_tokens": 150, "active_seconds": 3}},
        {"evaluate": "satisfied", "explanation": "window, how to ask and timing are all there",
         "grader_usage": GRADER},
    ]},
    {"match": "(?i)password", "steps": [
        {"message": FIRST_TRY, "deltas": 2},
        {"evaluate": "satisfied", "explanation": "answers the question", "grader_usage": GRADER},
    ]},
    {"match": "(?i)invoice", "steps": [
        {"message": "Invoices can be edited in Settings.", "deltas": 2},
        {"evaluate": "needs_revision", "explanation": "invoices cannot be edited", "grader_usage": GRADER},
        {"message": "Invoices can be changed by support.", "deltas": 2},
        {"evaluate": "needs_revision", "explanation": "still wrong: a credit note is needed",
         "grader_usage": GRADER},
        {"message": "Maybe ask finance.", "deltas": 2},
        {"evaluate": "max_iterations_reached", "explanation": "never said a credit note is issued",
         "grader_usage": GRADER},
        {"message": "I could not fully answer this; a person will help.", "deltas": 2},
    ]},
    {"match": "(?i)dark mode", "steps": [
        {"message": "Dark mode is under Settings → Appearance.", "deltas": 2},
        {"evaluate": "failed", "explanation": "the rubric asks for a support answer; this reply is a guess",
         "grader_usage": GRADER},
        {"message": "Sorry, I could not verify this.", "deltas": 2},
    ]},
    {"match": "(?i)reopened", "steps": [
        {"message": "Picking this up again: the refund was sent.", "deltas": 2},
        {"evaluate": "satisfied", "explanation": "states what happened", "grader_usage": GRADER},
    ]},
]}


def _flush(url: str) -> None:
    import redis as sync_redis

    sync_redis.Redis.from_url(url).flushall()


def write_config(tmp_path: Path, *, customer_facing: bool = False, triage: str | None = None) -> Path:
    """The shipped config with outcomes on in the internal environment (its example rubrics)."""
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    internal = data["environments"]["internal"]
    internal["outcomes"]["enabled"] = True
    internal["outcomes"]["verified_after_days"] = 0
    internal["customer_facing"] = customer_facing
    if triage:
        internal["triage_channel"] = triage
    data["slack"]["staff"] = {"users": [], "usergroups": ["S0001"]}
    data["slack"]["admins"] = [ALICE]
    path = tmp_path / "support-agent.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    # The refund rubric is a repository file named relative to the config: copy it beside it.
    (tmp_path / "rubrics").mkdir(exist_ok=True)
    (tmp_path / "rubrics" / "refund.md").write_text((ROOT / "rubrics" / "refund.md").read_text())
    return path


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    _flush(redis_server.url)
    with Stack(redis_server.url, data_dir=tmp_path, config_path=write_config(tmp_path, triage=TRIAGE)) as s:
        s.slack.state.add_channel(TRIAGE, "support-triage", members=[ALICE], bot_member=True)
        s.agents.set_scenario(SCENARIO)
        yield s


@pytest.fixture
def facing_stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    _flush(redis_server.url)
    with Stack(redis_server.url, data_dir=tmp_path, config_path=write_config(tmp_path, customer_facing=True)) as s:
        s.agents.set_scenario(SCENARIO)
        yield s


def bot_messages(stack: Stack, thread_ts: str, channel: str = SUPPORT) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.thread(channel, thread_ts) if m.get("bot_id") and m.get("ts") != thread_ts]


def shown_text(stack: Stack, thread_ts: str) -> str:
    return "\n".join(m.get("text", "") for m in bot_messages(stack, thread_ts))


def check_tasks(stack: Stack, thread_ts: str) -> list[dict[str, Any]]:
    out = []
    for m in bot_messages(stack, thread_ts):
        for task in ((m.get("stream") or {}).get("tasks") or {}).values():
            if str(task.get("id", "")).startswith("outcome-"):
                out.append(task)
    return out


def finished(stack: Stack, thread_ts: str) -> bool:
    return all((m.get("stream") or {}).get("state") in (None, "stopped") for m in bot_messages(stack, thread_ts))


def ticket_of(app: InProcessApp, thread_ts: str) -> Ticket | None:
    result: Ticket | None = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, thread_ts))
    return result


async def ticket_in(app: InProcessApp, thread_ts: str, *states: TicketState) -> Ticket:
    ticket: Ticket = await eventually(lambda: (t := ticket_of(app, thread_ts)) and t.state in states and t)
    return ticket


def defines(stack: Stack, session_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.agents.state.received_user_events(session_id) if e["type"] == "user.define_outcome"]


def emulated_session(stack: Stack, session_id: str) -> dict[str, Any]:
    return next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == session_id)


def record(app: InProcessApp, ticket_id: str) -> outcome_record.OutcomeRound | None:
    result: outcome_record.OutcomeRound | None = app.run_coroutine(outcome_record.load(app.services.redis, ticket_id))
    return result


async def click(stack: Stack, thread_ts: str, action_id: str, ticket_id: str) -> None:
    message = next(m for m in reversed(bot_messages(stack, thread_ts))
                   if any(e.get("action_id") == action_id
                          for b in m.get("blocks") or [] for e in b.get("elements") or []))
    await stack.slack.click(SUPPORT, message["ts"], action_id, user=ALICE)


# -- the tests ----------------------------------------------------------------------------------


async def test_satisfied_on_the_first_try(stack: Stack) -> None:
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "I forgot my password, what now?")
    ticket = await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    await eventually(lambda: finished(stack, ts) and "grader accepted" in str(bot_messages(stack, ts)))
    assert ticket.session_id
    # The work started with the default rubric (no category yet), sent as the outcome, no message.
    [defined] = defines(stack, ticket.session_id)
    assert defined["description"] == "I forgot my password, what now?"
    assert defined["max_iterations"] == 3 and defined["rubric"]["type"] == "text"
    assert "relies on the knowledge base" in defined["rubric"]["content"]
    assert not [e for e in stack.agents.state.received_user_events(ticket.session_id) if e["type"] == "user.message"]
    # One check in the timeline, satisfied; the answer shown, marked a draft until then.
    [task] = check_tasks(stack, ts)
    assert task["title"] == "Checking the answer against the support answer rubric"
    assert (task["status"], task.get("output")) == ("complete", "satisfied")
    text = shown_text(stack, ts)
    assert FIRST_TRY in text and "Draft: not yet accepted by the grader" in text
    assert "The grader accepted this answer against the support answer rubric (1 check)" in str(bot_messages(stack, ts))
    # The session's own state agrees (SDK BetaManagedAgentsOutcomeEvaluationResource).
    [evaluation] = emulated_session(stack, ticket.session_id)["outcome_evaluations"]
    assert (evaluation["result"], evaluation["iteration"]) == ("satisfied", 0)
    rec = record(app, ticket.id)
    assert rec is not None and rec.satisfied and rec.outcome_id == evaluation["outcome_id"] and rec.idle_at


async def test_needs_revision_then_satisfied(stack: Stack) -> None:
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "Can I get a refund on my annual plan?")
    ticket = await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    await eventually(lambda: finished(stack, ts) and len(check_tasks(stack, ts)) == 2
                     and all(t["status"] == "complete" for t in check_tasks(stack, ts)))
    first, second = check_tasks(stack, ts)
    assert first["output"] == "needs revision: no refund window given"
    assert second["output"] == "satisfied"
    text = shown_text(stack, ts)
    # Internal: both drafts are shown, each labelled; the last line says it was accepted.
    assert DRAFT in text and REVISED in text and text.count("Draft: not yet accepted") == 2
    assert "(2 checks)" in str(bot_messages(stack, ts))
    assert ticket.state == TicketState.WAITING_REQUESTER
    evaluations = app.run_coroutine(outcome_record.evaluations(app.services.redis, ticket.id))
    assert [(e.iteration, e.result) for e in evaluations] == [(0, "needs_revision"), (1, "satisfied")]
    assert evaluations[0].input_tokens == GRADER["input_tokens"]
    # The trace shows each evaluation: iteration, result, explanation, the grader's usage.
    trace = app.run_coroutine(build_trace(app.services.anthropic, app.services.store, ticket, app.services.scrubber))
    checks = [e for e in trace.entries if e.detail.get("type") == "span.outcome_evaluation_end"]
    assert [(e.detail["iteration"], e.detail["result"]) for e in checks] == [(0, "needs_revision"), (1, "satisfied")]
    assert checks[0].detail["explanation"] == "no refund window given"
    assert checks[0].detail["usage"]["input_tokens"] == GRADER["input_tokens"]
    assert checks[0].summary == ("outcome check 1: needs_revision · grader 4,000 in / 600 out tokens: "
                                 "no refund window given")
    [asked] = [e for e in trace.entries if e.summary.startswith("(outcome defined)")]
    assert asked.detail["text"] == "Can I get a refund on my annual plan?" and asked.detail["max_iterations"] == 3


async def test_max_iterations_hands_the_ticket_to_a_person_with_the_explanation(stack: Stack) -> None:
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "Please fix the VAT number on my invoice")
    ticket = await ticket_in(app, ts, TicketState.ESCALATED)
    await eventually(lambda: finished(stack, ts) and len(check_tasks(stack, ts)) == 3)
    last = check_tasks(stack, ts)[-1]
    assert last["status"] == "error"
    assert last["output"] == "not met after the last allowed revision: never said a credit note is issued"
    # The thread hears a person takes over; the triage channel gets the grader's explanation.
    assert "handed the ticket to the support team" in shown_text(stack, ts)
    triage = [m["text"] for m in stack.slack.state.history(TRIAGE)]
    assert any("never said a credit note is issued" in t and f"Ticket {ticket.ref}" in t for t in triage)
    # The unverified last answer is marked as a draft, not as final.
    assert "Draft, not a final answer" in str(bot_messages(stack, ts))
    transitions = app.run_coroutine(app.services.store.transitions(ticket.id))
    assert transitions[-1].to_state == TicketState.ESCALATED and transitions[-1].actor == "grader"


async def test_customer_facing_draft_is_held_back_until_satisfied(facing_stack: Stack) -> None:
    stack = facing_stack
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "Can I get a refund on my annual plan?")
    await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    await eventually(lambda: finished(stack, ts) and REVISED in shown_text(stack, ts))
    text = shown_text(stack, ts)
    # The requester never saw the first draft, nor a draft label, nor the grader's words.
    assert DRAFT not in text and "Draft" not in text
    outputs = [t.get("output") for t in check_tasks(stack, ts)]
    assert outputs == ["needs revision", "satisfied"]
    # Every message and stream chunk the app sent to the channel (but the ephemerals to staff):
    # the held draft never went there.
    sent = str([c.params for c in stack.slack.state.calls()
                if c.params.get("channel") == SUPPORT and c.method != "chat.postEphemeral"])
    assert DRAFT not in sent
    # Staff saw the held draft, ephemerally, with the grader's explanation.
    ephemerals = stack.slack.state.snapshot_list("ephemerals")
    held = [e for e in ephemerals if e["user"] == ALICE and "Draft held back" in e["text"]]
    assert held and DRAFT in held[0]["text"] and "no refund window given" in held[0]["text"]


async def test_reopen_defines_the_outcome_again(stack: Stack) -> None:
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "Can I get a refund on my annual plan?")
    ticket = await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
    await eventually(lambda: finished(stack, ts) and "(2 checks)" in str(bot_messages(stack, ts)))
    # The agent (or triage) filed it as a refund: the next round uses the refund rubric (a file).
    fresh = app.run_coroutine(app.services.store.get(ticket.id))
    fresh.category = "refund"
    app.run_coroutine(app.services.store.save(fresh))
    await click(stack, ts, ACTION_RESOLVE, ticket.id)
    await ticket_in(app, ts, TicketState.RESOLVED)
    await eventually(lambda: any(ACTION_REOPEN in str(m.get("blocks")) for m in bot_messages(stack, ts)))
    await click(stack, ts, ACTION_REOPEN, ticket.id)
    reopened = await eventually(lambda: (rec := record(app, ticket.id)) and rec.round == 2 and rec.idle_at and rec)
    assert reopened.key == "refund" and reopened.name == "refund" and reopened.satisfied
    # Two outcomes were defined: at the start, and for the reopen's prompt (same session or a new one).
    outcomes = [e for e in stack.agents.state.received_user_events() if e["type"] == "user.define_outcome"]
    assert len(outcomes) == 2
    assert outcomes[1]["description"].startswith(("The ticket was reopened by", f"Ticket {ticket.ref} was reopened"))
    assert "# Refund answer rubric" in outcomes[1]["rubric"]["content"]
    await eventually(lambda: any(t["title"].endswith("the refund rubric") and t["status"] == "complete"
                                 for t in check_tasks(stack, ts)))


async def test_grader_cost_in_the_ledger_and_the_verified_resolution_report(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app = stack.start_app()
    refund = await stack.slack.user_posts(SUPPORT, "Can I get a refund on my annual plan?")
    ticket = await ticket_in(app, refund, TicketState.WAITING_REQUESTER)
    await eventually(lambda: (rec := record(app, ticket.id)) and rec.satisfied and finished(stack, refund))
    ledger = GraderLedger(app.services.redis, app.services.config.pricing)
    totals = (await eventually(lambda: (t := app.run_coroutine(ledger.ticket_totals([ticket.id]))[ticket.id])
                               and t.evaluations == 2 and t))
    one = compute_cost(Usage(input_tokens=4000, output_tokens=600, cache_read_input_tokens=1000), MODEL,
                       app.services.config.pricing).total_usd
    assert totals.input_tokens == 8000 and totals.output_tokens == 1200
    assert abs(totals.total_usd - 2 * one) < Decimal("0.000001")
    day = app.run_coroutine(ledger.total(since=utc_today(), until=utc_today(), dim="channel", member=SUPPORT))
    assert day.evaluations == 2 and day.tickets == 1

    # A second ticket, satisfied at once; both resolved (verified at once: verified_after_days 0).
    password = await stack.slack.user_posts(SUPPORT, "I forgot my password, what now?")
    other = await ticket_in(app, password, TicketState.WAITING_REQUESTER)
    await eventually(lambda: (rec := record(app, other.id)) and rec.satisfied and finished(stack, password))
    fresh = app.run_coroutine(app.services.store.get(ticket.id))
    fresh.category = "refund"
    app.run_coroutine(app.services.store.save(fresh))
    for ts, t in ((refund, ticket), (password, other)):
        await click(stack, ts, ACTION_RESOLVE, t.id)
        await ticket_in(app, ts, TicketState.RESOLVED)
    agent = app.run_coroutine(CostLedger(app.services.redis, app.services.config.pricing).ticket_totals(
        [ticket.id, other.id]))
    spent = agent[ticket.id].total_usd + agent[other.id].total_usd + 3 * one

    # `support-agent costs --verified`, by category, as JSON and CSV.
    monkeypatch.setenv("REDIS_URL", stack.redis_url)
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(stack.config_path))
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["costs", "--verified", "--by", "category", "--format", "json"]) == 0
    rows = {r["category"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {"refund", "(none)"}
    assert (rows["refund"]["resolved"], rows["refund"]["verified"], rows["refund"]["grader_checks"]) == (1, 1, 2)
    assert abs(Decimal(str(rows["refund"]["grader_usd"])) - 2 * one) < Decimal("0.000001")
    assert await asyncio.to_thread(main, ["costs", "--verified", "--by", "environment", "--format", "csv"]) == 0
    header, line = capsys.readouterr().out.strip().splitlines()
    record_ = dict(zip(header.split(","), line.split(","), strict=True))
    assert record_["environment"] == "internal" and record_["verified"] == "2"
    assert abs(Decimal(record_["cost_per_verified_resolution_usd"]) - spent / 2) < Decimal("0.000002")

    # The plain cost table gets the grader's own line beside it.
    assert await asyncio.to_thread(main, ["costs"]) == 0
    assert f"outcome grader: {format_usd(3 * one)} over 3 checks on 2 tickets" in capsys.readouterr().out

    # `/support cost` says it too.
    await stack.slack.send_command("/support", "cost", user=ALICE)
    body = (await eventually(lambda: [r["body"] for r in stack.slack.state.snapshot_list("responses")]))[0]
    assert "2 verified resolutions of 2 resolved" in str(body["blocks"])
    assert "per verified resolution" in str(body["blocks"])
    # And the admins' App Home, by environment and category.
    home = str(app.run_coroutine(build_home(app.services, ALICE)))
    assert "Verified resolutions this month" in home and "category *refund* · 1 verified resolution" in home


async def test_with_outcomes_off_an_answer_is_never_a_draft(redis_server: EmbeddedRedis, tmp_path: Path) -> None:
    """The shipped config (outcomes off): no outcome is defined, and outcome events the session
    reports anyway (as the contract test injects them) leave the answer as it is."""
    _flush(redis_server.url)
    with Stack(redis_server.url, data_dir=tmp_path) as stack:
        stack.agents.set_scenario({"rules": [{"match": None, "steps": [
            {"event": "user.define_outcome"}, {"event": "span.outcome_evaluation_start"},
            {"event": "span.outcome_evaluation_end", "fields": {"result": "satisfied"}},
            {"message": "All of it, and nothing else."},
        ]}]})
        app = stack.start_app()
        ts = await stack.slack.user_posts(SUPPORT, "the whole union please")
        ticket = await ticket_in(app, ts, TicketState.WAITING_REQUESTER)
        await eventually(lambda: finished(stack, ts) and "All of it" in shown_text(stack, ts))
        assert [m.get("text") for m in bot_messages(stack, ts)] == ["All of it, and nothing else."]
        assert ticket.session_id and not defines(stack, ticket.session_id)
        assert record(app, ticket.id) is None


async def test_a_verdict_nobody_followed_is_acted_on_when_its_webhook_arrives(stack: Stack) -> None:
    """`session.outcome_evaluation_ended` wakes a ticket whose follower missed the grader: the
    catch-up records the checks and hands the ticket to a person."""
    from pydantic import SecretStr

    from app.tickets.model import InboxMessage
    from tests.test_webhooks import KEY, payload, post, signed

    app = stack.start_app(anthropic_webhook_signing_key=SecretStr(KEY))
    s = app.services

    async def stalled() -> Ticket:
        agent = await s.anthropic.beta.agents.create(name="support-agent", model=MODEL)
        env = await s.anthropic.beta.environments.create(name="support-internal")
        session = await s.anthropic.beta.sessions.create(agent=agent.id, environment_id=env.id)
        root = await s.slack.chat_postMessage(channel=SUPPORT, text="Please fix the VAT number on my invoice")
        ticket, _ = await s.store.open_ticket(team_id=TEAM, channel_id=SUPPORT, thread_ts=str(root["ts"]),
                                              requester_id=ALICE, environment="internal", title="VAT number")
        ticket.session_id = session.id
        await s.store.save(ticket)
        ticket = await s.store.transition(ticket, TicketState.WORKING, "agent running")
        message = InboxMessage(ts=str(root["ts"]), user_id=ALICE, text="Please fix the VAT number on my invoice")
        events = await outcome_record.events_for(s.redis, s.config, ticket, message)
        await s.anthropic.beta.sessions.events.send(session.id, events=events)  # type: ignore[arg-type]
        return ticket

    ticket = app.run_coroutine(stalled())
    assert ticket.session_id
    await eventually(lambda: emulated_session(stack, ticket.session_id or "")["status"] == "idle")
    assert app.run_coroutine(outcome_record.evaluations(s.redis, ticket.id)) == []  # nobody followed
    body = payload(ticket.session_id, etype="session.outcome_evaluation_ended", event_id="event_outcome")
    response = await post(app, body, signed(body, "msg_outcome"))
    assert response.status_code == 200 and response.json()["action"] == "woken"
    await ticket_in(app, ticket.thread_ts, TicketState.ESCALATED)
    evaluations = app.run_coroutine(outcome_record.evaluations(s.redis, ticket.id))
    assert [e.result for e in evaluations] == ["needs_revision", "needs_revision", "max_iterations_reached"]
    await eventually(lambda: any("never said a credit note is issued" in m["text"]
                                 for m in stack.slack.state.history(TRIAGE)))


async def test_customer_facing_failed_check_goes_to_a_person_and_the_draft_never_shows(facing_stack: Stack) -> None:
    stack = facing_stack
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "Where is dark mode?")
    ticket = await ticket_in(app, ts, TicketState.ESCALATED)
    await eventually(lambda: finished(stack, ts) and "support team" in shown_text(stack, ts))
    text = shown_text(stack, ts)
    assert "Settings → Appearance" not in text and "could not verify" not in text
    assert "the rubric asks for a support answer" not in text  # the grader's words stay with staff
    [check] = check_tasks(stack, ts)
    assert (check["status"], check["output"]) == ("error", "the rubric does not apply to this answer")
    held = [e for e in stack.slack.state.snapshot_list("ephemerals") if e["user"] == ALICE]
    assert any("Settings → Appearance" in e["text"] and "this reply is a guess" in e["text"] for e in held)
    last = app.run_coroutine(app.services.store.transitions(ticket.id))[-1]
    assert last.cause == "outcome failed: handed to a person"

