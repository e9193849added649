"""What a turn's Slack messages should show, computed from the session's events. No I/O.

A `Layout` folds a turn's agent events (and live previews) into the wanted content: the
answer text per `agent.message`, one task per tool call with its status, notes for retries and
errors, the approvals waited on. What is not in Slack yet waits in `outbox` as pieces, in the
order the agent produced it; `take` cuts the next Slack payload from the front of the outbox
for a message that already shows `so_far`, within Slack's per-message limits. The delivery
(`app/render/delivery.py`) sends that payload and then calls `commit`.

`seed` tells a layout what Slack already shows (from the delivery's records, after a takeover
or a reconnect), so that replayed events add only what is missing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.render import blocks as bk
from app.render import threads
from app.render.base import message_text
from app.render.content import AgentText, Batch, Part, Piece, Task
from app.render.describe import STOP_NOTES, error_title, input_preview, result_output, stop_note, tool_title
from app.render.outcome_tasks import OUTCOME_EVENTS, OutcomeView
from app.render.slack_text import (
    cut_point,
    neutralise_mentions,
    paragraph_break,
    release_point,
    truncate,
)

__all__ = ["OPEN", "PLACEHOLDER", "SHOWN", "TOOL_RESULTS", "TOOL_USES", "AgentText", "Batch", "Layout", "Part",
           "Piece", "Task"]

TOOL_USES = frozenset({"agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"})
TOOL_RESULTS = {"agent.tool_result": "tool_use_id", "agent.mcp_tool_result": "mcp_tool_use_id"}
# Events that change what a turn shows; every other type is deliberately not shown.
SHOWN = frozenset({
    "session.status_running", "agent.thinking", "agent.message", "session.status_rescheduled",
    "session.error", "span.model_request_end", *TOOL_USES, *TOOL_RESULTS, *OUTCOME_EVENTS,
    *threads.THREAD_EVENTS,  # specialists (app/render/threads.py)
})
MAX_CHUNKS = 40
SPLIT_WINDOW = 1_500
PLACEHOLDER = "Working on it…"
OPEN = ("pending", "in_progress")


class Layout:
    """One turn's wanted content, and what of it is still to be shown."""

    def __init__(self, cap: int, *, plan_title: str | None = None) -> None:
        self.cap = cap
        self.plan_title = plan_title  # set: tasks are shown as a plan with this title
        self.outbox: list[Piece] = []
        self.tasks: dict[str, Task] = {}
        self.texts: dict[str, AgentText] = {}
        self.approvals: list[str] = []
        self.has_text = False
        self.diverged = 0  # agent messages whose live text went astray (rewritten at the end)
        self.outcome = OutcomeView()  # the grader's checks and drafts (app/render/outcome_tasks.py)

    # ---- events in --------------------------------------------------------------------------

    def apply(self, event: Any, *, track: bool = False) -> list[Any]:
        """Fold one buffered event in. Returns the events already fully shown (to report now).

        With `track`, each piece remembers the event it came from (reported once it is shown).
        """
        etype = str(getattr(event, "type", ""))
        sources = [event] if track else []
        if etype == "session.status_running":
            for task in self.tasks.values():
                if task.status == "pending" or (task.kind == "note" and task.status == "in_progress"):
                    self._set(task, "in_progress" if task.kind != "note" else "complete")
        elif etype == "agent.thinking":
            self._moved_on()
        elif etype == "agent.message":
            self._moved_on()
            text = self.texts.setdefault(event.id, AgentText())
            text.blocks = [message_text(event)]
            text.final = True
            held = self.outcome.message(self, event, sources)  # a draft held back, or labelled
            if held is not None:
                return held
            return self._release(event.id, text, sources)
        elif etype in TOOL_USES:
            self._moved_on()
            self._tool_use(event, sources)
            threads.label(self, self.tasks.get(event.id), event, getattr(event, "session_thread_id", None))
        elif etype in threads.THREAD_EVENTS:
            threads.apply(self, event, sources)
        elif etype in TOOL_RESULTS:
            if not self._tool_result(event, str(getattr(event, TOOL_RESULTS[etype], "")), sources):
                return sources
        elif etype in OUTCOME_EVENTS:
            return self.outcome.apply(self, event, sources)
        elif etype == "span.model_request_end":
            self._request_ended(event)
        elif etype == "session.status_rescheduled":
            note = Task(f"note-{event.id}", "A temporary problem: the agent is retrying", "in_progress", "note")
            self._add(note, sources)
        elif etype == "session.error":
            title, status = error_title(event.error)
            self._add(Task(f"note-{event.id}", title, status, "note"), sources)
        elif etype == "session.status_idle":
            reason = getattr(getattr(event, "stop_reason", None), "type", None)
            if reason == "requires_action":
                self.approvals = [str(e) for e in getattr(event.stop_reason, "event_ids", None) or []]
        return []

    def preview_started(self, mid: str) -> None:
        self.texts.setdefault(mid, AgentText())

    def apply_delta(self, event: Any, *, track: bool = False) -> bool:
        """A live `event_delta`. True if it changed what is to be shown."""
        text = self.texts.get(event.event_id)
        content = event.delta.content
        if text is None or text.final or text.held or getattr(content, "type", None) != "text":
            return False
        if self.outcome.holds_preview():
            return False  # a draft the requester must not see before the grader accepts it
        index = event.delta.index or 0
        if index == len(text.blocks):
            text.blocks.append(content.text)
        elif index < len(text.blocks):
            text.blocks[index] += content.text
        else:
            return False  # a gap: wait for the buffered message
        self.outcome.label(self, event.event_id)
        self._release(event.event_id, text, [event] if track else [])
        return True

    def settle(self, reason: str | None) -> dict[str, Task]:
        """The turn ended with `reason`: close open tasks. Returns the tasks that carry over
        to the next turn (the ones an approval is waited on)."""
        if reason == "shutdown":
            return {}  # the turn goes on elsewhere: its tasks are not over
        if reason == "requires_action":
            return {t.id: t for t in self.tasks.values() if t.status in OPEN}
        for task in self.tasks.values():
            if task.status not in OPEN:
                continue
            if reason == "end_turn" and task.kind != "tool":
                self._set(task, "complete")
            else:
                self._set(task, "error", "Stopped before it finished")
        return {}

    def seed(self, texts: dict[str, str], tasks: list[Task]) -> None:
        """Slack already shows these answer prefixes and tasks (a takeover's records)."""
        for mid, shown in texts.items():
            text = self.texts.setdefault(mid, AgentText())
            if len(shown) > len(text.shown):
                text.shown, text.held = shown, True
        for task in tasks:
            self.tasks.setdefault(task.id, task)
        self.has_text = self.has_text or any(texts.values())

    # ---- payloads out -----------------------------------------------------------------------

    def take(
        self,
        so_far: str,
        in_msg: set[str],
        *,
        full: bool = False,
        has_plan: bool = False,
        elsewhere: frozenset[str] = frozenset(),
    ) -> Batch:
        """The next payload for a message showing `so_far` and tasks `in_msg` (a new one: "").

        A task in `elsewhere` (shown in an earlier message) is not repeated: it is listed in
        `moved`, for that message to be updated in place.
        """
        batch = Batch()
        if full:
            return batch
        seen: set[str] = set()
        buf: list[str] = []

        def flush_text() -> None:
            if buf:
                batch.chunks.append({"type": "markdown_text", "text": "".join(buf)})
                buf.clear()

        for i, piece in enumerate(self.outbox):
            if len(batch.chunks) >= MAX_CHUNKS:
                break
            if piece.kind == "text":
                if piece.mid is None and not so_far:
                    batch.consumed = i + 1  # no separator at the top of a message
                    continue
                cut = self._split(so_far, piece)
                if cut is not None:
                    head, rest = piece.text[:cut], piece.text[cut:]
                    if head:
                        buf.append(head)
                        batch.parts.append(Part(piece.mid, piece.offset, head))
                    if rest:
                        batch.remainder = replace(piece, text=rest, offset=piece.offset + len(head))
                    else:
                        batch.sources.extend(piece.sources)
                    batch.consumed = i + 1
                    batch.full = True
                    break
                buf.append(piece.text)
                batch.parts.append(Part(piece.mid, piece.offset, piece.text))
                so_far += piece.text
            else:
                flush_text()
                task = self.tasks.get(piece.task_id or "")
                if task is not None and task.id in elsewhere and task.id not in in_msg:
                    if task.id not in batch.moved:
                        batch.moved.append(task.id)
                elif task is not None and task.id not in seen:
                    seen.add(task.id)
                    batch.chunks.append(task.chunk(with_details=task.id not in in_msg))
                    batch.task_ids.append(task.id)
            batch.sources.extend(piece.sources)
            batch.consumed = i + 1
        flush_text()
        if self.plan_title is not None and batch.task_ids and not has_plan:
            title = truncate(neutralise_mentions(self.plan_title or "Working on your request"), 150)
            batch.chunks.insert(0, {"type": "plan_update", "title": title})
            batch.plan = True
        return batch

    def commit(self, batch: Batch) -> None:
        """The batch is in Slack: drop it from the outbox (its cut-off rest stays in front)."""
        self.outbox[: batch.consumed] = [batch.remainder] if batch.remainder else []

    def covers_all(self, batch: Batch) -> bool:
        return batch.consumed == len(self.outbox) and batch.remainder is None and not batch.full

    def views(self, task_ids: list[str]) -> list[bk.TaskView]:
        seen: set[str] = set()
        out = []
        for tid in task_ids:
            if tid in self.tasks and tid not in seen:
                seen.add(tid)
                out.append(self.tasks[tid].view())
        return out

    def final_blocks(
        self,
        ticket_id: str,
        reason: str | None,
        *,
        feedback: bool,
        controls: list[dict[str, Any]],
        footer: str | None,
    ) -> list[dict[str, Any]]:
        """The blocks a turn's last message ends with, for stop reason `reason`."""
        out: list[dict[str, Any]] = []
        if reason == "requires_action":
            waiting = [self.tasks[e] for e in self.approvals if e in self.tasks and self.tasks[e].kind == "tool"]
            for task in waiting[: bk.MAX_APPROVALS]:
                out += bk.approval_blocks(ticket_id, task.id, task.title, input_preview(task.args))
            if len(waiting) > bk.MAX_APPROVALS:
                out.append(bk.context_block(f"…and {len(waiting) - bk.MAX_APPROVALS} more calls waiting."))
            return out
        note = STOP_NOTES.get(reason or "") if reason == "shutdown" else stop_note(reason)
        if note:
            out.append(bk.context_block(note))
        if reason == "shutdown":
            return out
        closing = self.outcome.closing_note()
        if closing:
            out.append(bk.context_block(closing))
        if feedback and self.has_text and reason != "terminated":
            out.append(bk.feedback_block(ticket_id))
        out += controls
        if footer:
            out.append(bk.context_block(footer))
        return out

    def corrected(self, parts: list[Part]) -> list[Part] | None:
        """A message's parts with the buffered text where the live text went astray; None if
        nothing in it diverged. Only the last part of a message keeps the text's whole rest."""
        bad = {mid for mid, t in self.texts.items() if t.diverged and t.canon is not None}
        if not any(p.mid in bad for p in parts):
            return None
        out = []
        for i, part in enumerate(parts):
            if part.mid in bad:
                canon = self.texts[part.mid].canon or ""
                later = any(p.mid == part.mid for p in parts[i + 1 :])
                end = part.offset + len(part.text) if later or not self.texts[part.mid].final else None
                part = Part(part.mid, part.offset, canon[part.offset : end])
            out.append(part)
        # Text taken back entirely leaves no part, and a separator next to it separates nothing.
        kept: list[Part] = []
        for i, part in enumerate(out):
            if not part.text:
                continue
            if part.mid is None and (not kept or not any(p.text for p in out[i + 1 :])):
                continue
            kept.append(part)
        return kept

    # ---- inside -----------------------------------------------------------------------------

    def _release(self, mid: str, text: AgentText, sources: list[Any]) -> list[Any]:
        """Queue whatever of an agent message's text can be shown now (mentions neutralised)."""
        raw = "".join(text.blocks)
        end = len(raw) if text.final else release_point(raw)
        shown = neutralise_mentions(raw[:end])
        if text.final:
            text.canon = shown
            text.held = False
        if shown.startswith(text.shown):
            add = shown[len(text.shown) :]
        elif not text.final:
            return []
        else:
            # The live text went astray (a dropped delta, a reconnect): show the rest, and
            # rewrite the message(s) with the buffered text at the stop.
            text.diverged = True
            self.diverged += 1
            add = shown[len(text.shown) :] if len(shown) > len(text.shown) else ""
        if not add:
            return self._shown_with(mid, sources)
        if not text.shown and self.has_text:
            self.outbox.append(Piece("text", "\n\n"))
        self.outbox.append(Piece("text", add, mid, len(text.shown), sources=sources))
        text.shown += add
        self.has_text = True
        return []

    def _shown_with(self, mid: str, sources: list[Any]) -> list[Any]:
        """A buffered message that adds no text is shown once its pending pieces are (or now)."""
        for piece in reversed(self.outbox):
            if piece.mid == mid:
                piece.sources.extend(sources)
                return []
        return sources

    def _request_ended(self, event: Any) -> None:
        """A model request that failed or was interrupted sends no buffered message: the text
        its preview released is not the answer, and what the retry says replaces it."""
        outcome = getattr(event, "is_error", None)
        if not outcome:
            return
        for text in self.texts.values():
            if not text.final and not text.held and text.shown:
                text.diverged, text.final, text.canon = True, True, ""

    def _add(self, task: Task, sources: list[Any]) -> None:
        self.tasks[task.id] = task
        self.outbox.append(Piece("task", task_id=task.id, sources=sources))

    def _set(self, task: Task, status: str, output: str | None = None, sources: list[Any] | None = None) -> None:
        task.status = status
        if output is not None:
            task.output = output
        self.outbox.append(Piece("task", task_id=task.id, sources=sources or []))

    def _tool_use(self, event: Any, sources: list[Any]) -> None:
        if event.id in self.tasks:
            return
        permission = getattr(event, "evaluated_permission", None)
        task = Task(event.id, tool_title(event), "in_progress", "tool", args=getattr(event, "input", None))
        if event.type == "agent.custom_tool_use":
            task.kind = "custom"
        elif permission == "ask":
            task.status = "pending"
            task.details = "Waiting for approval"
        elif permission == "deny":
            task.status = "error"
            task.output = "Blocked by the permission policy"
        if event.type == "agent.mcp_tool_use":
            task.details = task.details or f"MCP server: {event.mcp_server_name}"
        self._add(task, sources)

    def _tool_result(self, event: Any, use_id: str, sources: list[Any]) -> bool:
        """False if the task already shows this result (a replay after a takeover)."""
        task = self.tasks.get(use_id)
        if task is None:
            task = Task(use_id, "An earlier tool call", "in_progress", "tool")
            self.tasks[use_id] = task
        status = "error" if getattr(event, "is_error", False) else "complete"
        output = result_output(event)
        if task.status == status and task.output == output:
            return False
        self._set(task, status, output, sources)
        return True

    def _moved_on(self) -> None:
        """The agent went on: custom tools it was waiting for have their results."""
        for task in self.tasks.values():
            if task.kind == "custom" and task.status == "in_progress":
                self._set(task, "complete")

    def _split(self, so_far: str, piece: Piece) -> int | None:
        """Where `piece` must be cut to end the message, or None if it fits.

        Within `SPLIT_WINDOW` of the limit the first paragraph break ends the message, so long
        answers split between paragraphs even though they arrive a few words at a time.
        """
        total = len(so_far) + len(piece.text)
        soft = self.cap - min(SPLIT_WINDOW, self.cap // 4)
        if total <= soft:
            return None
        combined = so_far + piece.text
        if piece.mid is not None:
            brk = paragraph_break(combined, max(len(so_far), soft), min(total, self.cap))
            if brk is not None:
                return brk - len(so_far)
        if total <= self.cap:
            return None
        return cut_point(combined, self.cap, floor=max(len(so_far), self.cap // 2)) - len(so_far)
