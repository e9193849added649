"""What a turn shows of an outcome: the grader's checks in the timeline, and drafts. No I/O but
`outcome_view`, which reads the round's record when a turn opens.

- Each evaluation is a task: "Checking the answer against the refund rubric" in progress at
  `span.outcome_evaluation_start`, then complete with "needs revision: <explanation>" or
  "satisfied", or failed with "not met after the last allowed revision" / "the rubric does not
  apply" (SDK BetaManagedAgentsSpanOutcomeEvaluationEndEvent.result). Where drafts are held
  back (`customer_facing`), the requester's timeline shows the verdict without the explanation.
- An answer the grader has not accepted is a draft. Where the environment is `customer_facing`
  it is held back: not shown in the thread until a `satisfied` verdict releases the latest one
  (staff get every held draft ephemerally, `app/sessions/outcomes.py`). Elsewhere it is shown
  with a draft label, and the turn ends with a line saying whether the grader accepted it.

Which messages are drafts is decided by time, so a takeover that replays a turn from its start
decides the same: a message processed after the round was defined and before its turn ended is
a draft, unless it came after a `satisfied` verdict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.render.content import AgentText, Piece, Task
from app.render.slack_text import neutralise_mentions
from app.tickets.outcome_record import UNMET, OutcomeRound, load, parse_time

log = logging.getLogger(__name__)

OUTCOME_EVENTS = frozenset({"user.define_outcome", "span.outcome_evaluation_start", "span.outcome_evaluation_end"})
DRAFT_LABEL = "_Draft: not yet accepted by the grader._"
LABEL_SUFFIX = ":draft-label"
RESULTS = {
    "satisfied": ("complete", "satisfied"),
    "needs_revision": ("complete", "needs revision"),
    "max_iterations_reached": ("error", "not met after the last allowed revision"),
    "failed": ("error", "the rubric does not apply to this answer"),
    "interrupted": ("error", "interrupted"),
}


class LayoutLike(Protocol):
    tasks: dict[str, Task]
    texts: dict[str, AgentText]
    outbox: list[Piece]
    has_text: bool

    def _release(self, mid: str, text: AgentText, sources: list[Any]) -> list[Any]: ...

    def _add(self, task: Task, sources: list[Any]) -> None: ...

    def _set(self, task: Task, status: str, output: str | None = None, sources: list[Any] | None = None) -> None: ...


def _time(event: Any) -> datetime | None:
    return parse_time(getattr(event, "processed_at", None))


@dataclass
class OutcomeView:
    """One turn's view of its ticket's outcome round (inactive when none applies)."""

    active: bool = False  # a round of ours (its record) is in force for this turn
    name: str | None = None
    hold: bool = False  # customer_facing: drafts wait for a satisfied verdict
    defined_at: datetime | None = None
    verdict: str | None = None
    verdict_at: datetime | None = None
    idle_at: datetime | None = None
    checks: int = 0
    # Drafts held back: message id, time, and the events to report once (if ever) it is shown. A
    # held draft is not reported as shown, so a takeover before the verdict replays it.
    held: list[tuple[str, datetime | None, list[Any]]] = field(default_factory=list)

    @classmethod
    def of(cls, record: OutcomeRound | None) -> OutcomeView:
        if record is None:
            return cls()
        return cls(
            active=True, name=record.name, hold=record.customer_facing,
            defined_at=parse_time(record.defined_at), verdict=record.result if record.terminal else None,
            verdict_at=parse_time(record.verdict_at), idle_at=parse_time(record.idle_at),
            checks=record.iterations,
        )

    # -- which messages are drafts --------------------------------------------------------

    def is_draft(self, at: datetime | None) -> bool:
        if not self.active:
            return False
        if at is None:
            return self.drafting_now()
        if self.defined_at is not None and at < self.defined_at:
            return False
        if self.idle_at is not None and at > self.idle_at:
            return False
        return not (self.verdict == "satisfied" and self.verdict_at is not None and at > self.verdict_at)

    def drafting_now(self) -> bool:
        """Whether what the agent writes now is a draft (live previews carry no time)."""
        return self.active and self.idle_at is None and self.verdict != "satisfied"

    def holds_preview(self) -> bool:
        return self.hold and self.drafting_now()

    # -- events ---------------------------------------------------------------------------

    def message(self, layout: LayoutLike, event: Any, sources: list[Any]) -> list[Any] | None:
        """An `agent.message`: held back (returns [], nothing shown), or None to show it."""
        at = _time(event)
        if not self.is_draft(at):
            return None
        if self.hold:
            self.held.append((str(event.id), at, sources))
            return []  # the requester does not see it unless it is accepted
        self.label(layout, str(event.id))
        return None

    def label(self, layout: LayoutLike, mid: str) -> None:
        """Put the draft label before a message's first text (once, also across a takeover)."""
        if self.hold or not self.drafting_now() or layout.texts.get(mid, AgentText()).shown:
            return
        key = f"{mid}{LABEL_SUFFIX}"
        text = layout.texts.setdefault(key, AgentText())
        if text.shown:
            return
        text.blocks, text.final = [DRAFT_LABEL], True
        layout._release(key, text, [])

    def apply(self, layout: LayoutLike, event: Any, sources: list[Any]) -> list[Any]:
        etype = str(getattr(event, "type", ""))
        if etype == "user.define_outcome":
            # Ours only with a round's record (written before it was sent); any other is shown
            # as a check when graded, but does not make the answers drafts.
            if self.active:
                self.defined_at = _time(event)
                self.verdict = self.verdict_at = self.idle_at = None
            return sources
        task_id = f"outcome-{getattr(event, 'outcome_id', '')}-{getattr(event, 'iteration', 0)}"
        if etype == "span.outcome_evaluation_start":
            if task_id not in layout.tasks:
                layout._add(Task(task_id, self.title(), "in_progress", "check"), sources)
                return []
            return sources
        if etype != "span.outcome_evaluation_end":
            return sources
        result = str(getattr(event, "result", ""))
        status, words = RESULTS.get(result, ("complete", result.replace("_", " ")))
        # The grader's words are shown as they are, but never as a mention (secrets: the client).
        explanation = neutralise_mentions(" ".join(str(getattr(event, "explanation", "") or "").split()))
        output = words if self.hold or not explanation or result == "satisfied" else f"{words}: {explanation}"
        task = layout.tasks.get(task_id)
        if task is None:
            task = Task(task_id, self.title(), "in_progress", "check")
            layout.tasks[task_id] = task
        self.checks = max(self.checks, int(getattr(event, "iteration", 0) or 0) + 1)
        if result != "needs_revision":
            self.verdict, self.verdict_at = result, _time(event)
        output = output[:500]
        shown: list[Any] = []
        if task.status == status and task.output == output:
            shown = list(sources)  # a replay of what Slack shows (a takeover's records)
        else:
            layout._set(task, status, output, sources)
        if result == "satisfied" and self.hold and self.held:
            mid, _, held_sources = self.held[-1]  # the answer the grader accepted: the latest draft
            self.held.clear()
            text = layout.texts.get(mid)
            if text is not None and text.final:
                # All of it, or (after a takeover that found part of it in Slack) the rest.
                shown += layout._release(mid, text, held_sources)
        return shown

    def ended(self, event: Any) -> None:
        """A `session.status_idle`: unless it waits on a decision, the round's turn is over (with a
        verdict or without one: then its drafts stay drafts)."""
        reason = getattr(getattr(event, "stop_reason", None), "type", None)
        if self.active and self.idle_at is None and reason not in ("requires_action", "budget_reached"):
            self.idle_at = _time(event)

    def title(self) -> str:
        return f"Checking the answer against the {self.name} rubric" if self.name else "Checking the answer"

    # -- the turn's last line --------------------------------------------------------------

    def closing_note(self) -> str | None:
        """What the turn's last message says about the check (None: nothing to say)."""
        if not self.active or self.hold or self.verdict is None:
            return None
        checks = f"{self.checks} check{'s' if self.checks != 1 else ''}"
        if self.verdict == "satisfied":
            return f":white_check_mark: The grader accepted this answer against the {self.name} rubric ({checks})."
        if self.verdict in UNMET:
            return (f":warning: Draft, not a final answer: the grader did not accept it against the {self.name} "
                    f"rubric ({RESULTS[self.verdict][1]}). The ticket went to a person.")
        return None


async def outcome_view(redis: aioredis.Redis | None, ticket_id: str) -> OutcomeView:
    """The view a new turn starts from: the ticket's current round, if any."""
    if redis is None:
        return OutcomeView()
    try:
        return OutcomeView.of(await load(redis, ticket_id))
    except RedisError:
        # The turn is still shown (a worker cannot hold a lease without Redis, so no round of
        # ours can be running unseen); only the checks are missing from its timeline.
        log.warning("outcome round not read; the turn shows without its checks", extra={"ticket": ticket_id})
        return OutcomeView()
