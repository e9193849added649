"""What the timeline shows of a specialist, from SDK-shaped events alone (the layout is pure).

Events are built with the SDK's own models (`sample_event` + `validate_with_union`), so the
fields read are the SDK's."""

from __future__ import annotations

from itertools import count
from typing import Any

from app.render.layout import Layout
from app.render.threads import STOPPED, WAITING, task_id
from app.sandbox.agents.events import sample_event, validate_with_union

THREAD, NAME = "sthr_billing", "billing@support-agent-internal"
ids = count(1)


def ev(kind: str, **fields: Any) -> Any:
    return validate_with_union(sample_event(kind, id=f"sevt_{next(ids)}", **fields))


def text(value: str) -> list[dict[str, str]]:
    return [{"type": "text", "text": value}]


def started(layout: Layout, question: str = "Is invoice 42 paid?") -> None:
    layout.apply(ev("session.thread_created", session_thread_id=THREAD, agent_name=NAME))
    layout.apply(ev("agent.thread_message_sent", to_session_thread_id=THREAD, to_agent_name=NAME,
                    content=text(question)))
    layout.apply(ev("session.thread_status_running", session_thread_id=THREAD, agent_name=NAME))


def test_a_specialist_is_asked_waits_for_approval_and_answers() -> None:
    layout = Layout(4000)
    started(layout)
    task = layout.tasks[task_id(THREAD)]
    assert (task.title, task.status, task.kind) == ("Asked billing: Is invoice 42 paid?", "in_progress", "thread")
    use = ev("agent.mcp_tool_use", name="search_tickets", mcp_server_name="ticket_history",
             input={"query": "invoice 42"}, evaluated_permission="ask", session_thread_id=THREAD)
    layout.apply(use)
    assert layout.tasks[use.id].title.startswith("billing: ticket_history · search tickets")
    layout.apply(ev("session.thread_status_idle", session_thread_id=THREAD, agent_name=NAME,
                    stop_reason={"type": "requires_action", "event_ids": [use.id]}))
    assert (task.status, task.output) == ("pending", WAITING)
    # The same event handed twice (the thread's own copy) is not relabelled.
    layout.apply(use)
    assert layout.tasks[use.id].title.count("billing:") == 1
    layout.apply(ev("session.thread_status_running", session_thread_id=THREAD, agent_name=NAME))
    assert (task.status, task.output) == ("in_progress", None)
    layout.apply(ev("agent.thread_message_received", from_session_thread_id=THREAD, from_agent_name=NAME,
                    content=text("Yes, paid on 3 May.")))
    layout.apply(ev("session.thread_status_idle", session_thread_id=THREAD, agent_name=NAME,
                    stop_reason={"type": "end_turn"}))
    assert (task.status, task.output) == ("complete", "Yes, paid on 3 May.")
    # Each change went to the outbox for Slack: the task, then its updates.
    assert [p.task_id for p in layout.outbox].count(task.id) >= 4


def test_stopped_failed_and_terminated_threads_say_so() -> None:
    stopped = Layout(4000)
    started(stopped)
    stopped.apply(ev("session.thread_status_idle", session_thread_id=THREAD, agent_name=NAME,
                     stop_reason={"type": "end_turn"}))
    assert (stopped.tasks[task_id(THREAD)].status, stopped.tasks[task_id(THREAD)].output) == ("error", STOPPED)
    failed = Layout(4000)
    started(failed)
    failed.apply(ev("session.thread_status_idle", session_thread_id=THREAD, agent_name=NAME,
                    stop_reason={"type": "retries_exhausted"}))
    assert failed.tasks[task_id(THREAD)].output == "Stopped: retries_exhausted"
    ended = Layout(4000)
    started(ended)
    ended.apply(ev("session.thread_status_terminated", session_thread_id=THREAD, agent_name=NAME))
    assert ended.tasks[task_id(THREAD)].status == "error"


def test_messages_with_the_primary_and_unknown_threads_are_not_tasks() -> None:
    layout = Layout(4000)
    # On a subagent's own stream: the coordinator's message to it, its reply to the coordinator.
    layout.apply(ev("agent.thread_message_received", from_session_thread_id="sthr_primary", content=text("hi")))
    layout.apply(ev("agent.thread_message_sent", to_session_thread_id="sthr_primary", content=text("done")))
    assert layout.tasks == {}
    # A tool use of a thread this turn never saw start (an adopted turn) keeps "(subagent)".
    use = ev("agent.tool_use", name="web_search", input={"query": "x"}, session_thread_id="sthr_other")
    layout.apply(use)
    assert layout.tasks[use.id].title.endswith("(subagent)")
    # Mentions in a specialist's name or question never ping anyone.
    started(layout, question="<!channel> look")
    assert "<!channel>" not in layout.tasks[task_id(THREAD)].title
