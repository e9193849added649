"""Session threads in the emulator: the thread objects, their events and subagent turns.

Sources, each rule below names one:
(The agents' `multiagent` field and the session's roster are in `multiagent.py`.)

- SDK `sessions/beta_managed_agents_session_thread*.py` (the thread object, usage, stats),
  `sessions/beta_managed_agents_session_thread_*_event.py`, `agent_thread_message_*_event.py`,
  `agent_mcp_tool_use_event.py` (`session_thread_id`: cross-posted permission requests; "the
  server routes the matching user.tool_confirmation by tool_use_id"),
  `user_interrupt_event_params.py` (no `session_thread_id`: every non-archived thread).
- Docs managed-agents/session-threads: the primary stream shows "the start and end of their
  work, and blocking events such as tool permission requests", not the subagent's full activity;
  "if at least one thread is running, the session is running"; "when no thread is working and a
  thread waits on your client, the session is idle"; an interrupt of a thread blocked on
  requires_action closes each pending tool call with an error result ("Tool execution was
  interrupted before completion. Please retry.") and re-emits `session.thread_status_idle`
  with `end_turn`.

Not documented, chosen here and said so: a cross-posted event keeps the id it has on the
thread's own stream (the confirmation names that id); the session's `requires_action` idle
lists the subagent's pending ids; a thread's reply to the coordinator is one
`agent.thread_message_sent` on its stream and `agent.thread_message_received` on the primary.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from app.sandbox.agents.events import validate_event
from app.sandbox.agents.multiagent import thread_agent
from app.sandbox.agents.resources import ApiError, not_found, rfc3339
from app.sandbox.agents.scenario import TurnEngine, UsageDelta

if TYPE_CHECKING:
    from app.sandbox.agents.scenario import SubagentStep
    from app.sandbox.agents.session import SessionRuntime, Subscriber

log = logging.getLogger(__name__)

INTERRUPTED = "Tool execution was interrupted before completion. Please retry."
# Events of a subagent's turn that also reach the primary stream (docs session-threads:
# blocking events; the tool-use events carry `session_thread_id` there).
CROSS_POSTED_STATUS = ("session.thread_status_running", "session.thread_status_idle",
                       "session.thread_status_terminated", "session.thread_status_rescheduled")


# -- threads ------------------------------------------------------------------------------------


@dataclass
class Thread:
    id: str
    agent: dict[str, Any]
    parent_thread_id: str | None
    created_at: datetime
    status: Literal["running", "idle", "rescheduling", "terminated"] = "idle"
    updated_at: datetime | None = None
    archived_at: datetime | None = None
    usage: UsageDelta = field(default_factory=UsageDelta)
    idled: bool = False  # usage is "Null until the thread's first idle transition"
    events: list[dict[str, Any]] = field(default_factory=list)
    subscribers: set[Subscriber] = field(default_factory=set)
    task: asyncio.Task[None] | None = None
    pending: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.agent.get("name") or "")


def _add(total: UsageDelta, delta: UsageDelta) -> UsageDelta:
    return UsageDelta(**{k: getattr(total, k) + getattr(delta, k) for k in UsageDelta.model_fields})


class SessionThreads:
    """One session's threads: the primary (the session stream) and the subagents it spawned."""

    def __init__(self, session: SessionRuntime) -> None:
        self.session = session
        self.primary = Thread(session.state.new_id("sthr"), thread_agent(session.agent), None, session.created_at)
        self.children: dict[str, Thread] = {}

    # -- the objects (SDK beta_managed_agents_session_thread.py) --

    def get(self, thread_id: str) -> Thread:
        if thread_id == self.primary.id:
            return self.primary
        if thread_id not in self.children:
            raise not_found("session thread", thread_id)
        return self.children[thread_id]

    def all(self) -> list[Thread]:
        return [self.primary, *self.children.values()]

    def usage_of(self, thread: Thread) -> UsageDelta:
        if thread is not self.primary:
            return thread.usage
        u = self.session.usage  # the primary's own: the session's minus its children's
        own = UsageDelta(
            input_tokens=u.input_tokens, output_tokens=u.output_tokens,
            cache_read_input_tokens=u.cache_read_input_tokens,
            cache_creation_5m_input_tokens=u.cache_creation_5m, cache_creation_1h_input_tokens=u.cache_creation_1h,
            active_seconds=u.active_seconds, web_search_requests=u.web_search_requests,
        )
        for child in self.children.values():
            own = UsageDelta(**{k: max(0, getattr(own, k) - getattr(child.usage, k)) for k in UsageDelta.model_fields})
        return own

    def to_json(self, thread: Thread) -> dict[str, Any]:
        prices = self.session.state.prices
        now = self.session.state.clock.now()
        primary = thread is self.primary
        status = self.session.status if primary else thread.status
        usage = self.usage_of(thread)
        idled = thread.idled or (primary and bool(self.session.processed_messages))
        tokens = (usage.input_tokens * prices.input + usage.output_tokens * prices.output
                  + usage.cache_read_input_tokens * prices.cache_read
                  + usage.cache_creation_5m_input_tokens * prices.cache_write_5m
                  + usage.cache_creation_1h_input_tokens * prices.cache_write_1h) / 1_000_000
        # Per-thread list_cost leaves session runtime out (SDK session_thread_usage.py docstring).
        cents = int(tokens * 100 + 0.5)
        end = thread.archived_at or now
        return {
            "id": thread.id,
            "type": "session_thread",
            "session_id": self.session.id,
            "agent": copy.deepcopy(thread.agent),
            "parent_thread_id": thread.parent_thread_id,
            "status": status,
            "workflow_run_id": None,
            "created_at": rfc3339(thread.created_at),
            "updated_at": rfc3339(thread.updated_at or thread.created_at),
            "archived_at": rfc3339(thread.archived_at) if thread.archived_at else None,
            "stats": {
                "active_seconds": usage.active_seconds,
                "duration_seconds": round((end - thread.created_at).total_seconds(), 6),
                "startup_seconds": 0.0,  # "Zero for child threads, which start immediately"
            },
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_input_tokens": usage.cache_read_input_tokens,
                "cache_creation": {"ephemeral_5m_input_tokens": usage.cache_creation_5m_input_tokens,
                                   "ephemeral_1h_input_tokens": usage.cache_creation_1h_input_tokens},
                "active_seconds": usage.active_seconds,
                "server_tool_use": {"web_search_requests": usage.web_search_requests, "web_fetch_requests": 0},
                "list_cost": {"amount": str(cents), "currency": "USD"},
            } if idled else None,
        }

    def events_of(self, thread: Thread) -> list[dict[str, Any]]:
        return self.session.events if thread is self.primary else thread.events

    def archive(self, thread_id: str) -> dict[str, Any]:
        thread = self.get(thread_id)
        if thread is self.primary:
            # Not documented for Managed Agents; the primary is the session itself (archive that).
            raise ApiError(400, "the primary thread is archived with its session")
        if thread.status == "running":
            raise ApiError(400, "cannot archive a running thread")  # not documented either
        thread.archived_at = thread.updated_at = self.session.state.clock.now()
        return self.to_json(thread)

    # -- the interrupt (SDK user_interrupt_event_params.py) --

    def interrupt(self, thread_id: str | None) -> bool:
        """A child thread named: stop it alone (True). Else the session's interrupt does it all."""
        if not thread_id or thread_id == self.primary.id:
            return False
        thread = self.get(thread_id)
        if thread.task is not None and not thread.task.done():
            thread.task.cancel()
        return True

    # -- a subagent's turn, spawned by the coordinator's `subagent` step --

    async def run(self, step: SubagentStep, parent: TurnEngine) -> None:
        session = self.session
        agent = self._callable(step.subagent)
        thread = Thread(session.state.new_id("sthr"), agent, self.primary.id, session.state.clock.now())
        self.children[thread.id] = thread
        task_text = parent.render(step.task)
        content = [{"type": "text", "text": task_text}]
        session.emit("session.thread_created", session_thread_id=thread.id, agent_name=thread.name,
                     workflow_run_id=None)
        session.emit("agent.thread_message_sent", to_session_thread_id=thread.id, to_agent_name=thread.name,
                     content=content)
        runtime = ThreadRuntime(self, thread)
        runtime.emit("agent.thread_message_received", from_session_thread_id=self.primary.id, content=content)
        runtime.emit("session.status_running")
        engine = TurnEngine(runtime, parent.scenario, task_text, turn=1)
        thread.task = asyncio.get_running_loop().create_task(engine.run(list(step.steps)))
        try:
            await asyncio.wait([thread.task])
        except asyncio.CancelledError:  # the whole session is interrupted: the thread stops too
            thread.task.cancel()
            with contextlib.suppress(BaseException):
                await thread.task
            runtime.stopped()
            raise
        if thread.task.cancelled():  # this thread alone was interrupted; the coordinator goes on
            runtime.stopped()
            parent.last_tool_result = ""
            return
        if thread.task.exception() is not None:
            log.warning("emulated subagent turn failed", exc_info=thread.task.exception())
        reply = engine.render(step.reply) if step.reply is not None else engine.last_tool_result
        reply_content = [{"type": "text", "text": reply}]
        runtime.emit("agent.thread_message_sent", to_session_thread_id=self.primary.id, content=reply_content)
        session.emit("agent.thread_message_received", from_session_thread_id=thread.id,
                     from_agent_name=thread.name, content=reply_content)
        runtime.emit("session.status_idle", stop_reason={"type": "end_turn"})
        parent.last_tool_result = reply

    def _callable(self, name: str) -> dict[str, Any]:
        multi = self.session.agent.get("multiagent") or {}
        sub = multi.get("subagents") or {}
        for agent in sub.get("predefined_agents") or [] if sub.get("type") == "enabled" else []:
            if agent.get("name") == name:
                return copy.deepcopy(agent)
        # A scenario naming an agent the coordinator cannot call is a mistake in the test.
        raise ValueError(f"the session's agent has no predefined subagent named {name!r}")


class ThreadRuntime:
    """`scenario.TurnRuntime` for a subagent: its own event log, the session's everything else."""

    def __init__(self, threads: SessionThreads, thread: Thread) -> None:
        self.threads = threads
        self.thread = thread
        self.session = threads.session

    def new_event_id(self) -> str:
        return self.session.new_event_id()

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        session, thread = self.session, self.thread
        if event_type in ("session.status_running", "session.status_idle", "session.status_rescheduled"):
            event_type = {"session.status_running": "session.thread_status_running",
                          "session.status_idle": "session.thread_status_idle",
                          "session.status_rescheduled": "session.thread_status_rescheduled"}[event_type]
            fields.update(session_thread_id=thread.id, agent_name=thread.name)
        if event_type == "session.usage":  # session-level: the session's cumulative usage
            return session.emit(event_type, **fields)
        checked = not fields.pop("_unchecked", False)
        event = {"id": fields.pop("id", None) or self.new_event_id(), "type": event_type,
                 "processed_at": rfc3339(session.state.clock.now()), **fields}
        if checked:
            validate_event(event)
        thread.events.append(event)
        thread.updated_at = session.state.clock.now()
        for sub in list(thread.subscribers):
            sub.send(event)
        if event_type == "session.thread_status_running":
            thread.status = "running"
        elif event_type == "session.thread_status_idle":
            thread.status, thread.idled = "idle", True
        elif event_type == "session.thread_status_rescheduled":
            thread.status = "rescheduling"
        copy_fields = {k: v for k, v in event.items() if k not in ("type", "processed_at")}
        if event_type in CROSS_POSTED_STATUS:  # "cross-posted to the primary stream for child threads"
            session.emit(event_type, **copy_fields)
        elif self._blocking(event):  # with `session_thread_id` on the primary copy only
            session.emit(event_type, **copy_fields, session_thread_id=thread.id)
        return event

    @staticmethod
    def _blocking(event: dict[str, Any]) -> bool:
        if event["type"] == "agent.custom_tool_use":
            return True
        return event["type"] in ("agent.tool_use", "agent.mcp_tool_use") and event.get("evaluated_permission") == "ask"

    def preview_start(self, event_id: str, event_type: str) -> None:
        return None  # previews go to thread streams that asked for them; none is kept here

    def preview_delta(self, event_id: str, text: str) -> None:
        return None

    def permission_for(self, kind: str, name: str, server: str | None) -> Any:
        for tool in self.thread.agent.get("tools", []):
            wanted = "agent_toolset_20260401" if kind == "tool" else "mcp_toolset"
            if tool["type"] != wanted or (kind == "mcp_tool" and tool.get("mcp_server_name") != server):
                continue
            for config in tool.get("configs") or []:
                if config["name"] == name:
                    return config["permission_policy"]["type"]
            return tool["default_config"]["permission_policy"]["type"]
        return "always_allow"

    async def wait_actions(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        session = self.session
        loop = asyncio.get_running_loop()
        futures = {i: loop.create_future() for i in event_ids}
        session.pending.update(futures)  # confirmations are routed by tool_use_id
        self.thread.pending = list(event_ids)
        answers: dict[str, dict[str, Any]] = {}
        try:
            remaining = list(event_ids)
            while remaining:
                stop = {"type": "requires_action", "event_ids": list(remaining)}
                self.emit("session.status_idle", stop_reason=stop)
                # "When no thread is working and a thread waits on your client, the session is idle."
                session.emit("session.status_idle", stop_reason=dict(stop, event_ids=list(remaining)))
                await asyncio.wait([futures[i] for i in remaining], return_when=asyncio.FIRST_COMPLETED)
                for i in list(remaining):
                    if futures[i].done():
                        answers[i] = futures[i].result()
                        remaining.remove(i)
                        self.thread.pending.remove(i)
            session.emit("session.status_running")
            self.emit("session.status_running")
            return answers
        finally:
            for i in event_ids:
                session.pending.pop(i, None)

    def stopped(self) -> None:
        """After an interrupt: pending calls closed with an error result, then idle end_turn."""
        for use_id in self.thread.pending:
            use = next((e for e in self.thread.events if e["id"] == use_id), {})
            content = [{"type": "text", "text": INTERRUPTED}]
            if use.get("type") == "agent.mcp_tool_use":
                self.emit("agent.mcp_tool_result", mcp_tool_use_id=use_id, content=content, is_error=True)
            elif use.get("type") == "agent.tool_use":
                self.emit("agent.tool_result", tool_use_id=use_id, content=content, is_error=True)
        self.thread.pending = []
        self.emit("session.status_idle", stop_reason={"type": "end_turn"})

    async def check_budget(self) -> None:
        await self.session.check_budget()  # "a single shared cap across all of a session's threads"

    def add_usage(self, delta: UsageDelta, emit: bool = True) -> None:
        self.thread.usage = _add(self.thread.usage, delta)
        self.session.add_usage(delta, emit=emit)

    async def call_mcp(self, server: str, tool: str, tool_input: dict[str, Any],
                       scripted: str | None, scripted_is_error: bool) -> tuple[str, bool]:
        url = next((s["url"] for s in self.thread.agent.get("mcp_servers", []) if s["name"] == server), None)
        if url is None:
            return f"MCP server {server!r} is not declared by this agent", True
        return await self.session.call_mcp(server, tool, tool_input, scripted, scripted_is_error,
                                           url=str(url), thread_id=self.thread.id)

    def drop_streams(self, mode: str) -> None:
        self.session.drop_streams(mode)

    def flush_queue(self) -> None:
        self.session.flush_queue()

    def terminate(self) -> None:
        self.thread.status = "terminated"
        self.session.terminate()

    def evaluate(self, result: str, explanation: str | None) -> None:
        raise ValueError("outcomes are graded on the primary thread")

    def memory_tool(self, op: str, store: str | None, path: str, content: str | None) -> Any:
        return self.session.memory_tool(op, store, path, content)  # the session's mounts are shared

    async def run_subagent(self, step: SubagentStep, parent: TurnEngine) -> None:
        raise ValueError("the emulator's subagents do not spawn threads of their own")
