"""What the agent said against what Slack finally shows, character by character; its tool calls
against the task cards Slack shows. Pure functions, no I/O: the instrument the harness reads.

Text. Whitespace is not compared (a message split at Slack's limits may turn a space into a
message boundary); every other character is. The shown text is aligned with the agent's text
(longest common blocks, in order): agent characters outside the alignment are candidates for
*lost*; shown characters outside it are either copies of agent text (a run of at least
`MIN_MATCH` characters found in the agent's text) or *foreign* (the bot's own words: notes,
labels, footers; reported, never a failure). A copy of agent text that was not otherwise shown
is *moved* (shown once, out of order); one that was is *doubled*. Agent characters shown nowhere
are *lost*. The harness writes the agent's text with words that carry digits (`ka17 bo18`), so
no run of `MIN_MATCH` characters of it is ever one of the bot's English words.

Tasks. Each tool call is found in Slack by its tool-use id (a stream's `task_update` chunks) or
by a marker its input carries (which the task's title shows: a timeline section in blocks). A
call shown in more than one place, or a task line that names no call ("An earlier tool call"),
is doubled; a call shown nowhere is missing; a task whose last status in its message is
`pending` or `in_progress` is stuck; calls shown in another order than the agent made them count
as order violations.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

MIN_MATCH = 4
OPEN_STATUSES = frozenset({"pending", "in_progress"})
_SPACE = re.compile(r"\s+")


def squeeze(text: str) -> str:
    """The characters that are compared: everything but whitespace."""
    return _SPACE.sub("", text)


@dataclass
class TextFigures:
    expected: int = 0
    shown: int = 0
    lost: int = 0
    doubled: int = 0
    moved: int = 0
    foreign: int = 0
    lost_samples: list[str] = field(default_factory=list)
    doubled_samples: list[str] = field(default_factory=list)


def _cover(chunk: str, agent: str, offset: int = 0) -> Iterator[tuple[int, int, int]]:
    """Pieces of `chunk` that are agent text: (position in chunk, position in agent, size),
    longest first; what is left over is foreign."""
    if len(chunk) < MIN_MATCH:
        return
    m = SequenceMatcher(None, chunk, agent, autojunk=False).find_longest_match(0, len(chunk), 0, len(agent))
    if m.size < MIN_MATCH:
        return
    yield from _cover(chunk[: m.a], agent, offset)
    yield offset + m.a, m.b, m.size
    yield from _cover(chunk[m.a + m.size :], agent, offset + m.a + m.size)


def _runs(flags: Sequence[bool], text: str) -> list[str]:
    """The runs of `text` where `flags` is true."""
    out: list[str] = []
    start: int | None = None
    for i, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            out.append(text[start:i])
            start = None
    return out


def compare_text(agent: str, shown: str, samples: int = 3) -> TextFigures:
    """How `shown` (everything the bot's messages show, in thread order) renders `agent`
    (every `agent.message` text, in order)."""
    a, s = squeeze(agent), squeeze(shown)
    counts = [0] * len(a)
    extra: list[str] = []
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, a, s, autojunk=False).get_opcodes():
        if tag == "equal":
            for i in range(i1, i2):
                counts[i] += 1
        elif tag in ("insert", "replace"):
            extra.append(s[j1:j2])
    figures = TextFigures(expected=len(a), shown=len(s))
    covered = 0
    for chunk in extra:
        for _, at, size in _cover(chunk, a):
            covered += size
            if any(counts[i] == 0 for i in range(at, at + size)):
                figures.moved += 1
            elif len(figures.doubled_samples) < samples:
                figures.doubled_samples.append(a[at : at + size][:80])
            for i in range(at, at + size):
                counts[i] += 1
    figures.foreign = sum(len(c) for c in extra) - covered
    figures.lost = sum(1 for c in counts if c == 0)
    figures.doubled = sum(c - 1 for c in counts if c > 1)
    figures.lost_samples = [run[:80] for run in _runs([c == 0 for c in counts], a)[:samples]]
    return figures


# ---- tasks ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A tool call the agent made: its tool-use event id and the marker its input carries."""

    id: str
    marker: str


@dataclass(frozen=True)
class ShownTask:
    """A task card in Slack: `message` is the message's place in the thread, `id` the
    `task_update` chunk id (None for a line in a blocks section), `status` its last status."""

    message: int
    id: str | None
    title: str
    status: str


@dataclass
class TaskFigures:
    calls: int = 0
    shown: int = 0
    doubled: int = 0
    missing: int = 0
    stuck: int = 0
    unattributed: int = 0
    out_of_order: int = 0


def _attribute(task: ShownTask, calls: Sequence[ToolCall]) -> ToolCall | None:
    for call in calls:
        if task.id is not None and task.id == call.id:
            return call
    for call in calls:
        if call.marker and call.marker in task.title:
            return call
    return None


def _longest_increasing(values: Sequence[int]) -> int:
    tails: list[int] = []
    for v in values:
        lo, hi = 0, len(tails)
        while lo < hi:
            mid = (lo + hi) // 2
            if tails[mid] < v:
                lo = mid + 1
            else:
                hi = mid
        if lo == len(tails):
            tails.append(v)
        else:
            tails[lo] = v
    return len(tails)


def compare_tasks(calls: Sequence[ToolCall], shown: Sequence[ShownTask]) -> TaskFigures:
    """How the task cards in `shown` (thread order) render the agent's `calls` (in order)."""
    figures = TaskFigures(calls=len(calls), shown=len(shown))
    places: dict[str, list[int]] = {c.id: [] for c in calls}
    first_seen: list[str] = []
    for task in shown:
        call = _attribute(task, calls)
        if call is None:
            figures.unattributed += 1
            if task.status in OPEN_STATUSES:
                figures.stuck += 1
            continue
        places[call.id].append(task.message)
        if call.id not in first_seen:
            first_seen.append(call.id)
        if task.status in OPEN_STATUSES:
            figures.stuck += 1
    figures.doubled = sum(max(0, len(p) - 1) for p in places.values()) + figures.unattributed
    figures.missing = sum(1 for p in places.values() if not p)
    order = {c.id: i for i, c in enumerate(calls)}
    ranks = [order[i] for i in first_seen]
    figures.out_of_order = len(ranks) - _longest_increasing(ranks)
    return figures
