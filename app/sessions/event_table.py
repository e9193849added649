"""Every event type of the installed SDK's stream union, and what the app does with it.

`tests/test_event_union.py` compares this table with `typing.get_args` of
`BetaManagedAgentsStreamSessionEvents`, so an SDK upgrade that adds a type fails until someone
decides here whether the app handles it or ignores it, and why (issue 15). The Managed Agents
emulator can produce every one of them (`app.sandbox.agents.events`, scenario `event` steps);
`tests/test_contract_agents.py` checks that, and `tests/test_contract_app.py` runs every ignored
type through the app in the middle of a turn. The follower hands every event but the `user.*`
echoes to the renderer, which shows what it knows and passes over the rest; a type the SDK
does not know yet (a newer API) arrives as a lenient model and is passed over the same way.
"""

from __future__ import annotations

# Shown or acted on: follower (`app.sessions.follower`) and renderer (`app.render.stream`).
HANDLED: dict[str, str] = {
    "agent.message": "the answer (renderer)",
    "agent.thinking": "the thinking status (renderer)",
    "agent.tool_use": "a task card (renderer); a `read` under a memory store's mount_path is a"
    " memory read in the trace and /support memory (sessions.memory_history, issue 19)",
    "agent.tool_result": "closes its task card (renderer)",
    "agent.mcp_tool_use": "a task card; approvals (renderer, approvals)",
    "agent.mcp_tool_result": "closes its task card (renderer)",
    "agent.custom_tool_use": "runs our custom tool (sessions.custom_tools)",
    "session.status_running": "ticket working (follower)",
    "session.status_idle": "turn end by stop reason; an unknown reason ends the turn too (follower)",
    "session.status_rescheduled": "a retrying note (renderer)",
    "session.status_terminated": "ticket failed (follower)",
    "session.deleted": "ticket failed (follower)",
    "session.error": "a note; terminal errors fail the ticket (renderer, follower)",
    "session.usage": "cost ledger (sessions.cost_hooks)",
    # Specialists (issue 19): a task per subagent thread (render.threads); when one stops, its
    # own tool calls and its cost are read from the thread (sessions.thread_events).
    "session.thread_created": "a specialist's task in the timeline (render.threads)",
    "agent.thread_message_sent": "what the coordinator asked the specialist: its task's title (render.threads)",
    "agent.thread_message_received": "the specialist's answer: its task's output (render.threads)",
    "session.thread_status_running": "the specialist's task in progress (render.threads)",
    "session.thread_status_idle": "the specialist's task: waiting for approval, answered or stopped"
    " (render.threads); its tool calls and cost read from the thread (sessions.thread_events)",
    "session.thread_status_terminated": "the specialist's task failed; its calls and cost read"
    " (sessions.thread_events)",
    "session.thread_status_rescheduled": "the specialist's task in progress again (render.threads)",
    "user.define_outcome": "our outcome echoed back: its outcome_id and time (sessions.outcomes, render.outcome_tasks)",
    "span.outcome_evaluation_start": "a check task in the timeline (render.outcome_tasks)",
    "span.outcome_evaluation_end": "the check's verdict; drafts released or handed to a person; grader cost"
    " (render.outcome_tasks, sessions.outcomes, cost.grader)",
    "event_start": "preview of an agent.message (renderer.delta)",
    "event_delta": "preview text (renderer.delta)",
}

# Deliberately not shown. The reason says why; revisit when the feature it belongs to lands.
IGNORED: dict[str, str] = {
    "user.message": "our own message echoed back",
    "user.interrupt": "our own Stop echoed back",
    "user.tool_confirmation": "our own approval echoed back",
    "user.custom_tool_result": "our own tool result echoed back",
    "user.tool_result": "our own tool result echoed back",
    "system.message": "our own system message echoed back",
    "agent.thread_context_compacted": "internal context housekeeping; nothing for the user",
    "session.updated": "our own sessions.update (budget raise) echoed back; the resumed turn's"
    " session.status_running is what moves the ticket",
    "span.model_request_start": "timing only; usage comes from session.usage",
    "span.model_request_end": "follower: nothing (usage comes from session.usage). Renderer (issue 15"
    " item 2, being rewritten): an is_error end closes that attempt's preview, whose text must go",
    "span.outcome_evaluation_ongoing": "the grader's heartbeat; its start and end are what is shown (issue 18)",
    "workflow_run.created": "workflows not used by this app",
    "workflow_run.status_running": "workflows not used by this app",
    "workflow_run.status_idle": "workflows not used by this app",
    "workflow_run.status_ended": "workflows not used by this app",
    "workflow_run.phase_started": "workflows not used by this app",
    "workflow_run.phase_ended": "workflows not used by this app",
    "workflow_run.error": "workflows not used by this app",
}
