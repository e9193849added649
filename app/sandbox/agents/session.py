"""One emulated Managed Agents session: its object, event log, live streams and agent loop.

Everything here runs on the emulator's event loop (see `EmulatorState` for the threading rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from app.sandbox.agents.events import validate_event
from app.sandbox.agents.resources import ApiError, rfc3339
from app.sandbox.agents.scenario import (
    Scenario,
    TurnEnded,
    TurnEngine,
    TurnInterrupted,
    UsageDelta,
    content_text,
    pick_steps,
)

if TYPE_CHECKING:
    from app.sandbox.agents.state import EmulatorState

log = logging.getLogger(__name__)


@dataclass
class Prices:
    """List prices in USD: tokens per million, runtime per session-hour, web search per call.
    Defaults are Claude Sonnet 4.6-like rates."""

    input: float = 3.0
    output: float = 15.0
    cache_read: float = 0.30
    cache_write_5m: float = 3.75
    cache_write_1h: float = 6.0
    runtime_per_hour: float = 0.08
    web_search: float = 0.01


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    active_seconds: float = 0.0
    web_search_requests: int = 0

    def add(self, delta: UsageDelta) -> None:
        self.input_tokens += delta.input_tokens
        self.output_tokens += delta.output_tokens
        self.cache_read_input_tokens += delta.cache_read_input_tokens
        self.cache_creation_5m += delta.cache_creation_5m_input_tokens
        self.cache_creation_1h += delta.cache_creation_1h_input_tokens
        self.active_seconds += delta.active_seconds
        self.web_search_requests += delta.web_search_requests

    def cost_usd(self, prices: Prices) -> float:
        per_token = (
            self.input_tokens * prices.input
            + self.output_tokens * prices.output
            + self.cache_read_input_tokens * prices.cache_read
            + self.cache_creation_5m * prices.cache_write_5m
            + self.cache_creation_1h * prices.cache_write_1h
        ) / 1_000_000
        runtime = self.active_seconds * prices.runtime_per_hour / 3600
        return per_token + runtime + self.web_search_requests * prices.web_search

    def cost_cents(self, prices: Prices) -> int:
        return math.floor(self.cost_usd(prices) * 100 + 0.5)

    def to_json(self, prices: Prices) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
            "active_seconds": self.active_seconds,
            "server_tool_use": {
                "web_search_requests": self.web_search_requests,
                "web_fetch_requests": 0,
            },
            "list_cost": {"amount": str(self.cost_cents(prices)), "currency": "USD"},
        }


class StreamAborted(Exception):
    """Raised inside an SSE body to cut the connection without a clean end (a network drop)."""


@dataclass(eq=False)
class Subscriber:
    """One open SSE connection."""

    deltas: frozenset[str]
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    previews: set[str] = field(default_factory=set)

    def send(self, frame: dict[str, Any]) -> None:
        self.queue.put_nowait(("event", frame))

    def close(self, mode: str = "close") -> None:
        self.queue.put_nowait(("close", mode))


class SessionRuntime:
    """The emulated session. Implements `scenario.TurnRuntime` for the engine."""

    def __init__(
        self,
        state: EmulatorState,
        session_id: str,
        *,
        agent: dict[str, Any],
        environment_id: str,
        vault_ids: list[str],
        metadata: dict[str, str],
        title: str | None,
        budget: dict[str, Any] | None,
        resources: list[dict[str, Any]],
    ) -> None:
        self.state = state
        self.id = session_id
        self.agent = agent
        self.environment_id = environment_id
        self.vault_ids = vault_ids
        self.metadata = metadata
        self.title = title
        self.budget = budget
        self.budget_ever_set = budget is not None
        self.resources = resources
        created = state.clock.now()
        self.created_at: datetime = created
        self.updated_at: datetime = created
        self.archived_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.status: Literal["idle", "running", "rescheduling", "terminated"] = "idle"
        self.usage = Usage()
        self.scenario: Scenario | None = None  # per-session override of state.scenario
        self.events: list[dict[str, Any]] = []  # processed, in processed_at order
        self.queued: deque[dict[str, Any]] = deque()  # user.message waiting for a turn
        self.flushed: list[dict[str, Any]] = []
        self.subscribers: set[Subscriber] = set()
        self.processed_messages: list[dict[str, Any]] = []
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.worker: asyncio.Task[None] | None = None
        self.turn_task: asyncio.Task[None] | None = None
        self.budget_resume: asyncio.Event | None = None
        self.rule_uses: dict[int, int] = {}
        self.engine: TurnEngine | None = None
        # Until this monotonic time the queryable status still reads running after an idle
        # event (scenario `status_lag`; client-patterns section 6).
        self.idle_visible_at = 0.0
        self.outcome_evaluations: list[dict[str, Any]] = []
        self.outcome: dict[str, Any] | None = None  # the outcome being worked on
        from app.sandbox.agents.threads import SessionThreads

        self.threads = SessionThreads(self)  # multiagent: the primary and its subagents' threads

    # -- the object --------------------------------------------------------------------------

    @property
    def budget_paused(self) -> bool:
        return self.budget_resume is not None

    def current_scenario(self) -> Scenario:
        return self.scenario or self.state.scenario

    @property
    def reported_status(self) -> str:
        """The status `retrieve` and `list` show: an idle event reaches the stream slightly
        before the queryable status says idle (client-patterns section 6)."""
        if self.status == "idle" and time.monotonic() < self.idle_visible_at:
            return "running"
        return self.status

    def to_json(self) -> dict[str, Any]:
        end = self.ended_at or self.state.clock.now()
        return {
            "id": self.id,
            "type": "session",
            "title": self.title,
            "status": self.reported_status,
            "agent": self.agent,
            "environment_id": self.environment_id,
            "vault_ids": list(self.vault_ids),
            "metadata": dict(self.metadata),
            "resources": list(self.resources),
            "budget": self.budget,
            "usage": self.usage.to_json(self.state.prices),
            "stats": {
                "active_seconds": self.usage.active_seconds,
                "duration_seconds": round((end - self.created_at).total_seconds(), 6),
            },
            "outcome_evaluations": [dict(o) for o in self.outcome_evaluations],
            "deployment_id": None,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "archived_at": rfc3339(self.archived_at) if self.archived_at else None,
        }

    def all_events(self) -> list[dict[str, Any]]:
        """Processed events in order, then queued user messages (processed_at null; a queued
        define_outcome was processed on receipt, so it is among the events already)."""
        return [*self.events, *(e for e in self.queued if e.get("processed_at") is None)]

    # -- emitting ----------------------------------------------------------------------------

    def new_event_id(self) -> str:
        return self.state.new_id("sevt")

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]:
        """Record and broadcast an event. `_unchecked=True` skips the SDK validation: only for
        values newer than the installed SDK (a scenario's unknown stop reason)."""
        checked = not fields.pop("_unchecked", False)
        event_id = fields.pop("id", None) or self.new_event_id()
        event = {"id": event_id, "type": event_type, "processed_at": rfc3339(self.state.clock.now())}
        event.update(fields)
        if checked:
            validate_event(event)  # never a shape the SDK would not parse
        self.events.append(event)
        if event_type == "session.status_running":
            self.status = "running"
        elif event_type == "session.status_idle":
            self.status = "idle"
            lag = self.current_scenario().status_lag
            if lag:
                self.idle_visible_at = time.monotonic() + lag
        elif event_type == "session.status_rescheduled":
            self.status = "rescheduling"
        elif event_type == "session.status_terminated":
            self.status = "terminated"
            self.ended_at = self.state.clock.now()
        self.broadcast(event)
        return event

    def broadcast(self, event: dict[str, Any]) -> None:
        for sub in list(self.subscribers):
            sub.send(event)

    def preview_start(self, event_id: str, event_type: str) -> None:
        for sub in self.subscribers:
            if event_type in sub.deltas:
                sub.previews.add(event_id)
                sub.send({"type": "event_start", "event": {"id": event_id, "type": event_type}})

    def preview_delta(self, event_id: str, text: str) -> None:
        frame = {
            "type": "event_delta",
            "event_id": event_id,
            "delta": {"type": "content_delta", "index": 0, "content": {"type": "text", "text": text}},
        }
        for sub in self.subscribers:
            if event_id in sub.previews:
                sub.send(frame)

    def subscribe(self, deltas: frozenset[str]) -> Subscriber:
        sub = Subscriber(deltas=deltas)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def drop_streams(self, mode: str = "close") -> None:
        for sub in list(self.subscribers):
            sub.close(mode)
        self.subscribers.clear()

    # -- TurnRuntime -------------------------------------------------------------------------

    def permission_for(
        self, kind: Literal["tool", "mcp_tool"], name: str, server: str | None
    ) -> Literal["always_allow", "always_ask", "auto"]:
        for tool in self.agent.get("tools", []):
            if kind == "tool" and tool["type"] == "agent_toolset_20260401":
                pass
            elif kind == "mcp_tool" and tool["type"] == "mcp_toolset" and tool["mcp_server_name"] == server:
                pass
            else:
                continue
            for config in tool["configs"]:
                if config["name"] == name:
                    return config["permission_policy"]["type"]
            return tool["default_config"]["permission_policy"]["type"]
        return "always_allow"

    async def wait_actions(self, event_ids: list[str]) -> dict[str, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        futures = {i: loop.create_future() for i in event_ids}
        self.pending.update(futures)
        answers: dict[str, dict[str, Any]] = {}
        try:
            remaining = list(event_ids)
            while remaining:
                self.emit("session.status_idle", stop_reason={"type": "requires_action", "event_ids": list(remaining)})
                await asyncio.wait([futures[i] for i in remaining], return_when=asyncio.FIRST_COMPLETED)
                for i in list(remaining):
                    if futures[i].done():
                        answers[i] = futures[i].result()
                        remaining.remove(i)
            self.emit("session.status_running")
            return answers
        finally:
            for i in event_ids:
                self.pending.pop(i, None)

    def budget_reached(self) -> bool:
        if self.budget is None:
            return False
        limit = int(self.budget["max_list_cost"]["amount"])
        return self.usage.cost_cents(self.state.prices) >= limit

    async def check_budget(self) -> None:
        while self.budget_reached():
            self.emit("session.usage", usage=self.usage.to_json(self.state.prices), budget=self.budget)
            self.emit("session.status_idle", stop_reason={"type": "budget_reached"})
            self.budget_resume = asyncio.Event()
            try:
                await self.budget_resume.wait()
            finally:
                self.budget_resume = None
            self.emit("session.status_running")

    def add_usage(self, delta: UsageDelta, emit: bool = True) -> None:
        self.usage.add(delta)
        if emit:
            self.emit("session.usage", usage=self.usage.to_json(self.state.prices), budget=self.budget)

    def server_url(self, server: str) -> str:
        for entry in self.agent.get("mcp_servers", []):
            if entry["name"] == server:
                return str(entry["url"])
        return f"mcp://{server}"

    async def call_mcp(
        self,
        server: str,
        tool: str,
        tool_input: dict[str, Any],
        scripted: str | None,
        scripted_is_error: bool,
        *,
        url: str | None = None,
        thread_id: str | None = None,
    ) -> tuple[str, bool]:
        # A subagent's call (app.sandbox.agents.threads) gives the URL its own agent declares.
        url = url or self.server_url(server)
        token = self.state.credential_token_for(self.vault_ids, url)
        self.state.mcp_calls.append(
            {
                "session_id": self.id,
                "thread_id": thread_id,
                "server": server,
                "url": url,
                "tool": tool,
                "input": tool_input,
                "authenticated": token is not None,
            }
        )
        caller = self.state.mcp_caller
        try:
            if caller is not None:
                return await caller(url, tool, tool_input, token)
            if scripted is not None:
                return scripted, scripted_is_error
            from app.sandbox.agents.mcp import http_mcp_call

            return await http_mcp_call(url, tool, tool_input, token)
        except Exception as exc:  # the agent sees tool failures as error results
            log.info("emulated MCP call to %s failed: %r", url, exc)
            return f"MCP call failed: {exc}", True

    def evaluate(self, result: str, explanation: str | None) -> None:
        self.grade(result, explanation, None)

    def grade(self, result: str, explanation: str | None, usage: dict[str, int] | None) -> None:
        """The grader's pass over the current outcome (docs: outcomes): start, a heartbeat,
        end with the verdict and the grader's `usage` (SDK BetaManagedAgentsSpanModelUsage; not
        added to the session's usage: whether the API's does is not documented); the session's
        `outcome_evaluations` entry follows it. With no outcome being worked on (none defined, or
        the last one reached a terminal result) there is nothing to grade and nothing is emitted:
        each evaluation names "the outcome being evaluated" and `outcome_evaluations` holds "one
        entry per define_outcome event" (SDK span_outcome_evaluation_*_event.py,
        beta_managed_agents_session.py), so a script's `evaluate` in a plain turn is a no-op."""
        outcome = self.outcome
        if outcome is None or outcome["result"] in ("satisfied", "max_iterations_reached", "failed", "interrupted"):
            return
        iteration = outcome["iteration"]
        outcome["result"] = "evaluating"
        start = self.emit("span.outcome_evaluation_start", outcome_id=outcome["outcome_id"], iteration=iteration)
        self.emit("span.outcome_evaluation_ongoing", outcome_id=outcome["outcome_id"], iteration=iteration)
        text = explanation or f"emulated grader: {result}"
        self.emit(
            "span.outcome_evaluation_end",
            outcome_evaluation_start_id=start["id"],
            outcome_id=outcome["outcome_id"],
            iteration=iteration,
            result=result,
            explanation=text,
            usage={"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                   "cache_read_input_tokens": 0, **(usage or {})},
        )
        outcome["explanation"] = text
        if result == "needs_revision":
            outcome["iteration"] = iteration + 1
            outcome["result"] = "running"
        else:
            outcome["result"] = result
            outcome["completed_at"] = rfc3339(self.state.clock.now())

    def _new_outcome(self, description: str, outcome_id: str | None, current: bool = True) -> dict[str, Any]:
        """The session's entry for an outcome (SDK BetaManagedAgentsOutcomeEvaluationResource:
        `pending` "before the agent begins work"); `current` makes it the one being worked on."""
        for known in self.outcome_evaluations:
            if outcome_id is not None and known["outcome_id"] == outcome_id:
                if current:
                    self.outcome = known
                return known
        outcome = {
            "type": "outcome_evaluation",
            "outcome_id": outcome_id or self.state.new_id("outc"),
            "description": description,
            "iteration": 0,
            "result": "pending",
            "explanation": None,
            "completed_at": None,
        }
        self.outcome_evaluations.append(outcome)
        if current:
            self.outcome = outcome
        return outcome

    async def run_subagent(self, step: Any, parent: TurnEngine) -> None:
        await self.threads.run(step, parent)  # app/sandbox/agents/threads.py

    def memory_tool(
        self, op: str, store: str | None, path: str, content: str | None
    ) -> tuple[str, dict[str, Any], Callable[[], tuple[str, bool]]]:
        from app.sandbox.agents.memory import memory_tool

        return memory_tool(self, op, store, path, content)

    def flush_queue(self) -> None:
        self.flushed.extend(self.queued)
        self.queued.clear()

    def terminate(self) -> None:
        self.flush_queue()
        if self.status != "terminated":
            self.emit("session.status_terminated")

    # -- receiving user events ---------------------------------------------------------------

    def check_writable(self) -> None:
        if self.archived_at is not None:
            # Reference digest section 17: "ConflictError (409 ...) e.g. sending to an archived
            # session"; skills managed-agents-events.md "Archive": read-only afterwards.
            raise ApiError(409, "session is archived")
        if self.status == "terminated":
            # Docs (session-operations): terminated is final, "ended by an unrecoverable error".
            raise ApiError(400, "session is terminated")

    def accept(self, raw_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate, record and act on a batch from `events.send`. All or nothing."""
        self.check_writable()
        for index, raw in enumerate(raw_events):
            self._validate(raw)
            if raw.get("type") == "system.message":
                # SDK BetaManagedAgentsSystemMessageEventParams: "At most one per request: it
                # must be the final event and immediately follow the user.message,
                # user.tool_result, or user.custom_tool_result it accompanies."
                before = raw_events[index - 1].get("type") if index else None
                if index != len(raw_events) - 1 or before not in (
                    "user.message", "user.tool_result", "user.custom_tool_result"
                ):
                    raise ApiError(400, "system.message must be the last event, right after the event it accompanies")
        return [self._receive(raw) for raw in raw_events]

    def _validate(self, raw: dict[str, Any]) -> None:
        """Each rule names its source: the SDK's param TypedDicts (`types/beta/sessions/
        beta_managed_agents_*_event_params.py`) or the docs."""
        kind = raw.get("type")
        if kind == "user.message":
            content = raw.get("content")
            # SDK BetaManagedAgentsUserMessageEventParams: content Required[Iterable[Content]],
            # Content = text | image | document | redacted (discriminated on type).
            if not isinstance(content, list):
                raise ApiError(400, "user.message: content must be an array")
            for block in content:
                if not isinstance(block, dict) or block.get("type") not in ("text", "image", "document", "redacted"):
                    raise ApiError(400, "user.message: unsupported content block")
            # No rule against a message while paused at the budget: neither the SDK nor the
            # anthropics/skills guides say so (issue 15 item 3); it queues like any message
            # sent mid-turn.
        elif kind == "user.tool_confirmation":
            # SDK BetaManagedAgentsUserToolConfirmationEventParams: result Literal allow|deny;
            # deny_message "Only allowed when result is 'deny'"; tool_use_id "can be found in
            # the last session.status_idle event's stop_reason.event_ids".
            if raw.get("result") not in ("allow", "deny"):
                raise ApiError(400, "user.tool_confirmation: result must be allow or deny")
            if raw.get("deny_message") is not None and raw.get("result") != "deny":
                raise ApiError(400, "user.tool_confirmation: deny_message only with deny")
            if raw.get("tool_use_id") not in self.pending:
                raise ApiError(400, "user.tool_confirmation: tool_use_id is not a pending tool use")
        elif kind == "user.custom_tool_result":
            # SDK BetaManagedAgentsUserCustomToolResultEventParams: custom_tool_use_id "is also
            # listed in the last session.status_idle event's stop_reason.event_ids".
            if raw.get("custom_tool_use_id") not in self.pending:
                raise ApiError(400, "user.custom_tool_result: custom_tool_use_id is not pending")
        elif kind == "system.message":
            # SDK BetaManagedAgentsSystemMessageEventParams: content Required[Iterable[...]].
            if not isinstance(raw.get("content"), list):
                raise ApiError(400, "system.message: content must be an array")
        elif kind == "user.interrupt":
            if raw.get("session_thread_id"):
                self.threads.get(str(raw["session_thread_id"]))  # an unknown thread: 404

        elif kind == "user.define_outcome":
            # SDK BetaManagedAgentsUserDefineOutcomeEventParams: description Required[str];
            # rubric Required[text {content} | file {file_id}]; max_iterations "Default 3, max 20".
            if not isinstance(raw.get("description"), str):
                raise ApiError(400, "user.define_outcome: description is required")
            rubric = raw.get("rubric")
            if not isinstance(rubric, dict) or rubric.get("type") not in ("text", "file"):
                raise ApiError(400, "user.define_outcome: rubric must be {type: text} or {type: file}")
            if rubric["type"] == "text" and not isinstance(rubric.get("content"), str):
                raise ApiError(400, "user.define_outcome: a text rubric needs content")
            if rubric["type"] == "file" and not isinstance(rubric.get("file_id"), str):
                raise ApiError(400, "user.define_outcome: a file rubric needs file_id")
            iterations = raw.get("max_iterations")
            # Only the maximum is documented; a lower bound would be our guess.
            if iterations is not None and (not isinstance(iterations, int) or iterations > 20):
                raise ApiError(400, "user.define_outcome: max_iterations is at most 20")
        elif kind == "user.tool_result":
            # SDK BetaManagedAgentsUserToolResultEventParams: "Only valid on self_hosted
            # environments"; the emulator serves cloud environments only.
            raise ApiError(400, "user.tool_result is only valid on self_hosted environments")
        else:
            # SDK SessionEventSendParams: events are user.* or system.message params only.
            raise ApiError(400, f"unknown event type {kind!r}")

    def _receive(self, raw: dict[str, Any]) -> dict[str, Any]:
        # user.interrupt keeps its `session_thread_id` (SDK BetaManagedAgentsUserInterruptEvent).
        event = {k: v for k, v in raw.items() if k != "session_thread_id" or raw.get("type") == "user.interrupt"}
        event["id"] = self.new_event_id()
        kind = event["type"]
        if kind == "user.define_outcome":
            # The echo carries a server-made outcome_id (SDK BetaManagedAgentsUserDefineOutcomeEvent).
            event["outcome_id"] = self.state.new_id("outc")
            event.setdefault("max_iterations", None)
        self.state.user_events.append({"session_id": self.id, "event": event})
        if kind in ("user.message", "user.define_outcome"):
            # define_outcome "begins work on receipt" (SDK params docstring): a turn like a message.
            if self.worker is None and self.status != "terminated":
                self._process_now(event)
                self._start_turns(event)
            elif kind == "user.define_outcome":
                # Accepted on receipt, echoed once with its time (docs events-and-streaming: it is
                # "processed on receipt"; SDK BetaManagedAgentsUserDefineOutcomeEvent.processed_at is
                # required); its work follows the turn in progress (when is not documented).
                self._process_now(event)
                self._new_outcome(str(event.get("description") or ""), event["outcome_id"], current=False)
                self.queued.append(event)
            else:
                event["processed_at"] = None
                self.queued.append(event)
                self.broadcast(event)
            return event
        self._process_now(event)
        if kind == "user.interrupt":
            # SDK user_interrupt_event_params: with session_thread_id, "interrupts only the named
            # thread"; without, every non-archived thread (the turn, and the threads under it).
            if not self.threads.interrupt(event.get("session_thread_id")):
                self._interrupt()
        elif kind == "user.tool_confirmation":
            self._resolve(event["tool_use_id"], event)
        elif kind == "user.custom_tool_result":
            self._resolve(event["custom_tool_use_id"], event)
        return event

    def _interrupt(self) -> None:
        if self.turn_task is None or self.turn_task.done() or self.budget_paused:
            return
        engine = self.engine
        if self.current_scenario().interrupt == "boundary" and engine is not None and not self.pending:
            engine.interrupted = True  # the step in progress finishes first
        else:
            self.turn_task.cancel()

    def _process_now(self, event: dict[str, Any]) -> None:
        event["processed_at"] = rfc3339(self.state.clock.now())
        self.events.append(event)
        self.broadcast(event)

    def _resolve(self, event_id: str, answer: dict[str, Any]) -> None:
        future = self.pending.get(event_id)
        if future is not None and not future.done():
            future.set_result(answer)

    # -- the agent loop ----------------------------------------------------------------------

    def _start_turns(self, first: dict[str, Any]) -> None:
        self.emit("session.status_running")
        self.worker = asyncio.get_running_loop().create_task(self._turns(first))

    def resume_budget(self) -> None:
        if self.budget_resume is not None:
            self.budget_resume.set()

    async def _turns(self, first: dict[str, Any]) -> None:
        event: dict[str, Any] | None = first
        try:
            while event is not None:
                await self._turn(event)
                event = None
                if self.status != "terminated" and self.queued:
                    event = self.queued.popleft()
                    if event["type"] != "user.define_outcome":  # that one was processed on receipt
                        event["processed_at"] = rfc3339(self.state.clock.now())
                        self.events.append(event)
                        # Its second echo, now with processed_at (client-patterns section 2).
                        self.broadcast(dict(event))
                    self.emit("session.status_running")
        finally:
            self.worker = None
            self.turn_task = None

    async def _turn(self, message: dict[str, Any]) -> None:
        if message["type"] == "user.define_outcome":
            text = str(message.get("description") or "")
            self._new_outcome(text, message["outcome_id"])["result"] = "running"
        else:
            text = content_text(message.get("content"))
        self.processed_messages.append({"id": message["id"], "text": text})
        scenario = self.current_scenario()
        steps = pick_steps(scenario, text, self.rule_uses)
        engine = TurnEngine(self, scenario, text, turn=len(self.processed_messages))
        self.engine = engine
        task = asyncio.get_running_loop().create_task(engine.run(steps))
        self.turn_task = task
        try:
            await asyncio.wait([task])
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self.turn_task = None
        self.engine = None
        if self.status == "terminated":
            return
        if task.cancelled():  # user.interrupt
            self.emit("session.status_idle", stop_reason={"type": "end_turn"})
            return
        exc = task.exception()
        if exc is None or isinstance(exc, TurnInterrupted):  # an interrupt also ends in end_turn
            self.emit("session.status_idle", stop_reason={"type": "end_turn"})
        elif not isinstance(exc, TurnEnded):
            log.exception("emulated turn failed", exc_info=exc)
            self.emit(
                "session.error",
                error={
                    "type": "unknown_error",
                    "message": f"emulator error: {exc!r}",
                    "retry_status": {"type": "exhausted"},
                },
            )
            self.emit("session.status_idle", stop_reason={"type": "retries_exhausted"})

    def stop_tasks(self) -> None:
        """Cancel the agent loop (archive, delete, emulator shutdown)."""
        for future in self.pending.values():
            future.cancel()
        if self.worker is not None:
            self.worker.cancel()
        if self.turn_task is not None:
            self.turn_task.cancel()
