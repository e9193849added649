"""Outcomes without the emulators (issue 18): the rubric config and check-config, provision's
plan, which answers are drafts when a turn is replayed, and verified resolutions."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from app.config.model import parse_config
from app.config.outcomes import describe
from app.config.yaml_lines import ConfigError
from app.cost.verified import ResolutionFacts, facts_of, group, render, summary_line
from app.render.layout import Layout, Task
from app.render.outcome_tasks import OutcomeView
from app.sandbox.app_runner import ROOT
from app.tickets.model import Ticket, TicketState, Transition
from app.tickets.outcome_record import Evaluation, OutcomeRound, define_event, request_text

MINIMAL = """\
agent:
  name: a
  model: claude-sonnet-4-6
  system: s
environments:
  internal:
    managed_environment: {name: e}
    outcomes:
      categories:
        refund:
          description: a refund answer
"""


def _config(extra: str, source: Path | None = None) -> Any:
    return parse_config(MINIMAL + extra, str(source) if source else "cfg.yml")


# -- config and check-config ----------------------------------------------------------------


def test_a_missing_rubric_file_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "support-agent.yml"
    path.write_text(MINIMAL + "          rubric_file: rubrics/nope.md\n")
    with pytest.raises(ConfigError) as err:
        parse_config(path.read_text(), str(path))
    assert f"{path}:12: environments.internal.outcomes.categories.refund.rubric_file: rubric file not found" in str(
        err.value)
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "check-config", str(path)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1 and f"{path}:12" in result.stderr and "Traceback" not in result.stderr


def test_a_rubric_file_beside_the_config_is_read(tmp_path: Path) -> None:
    (tmp_path / "r.md").write_text("States the refund window.\n")
    config = _config("          rubric_file: r.md\n          max_iterations: 5\n", tmp_path / "c.yml")
    key, rubric = config.environments["internal"].outcomes.choose("Refund")
    assert (key, rubric.text, rubric.max_iterations) == ("refund", "States the refund window.\n", 5)
    # No default: a ticket of another category gets no outcome.
    assert config.environments["internal"].outcomes.choose("billing") is None


@pytest.mark.parametrize(("extra", "where", "what"), [
    ("", "cfg.yml:10", "give the rubric as `rubric` (inline text) or `rubric_file`"),
    ("          rubric: x\n          rubric_file: y.md\n", "cfg.yml:10", "not both or neither"),
    ("          rubric: x\n          max_iterations: 21\n", "cfg.yml:13", "less than or equal to 20"),
    ("          rubric: x\n          max_iterations: 0\n", "cfg.yml:13", "greater than or equal to 1"),
])
def test_rubric_limits_are_checked_with_their_line(extra: str, where: str, what: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(extra)
    assert where in str(err.value) and what in str(err.value)


def test_the_shipped_example_validates_and_provision_shows_what_applies(tmp_path: Path) -> None:
    config = parse_config((ROOT / "support-agent.yml").read_text(), str(ROOT / "support-agent.yml"))
    internal = config.environments["internal"].outcomes
    assert internal is not None and not internal.enabled and internal.choose("refund") is None
    lines = describe(config.environments)
    assert "  internal: off (enabled: false); verified after 7 days without a reopen" in lines
    assert "    category refund -> the refund rubric (rubrics/refund.md; at most 3 checks)" in lines
    assert "  customers: none" in lines
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "provision", "--dry-run"], cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "SUPPORT_AGENT_CONFIG": str(ROOT / "support-agent.yml")},
        capture_output=True, text=True, timeout=60,
    )
    assert "Outcome rubrics (sent when a ticket's work starts" in result.stdout
    assert "the support answer rubric (inline" in result.stdout


def test_the_definition_carries_the_request_first() -> None:
    config = _config("          rubric: States the window.\n")
    rubric = config.environments["internal"].outcomes.categories["refund"]
    event = define_event("Can I get a refund?", rubric)
    assert event["description"] == "Can I get a refund?"
    content = "What a good answer is: a refund answer\n\nStates the window."
    assert event["rubric"] == {"type": "text", "content": content}
    assert event["max_iterations"] == 3
    assert request_text(SimpleNamespace(**event)) == "Can I get a refund?"


# -- drafts, decided by time (a takeover replays the turn) --------------------------------------


T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def _ev(kind: str, seconds: float, **fields: Any) -> Any:
    if kind == "agent.message":
        fields["content"] = [SimpleNamespace(type="text", text=fields.pop("text"))]
    return SimpleNamespace(type=kind, processed_at=T0 + timedelta(seconds=seconds), **fields)


def _turn(record: OutcomeRound | None) -> Layout:
    layout = Layout(3000)
    layout.outcome = OutcomeView.of(record)
    events = [
        _ev("user.define_outcome", 0, id="e0", outcome_id="outc_1"),
        _ev("agent.message", 1, id="m1", text="first draft"),
        _ev("span.outcome_evaluation_start", 2, id="s1", outcome_id="outc_1", iteration=0),
        _ev("span.outcome_evaluation_end", 3, id="x1", outcome_id="outc_1", iteration=0,
            result="max_iterations_reached", explanation="never right"),
        _ev("agent.message", 4, id="m2", text="closing words"),
    ]
    for event in events:
        layout.apply(event)
    return layout


def _outbox_text(layout: Layout) -> str:
    return "".join(p.text for p in layout.outbox if p.kind == "text")


def test_a_replay_after_the_verdict_still_holds_every_draft_back() -> None:
    # The record already says the verdict came and the turn ended: the replay decides the same.
    done = OutcomeRound(key="refund", name="refund", customer_facing=True, message_ts="1.0", outcome_id="outc_1",
                        defined_at=T0.isoformat(), result="max_iterations_reached", iterations=1,
                        verdict_at=(T0 + timedelta(seconds=3)).isoformat(),
                        idle_at=(T0 + timedelta(seconds=5)).isoformat())
    for record in (done, done.model_copy(update={"result": "pending", "verdict_at": None, "idle_at": None})):
        layout = _turn(record)
        assert _outbox_text(layout) == ""
        [task] = layout.tasks.values()
        assert (task.status, task.output) == ("error", "not met after the last allowed revision")


def test_a_takeover_after_the_accepted_answer_began_to_show_sends_only_the_rest() -> None:
    record = OutcomeRound(key="refund", name="refund", customer_facing=True, message_ts="1.0", outcome_id="outc_1",
                          defined_at=T0.isoformat(), result="satisfied", iterations=1,
                          verdict_at=(T0 + timedelta(seconds=3)).isoformat())
    layout = Layout(3000)
    layout.outcome = OutcomeView.of(record)
    # What Slack already shows (the records a new holder reads): the check, and part of the answer.
    layout.seed({"m1": "Annual plans are "},
                [Task("outcome-outc_1-0", "Checking the answer against the refund rubric", "complete", "check",
                      output="satisfied")])
    answer = _ev("agent.message", 1, id="m1", text="Annual plans are refunded within 30 days.")
    verdict = _ev("span.outcome_evaluation_end", 3, id="x1", outcome_id="outc_1", iteration=0, result="satisfied",
                  explanation="ok")
    layout.apply(_ev("user.define_outcome", 0, id="e0", outcome_id="outc_1"), track=True)
    assert layout.apply(answer, track=True) == []  # not reported: a later takeover replays it
    layout.apply(_ev("span.outcome_evaluation_start", 2, id="s1", outcome_id="outc_1", iteration=0), track=True)
    assert _outbox_text(layout) == ""  # held until the verdict, even on a replay
    reported = layout.apply(verdict, track=True)
    assert _outbox_text(layout) == "refunded within 30 days."  # only what Slack lacks
    assert verdict in reported  # the check was shown already
    assert answer in layout.outbox[-1].sources  # the answer counts as shown once its rest is


def test_internal_drafts_are_shown_with_a_label_and_a_closing_line() -> None:
    record = OutcomeRound(key="default", name="support answer", message_ts="1.0")
    layout = _turn(record)
    text = _outbox_text(layout)
    assert text.count("Draft: not yet accepted by the grader") == 2 and "first draft" in text
    [task] = layout.tasks.values()
    assert task.output == "not met after the last allowed revision: never right"
    assert "did not accept it against the support answer rubric" in (layout.outcome.closing_note() or "")


def test_without_an_outcome_nothing_changes() -> None:
    layout = _turn(None)
    # No round of ours: the answers are not drafts; the grader's verdict still shows as a check.
    assert _outbox_text(layout) == "first draft\n\nclosing words" and layout.outcome.closing_note() is None
    [task] = layout.tasks.values()
    assert task.title == "Checking the answer" and task.status == "error"
    plain = Layout(3000)
    plain.apply(_ev("agent.message", 1, id="m1", text="an answer"))
    assert _outbox_text(plain) == "an answer" and plain.outcome.closing_note() is None


# -- verified resolutions ---------------------------------------------------------------------


def _ticket(n: int, channel: str = "C1", category: str | None = "refund") -> Ticket:
    return Ticket(id=f"T1-{n}", number=n, team_id="T1", channel_id=channel, thread_ts="1.0", requester_id="U1",
                  environment="internal", category=category)


def _at(days: float) -> float:
    return datetime(2026, 11, 10, tzinfo=UTC).timestamp() + days * 86_400


def _resolved(days: float) -> Transition:
    return Transition(at=_at(days), from_state=TicketState.WAITING_REQUESTER, to_state=TicketState.RESOLVED, cause="r")


def _verdict(result: str, days: float) -> Evaluation:
    return Evaluation(event_id=f"e{days}", round=1, outcome_id="o", iteration=0, result=result, explanation="",
                      at=datetime.fromtimestamp(_at(days), UTC).isoformat())


def test_verified_pending_reopened_and_unverified() -> None:
    since, until = date(2026, 11, 1), date(2026, 11, 30)
    reopen = Transition(at=_at(3), from_state=TicketState.RESOLVED, to_state=TicketState.OPEN, cause="reopened")
    cases = {
        "verified": ([_resolved(1)], [_verdict("satisfied", 0.5)]),
        "reopened": ([_resolved(1), reopen], [_verdict("satisfied", 0.5)]),
        "unverified": ([_resolved(1)], [_verdict("satisfied", 0.2), _verdict("needs_revision", 0.5)]),
        "pending": ([_resolved(18)], [_verdict("satisfied", 17)]),
    }
    now = _at(20)
    facts = []
    for n, (status, (transitions, evals)) in enumerate(cases.items()):
        fact = facts_of(_ticket(n), transitions, evals, since=since, until=until, window_days=7,
                        agent_usd=Decimal("0.30"), grader_usd=Decimal("0.05"))
        assert fact is not None and fact.status(now) == status, status
        facts.append(fact)
    assert facts_of(_ticket(9), [_resolved(40)], [], since=since, until=until, window_days=7) is None
    [row] = group(facts, "category", now)
    assert (row.resolved, row.satisfied, row.verified, row.pending) == (4, 3, 1, 1)
    assert row.total_usd == Decimal("1.40") and row.cost_per_verified_usd == Decimal("1.40")
    assert summary_line([row]) == "1 verified resolution of 4 resolved (1 pending) · $1.40 per verified resolution" \
        " · grader $0.20"
    assert render([row], "category", "csv").splitlines()[1] == "refund,4,3,1,1,5,1.200000,0.200000,1.400000,1.400000"


def test_rows_by_day_and_channel() -> None:
    facts = [
        ResolutionFacts(ticket_id="a", channel="C1", environment="internal", category="refund",
                        resolved_at=_at(1), satisfied=True, window_days=0, agent_usd=Decimal("1")),
        ResolutionFacts(ticket_id="b", channel="C2", environment="internal", category="(none)",
                        resolved_at=_at(2), satisfied=False, window_days=0, agent_usd=Decimal("1")),
    ]
    days = group(facts, "day", _at(5))
    assert [(r.key, r.verified) for r in days] == [("2026-11-11", 1), ("2026-11-12", 0)]
    assert [r.cost_per_verified_usd for r in group(facts, "channel", _at(5))] == [Decimal("1"), None]
    assert yaml.safe_load(render(days, "day", "json"))[1]["cost_per_verified_resolution_usd"] is None
