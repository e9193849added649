"""When a specialist's thread stops working: its tool calls to the timeline, its cost to the ledger.

The session stream shows a subagent's start and end and its blocking requests only; its other
tool calls are on the thread's own stream (docs managed-agents/session-threads). When the
primary stream says a child thread went idle or terminated, the follower lists that thread's
events (`sessions.threads.events.list`) and hands its tool calls and results to the renderer
through its own `_handle`, so they are deduplicated and marked shown like any event (a
cross-posted approval request keeps its id: it is not shown twice). Each tool use is handed
with `session_thread_id` set, as on a cross-posted copy, so the timeline names the specialist.

Then `sessions.threads.retrieve` gives the thread's cumulative `usage` and `stats`, recorded
per specialist (`app/cost/threads.py`). Neither step may stop the ticket: a failure is logged
and the thread's calls or cost are missing, nothing else.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anthropic

from app.cost.threads import SpecialistLedger

if TYPE_CHECKING:
    from app.sessions.follower import SessionFollower

log = logging.getLogger(__name__)

THREAD_ENDS = frozenset({"session.thread_status_idle", "session.thread_status_terminated"})
TOOL_USES = frozenset({"agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use"})
SHOWN = TOOL_USES | {"agent.tool_result", "agent.mcp_tool_result"}


async def thread_stopped(follower: SessionFollower, event: Any) -> None:
    thread_id = getattr(event, "session_thread_id", None)
    session_id = follower.ticket.session_id
    if not thread_id or not session_id:
        return
    threads = follower.client.beta.sessions.threads
    try:
        async for item in threads.events.list(thread_id, session_id=session_id, limit=1000):
            if item.type not in SHOWN:
                continue
            if item.type in TOOL_USES and not getattr(item, "session_thread_id", None):
                item = item.model_copy(update={"session_thread_id": thread_id})
            await follower._handle(item, replay=True)
    except anthropic.APIError as exc:
        log.warning("a specialist's tool calls were not read",
                    extra={**follower.log_extra, "session_thread": thread_id, "error": type(exc).__name__})
    try:
        thread = await threads.retrieve(thread_id, session_id=session_id)
        await SpecialistLedger(follower.store.redis, follower.config.pricing).record(follower.ticket.id, thread)
    except anthropic.APIError as exc:
        log.warning("a specialist's cost was not read",
                    extra={**follower.log_extra, "session_thread": thread_id, "error": type(exc).__name__})
