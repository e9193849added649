"""The pieces a turn's content is made of: tasks, answer texts, what waits to be shown, payloads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.render import blocks as bk


@dataclass
class Task:
    id: str
    title: str
    status: str
    kind: str  # tool | custom | note
    details: str | None = None
    output: str | None = None
    args: Any = None

    def view(self) -> bk.TaskView:
        return bk.TaskView(self.id, self.title, self.status, self.output)

    def chunk(self, with_details: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "task_update", "id": self.id, "title": self.title, "status": self.status}
        if self.details and with_details:
            out["details"] = self.details
        if self.output:
            out["output"] = self.output
        return out


@dataclass
class Piece:
    """Something waiting to be shown: answer text (`mid` None for a separator) or a task."""

    kind: str  # text | task
    text: str = ""
    mid: str | None = None
    offset: int = 0
    task_id: str | None = None
    sources: list[Any] = field(default_factory=list)


@dataclass
class Part:
    """Answer text shown in a Slack message: `text` is `shown[mid][offset:offset+len]`."""

    mid: str | None
    offset: int
    text: str


@dataclass
class AgentText:
    """One `agent.message`: its raw text so far, what of it was released, its final form.

    `held`: Slack already shows `shown` (seeded from records); live previews are ignored until
    the buffered event says how it goes on.
    """

    blocks: list[str] = field(default_factory=list)
    final: bool = False
    shown: str = ""
    canon: str | None = None
    diverged: bool = False
    held: bool = False


@dataclass
class Batch:
    chunks: list[dict[str, Any]] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    consumed: int = 0
    remainder: Piece | None = None
    sources: list[Any] = field(default_factory=list)
    full: bool = False
    plan: bool = False
    # Tasks shown in an earlier, closed message: updated there, never repeated here.
    moved: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)
