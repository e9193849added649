"""Specialists in a turn's timeline: one task per subagent thread. Pure, no I/O.

The session stream (the primary thread) shows a subagent's start and end and its blocking
requests, not its full activity (docs managed-agents/session-threads). From those events:

- `session.thread_created`: a task "<specialist> is on it", in progress;
- `agent.thread_message_sent` to it: what the coordinator asked, as the task's title ("Asked
  billing: ..."; a title, since Slack keeps a task's details from its first chunk only);
- `session.thread_status_*`: its status (idle `requires_action`: waiting for approval);
- `agent.thread_message_received` from it: its answer, as the task's output;
- a tool use cross-posted with `session_thread_id` (a subagent's approval request) or one of the
  thread's own tool calls that the follower lists from the thread when it goes idle
  (`app/sessions/thread_events.py`): titled with the specialist's name.

A thread's task keeps the specialist's name in its `args` (`{"name": ...}`), so a task carried
into the next turn (an approval) still names its tool calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.config.specialists import display_name
from app.render.base import message_text
from app.render.content import Task
from app.render.slack_text import neutralise_mentions, truncate

if TYPE_CHECKING:
    from app.render.layout import Layout

THREAD_EVENTS = frozenset({
    "session.thread_created", "agent.thread_message_sent", "agent.thread_message_received",
    "session.thread_status_running", "session.thread_status_idle", "session.thread_status_rescheduled",
    "session.thread_status_terminated",
})
OUTPUT_LIMIT, TITLE_LIMIT = 240, 150
WAITING, STOPPED = "Waiting for approval", "Stopped before it answered"
SUBAGENT_SUFFIX = " (subagent)"  # app/render/describe.py's mark for a tool use of another thread


def task_id(thread_id: str) -> str:
    return f"thread-{thread_id}"


def name_of(layout: Layout, thread_id: str) -> str | None:
    task = layout.tasks.get(task_id(thread_id))
    if task is None or not isinstance(task.args, dict):
        return None
    name = task.args.get("name")
    return str(name) if name else None


def _text(event: Any, limit: int) -> str:
    return neutralise_mentions(truncate(" ".join(message_text(event).split()), limit))


def apply(layout: Layout, event: Any, sources: list[Any]) -> None:
    """Fold one thread event into the layout's tasks."""
    etype = str(getattr(event, "type", ""))
    if etype == "agent.thread_message_sent":
        tid, name = str(getattr(event, "to_session_thread_id", "")), getattr(event, "to_agent_name", None)
    elif etype == "agent.thread_message_received":
        tid, name = str(getattr(event, "from_session_thread_id", "")), getattr(event, "from_agent_name", None)
    else:
        tid, name = str(getattr(event, "session_thread_id", "")), getattr(event, "agent_name", None)
    known = name_of(layout, tid)
    if not tid or (name is None and known is None):
        return  # a message to or from the primary agent, seen on a subagent's own stream
    shown = known or display_name(name)
    task = layout.tasks.get(task_id(tid))
    if task is None:
        title = neutralise_mentions(truncate(f"{shown} is on it", TITLE_LIMIT))
        task = Task(task_id(tid), title, "in_progress", "thread", args={"name": shown})
        layout._add(task, sources)
        if etype == "session.thread_created":
            return
    status, title, output = task.status, task.title, task.output
    if etype == "agent.thread_message_sent":
        title = neutralise_mentions(truncate(f"Asked {shown}: {_text(event, TITLE_LIMIT)}", TITLE_LIMIT))
        status = "in_progress"
        output = None if task.output == WAITING else task.output
    elif etype == "agent.thread_message_received":
        output = _text(event, OUTPUT_LIMIT)
        status = "complete"
    elif etype in ("session.thread_status_running", "session.thread_status_rescheduled"):
        status = "in_progress"
        output = None if task.output == WAITING else task.output
    elif etype == "session.thread_status_idle":
        reason = getattr(getattr(event, "stop_reason", None), "type", None)
        if reason == "requires_action":
            status, output = "pending", WAITING
        elif reason == "end_turn":
            # An interrupted thread goes idle with end_turn too, without answering
            # (docs session-threads): no answer yet means it stopped.
            if task.output in (None, WAITING):
                status, output = "error", STOPPED
            else:
                status = "complete"
        else:
            status, output = "error", f"Stopped: {reason or 'unknown reason'}"
    elif etype == "session.thread_status_terminated":
        status, output = "error", task.output or "The specialist's thread ended"
    if (status, title, output) != (task.status, task.title, task.output):
        task.title, task.output = title, output
        layout._set(task, status, output, sources)


def label(layout: Layout, task: Task | None, event: Any, thread_id: str | None) -> None:
    """Name the specialist in the title of a tool call made in its thread."""
    if task is None or not thread_id:
        return
    name = name_of(layout, thread_id)
    if name is None or task.title.startswith(f"{name}: "):
        return  # unknown thread (an adopted turn): describe.py's "(subagent)" says enough
    title = task.title.removesuffix(SUBAGENT_SUFFIX)
    task.title = neutralise_mentions(truncate(f"{name}: {title}", TITLE_LIMIT))
