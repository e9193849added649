"""The figures of a run: per ticket from `compare`, summed, as one JSON object."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.chaos.compare import TaskFigures, TextFigures, compare_tasks, compare_text
from app.chaos.views import agent_record, slack_record

if TYPE_CHECKING:
    from app.chaos.faults import FaultPoint
    from app.chaos.tickets import Ticket

# Any of these above 0 is a broken guarantee: the command exits 1.
MUST_BE_ZERO = (
    "chars_lost", "chars_doubled", "tasks_doubled", "tasks_stuck", "tasks_missing", "order_violations",
    "approvals_unshown", "unfinished",
)


@dataclass
class TicketFigures:
    number: int
    hit: list[str]
    finished: bool
    approvals_unshown: int
    text: TextFigures
    tasks: TaskFigures
    streams_open: int


def ticket_figures(ticket: Ticket, events: list[dict[str, Any]], thread: list[dict[str, Any]]) -> TicketFigures:
    agent = agent_record(events)
    shown = slack_record(thread, ticket.ts)
    text = compare_text(agent.text, "\n".join(m.text for m in shown))
    tasks = compare_tasks(agent.calls, [t for m in shown for t in m.tasks])
    return TicketFigures(
        ticket.plan.number, list(ticket.hit), ticket.done, ticket.approvals_unshown, text, tasks,
        sum(1 for m in shown if m.streaming),
    )


@dataclass
class Figures:
    mode: str
    seed: int
    tickets: list[TicketFigures] = field(default_factory=list)
    phases: Counter[str] = field(default_factory=Counter)
    kill_points: int = 0
    wall_s: float = 0.0

    def add(self, ticket: TicketFigures) -> None:
        self.tickets.append(ticket)

    def fault_points(self, points: list[FaultPoint]) -> None:
        self.kill_points = len(points)
        self.phases = Counter(f"{p.kind}:{p.phase}" for p in points)

    def as_dict(self) -> dict[str, Any]:
        t = self.tickets

        def total(get: Any) -> int:
            return sum(int(get(x)) for x in t)

        doubled = [x for x in t if x.text.doubled]
        worst = max(t, key=lambda x: x.text.doubled + x.text.lost, default=None)
        examples: dict[str, Any] = {}
        if worst is not None and (worst.text.doubled or worst.text.lost):
            examples = {
                "ticket": worst.number, "hit": worst.hit,
                "doubled": worst.text.doubled_samples[:2], "lost": worst.text.lost_samples[:2],
            }
        per_ticket = sorted(x.text.doubled for x in doubled)
        return {
            "mode": self.mode,
            "seed": self.seed,
            "kill_points": self.kill_points,
            "phases": dict(sorted(self.phases.items())),
            "tickets": len(t),
            "tickets_hit": sum(1 for x in t if x.hit),
            "chars_expected": total(lambda x: x.text.expected),
            "chars_lost": total(lambda x: x.text.lost),
            "chars_doubled": total(lambda x: x.text.doubled),
            "tickets_with_loss": sum(1 for x in t if x.text.lost),
            "tickets_with_doubles": len(doubled),
            "doubled_per_ticket_median": per_ticket[len(per_ticket) // 2] if per_ticket else 0,
            "doubled_per_ticket_max": per_ticket[-1] if per_ticket else 0,
            "tasks": total(lambda x: x.tasks.calls),
            "tasks_doubled": total(lambda x: x.tasks.doubled),
            "tasks_stuck": total(lambda x: x.tasks.stuck),
            "tasks_missing": total(lambda x: x.tasks.missing),
            "order_violations": total(lambda x: x.text.moved + x.tasks.out_of_order),
            "approvals_unshown": total(lambda x: x.approvals_unshown),
            "unfinished": sum(1 for x in t if not x.finished),
            "chars_foreign": total(lambda x: x.text.foreign),
            "streams_open": total(lambda x: x.streams_open),
            "example": examples,
            "wall_s": self.wall_s,
        }


def broken(figures: dict[str, Any]) -> list[str]:
    """The names of the figures that break a guarantee."""
    return [name for name in MUST_BE_ZERO if figures.get(name)]
