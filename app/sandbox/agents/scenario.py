"""Scenario scripts for the Managed Agents emulator, and the engine that plays them.

A scenario is plain JSON, so a test in another process can post it to the emulator:

    {"rules": [
        {"match": "(?i)refund", "steps": [
            {"thinking": {}},
            {"mcp_tool": "search_docs", "server": "knowledge_base",
             "input": {"q": "refund"}, "permission": "ask", "result": "Refunds take 5 days."},
            {"message": "Refunds take 5 days. ({last_tool_result})", "deltas": 4},
            {"usage": {"input_tokens": 1200, "output_tokens": 300}}
        ]},
        {"match": null, "steps": [{"message": "You asked: {user_text}"}]}
    ]}

Each `user.message` is one turn. The first rule whose `match` regex finds the message text (or
whose `match` is null) supplies the turn's steps; with no match the agent answers
"You asked: <text>" in a few deltas. `max_uses` limits how many turns a rule may serve.

Step kinds (one key names the kind, the other keys are its options):

    {"thinking": {}}
    {"message": "text", "deltas": 3, "delta_delay": 0.0,
     "fail_attempts": 0, "fail_after": 1, "fail_error": "model_request_failed_error"}
    {"tool": "web_search", "input": {}, "result": "...", "is_error": false,
     "permission": "allow"|"ask"|"deny"|null, "deny_message": null, "on_deny": [steps]|null,
     "result_delay": 0.0}
    {"mcp_tool": "search_docs", "server": "knowledge_base", "input": {}, "result": "..."|null,
     "is_error": false, "permission": ..., "deny_message": null, "on_deny": [steps]|null,
     "result_delay": 0.0}
    {"custom_tool": "escalate_to_human", "input": {}}
    {"parallel": [tool | mcp_tool | custom_tool steps]}     one idle, several pending ids
    {"sleep": 0.2}
    {"error": "model_overloaded_error", "retry_status": "retrying"|"exhausted"|"terminal",
     "message": null, "mcp_server_name": null, "flush_queue": true}
    {"usage": {"input_tokens": 0, "output_tokens": 0, "cache_read_input_tokens": 0,
               "cache_creation_5m_input_tokens": 0, "cache_creation_1h_input_tokens": 0,
               "active_seconds": 0.0, "web_search_requests": 0}}
    {"drop_stream": {"mode": "close"|"abort"}}
    {"idle": "end_turn"|"retries_exhausted"|"refusal"|<newer>, "category": null, "explanation": null}
    {"terminate": {}}
    {"event": "session.thread_created", "fields": {...}}   any event type of the SDK's union
    {"evaluate": "satisfied"|"needs_revision"|"max_iterations_reached"|"failed",
     "explanation": null, "grader_usage": {"input_tokens": 0, "output_tokens": 0,
     "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}
    {"memory": "read"|"write", "path": "/notes.md", "content": null, "store": null,
     "permission": null}                                  a file tool on a memory mount (memory.py)
    {"subagent": "<predefined agent name>", "task": "{user_text}", "steps": [steps],
     "reply": null}      a session thread runs `steps` (app/sandbox/agents/threads.py)

Documented sequences (docs: events-and-streaming "Live previews"; anthropics/skills
skills/claude-api/shared/managed-agents-client-patterns.md sections 2, 3 and 6):

- A message with `fail_attempts: n` is first previewed and cut off n times: `event_start`, the
  first `fail_after` deltas, then `span.model_request_end` with `is_error: true` and no
  buffered `agent.message` (the failed attempt's preview is closed by the span end), then
  `session.error` (`fail_error`, retrying), `session.status_rescheduled`,
  `session.status_running`, and a new `span.model_request_start` for the retry, which
  succeeds with a new event id.
- `status_lag` (seconds, scenario level): after each `session.status_idle` the session's
  queryable status (`sessions.retrieve`, `sessions.list`) still reads `running` for that long,
  and archive / delete answer 400 ("cannot archive/delete while running") meanwhile
  (client-patterns section 6, "Post-idle status-write race").
- `budget_resume_lag` (seconds, scenario level): a `sessions.update` that lifts a budget pause
  returns at once, but the session runs again (`session.status_running`) only that long after;
  meanwhile `retrieve` still reads idle. The budgets doc says a raise "resumes the work on its
  own" and says nothing of when; this is the gap a follower woken by the raise must survive.
- `interrupt: "boundary"` (scenario level): `user.interrupt` lets the step in progress finish
  (a message being streamed still ends in its `agent.message`) and stops before the next one,
  then idle `end_turn` (client-patterns section 3: "keeps running until it reaches a safe
  boundary, then goes idle"). `"immediate"` (default) cancels the step in progress.
- A queued `user.message` is echoed on the stream twice: with `processed_at: null` when sent,
  and with its timestamp when its turn starts (client-patterns section 2).
- `event` emits any type of the installed SDK's event union (`agents_events.sdk_event_types`),
  its required fields filled from the SDK's pydantic model unless `fields` gives them; the
  emitted event is validated with the SDK's union.
- `evaluate` grades the session's current outcome (`user.define_outcome`):
  `span.outcome_evaluation_start`, `_ongoing`, `_end` with `result`, and the session's
  `outcome_evaluations` entry follows (docs: outcomes); with no outcome being worked on it
  emits nothing. `grader_usage` is the cycle's grader tokens (the end event's `usage`).

Permissions: with `permission` null, the session's agent configuration decides (the tool's
`permission_policy`; MCP toolsets default to `always_ask`, the agent toolset to `always_allow`,
`auto` evaluates to allow). `ask` emits the tool use with `evaluated_permission: "ask"`, goes idle
with `requires_action` and waits for `user.tool_confirmation`: allow runs the tool, deny yields an
error tool result carrying the `deny_message` and then runs `on_deny` (if given) instead of the
rest of the turn. `deny` is a policy refusal (`auto` judged it high-risk): error result, no wait.

An MCP tool's result comes from the emulator's `mcp_caller` when one is set, else from the
step's `result`, else from a real MCP call (streamable HTTP) to the server URL declared on the
agent, with the bearer token of the session's vault credential for that URL.

Text templates: `{user_text}`, `{last_tool_result}` (text of the latest tool result or custom
tool result) and `{turn}` (1-based turn number) are replaced in `message` text and in string
values of tool inputs. Other braces are left alone.

Budget: before each model step (thinking, message, tool uses) the runtime checks the session's
budget; once the list cost reaches it, the turn pauses (`session.usage`, then idle
`budget_reached`) until the budget is raised or removed.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

Permission = Literal["allow", "ask", "deny"]

# ---------------------------------------------------------------------------------------------
# The script model
# ---------------------------------------------------------------------------------------------


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ThinkingStep(_Step):
    thinking: dict[str, Any] = Field(default_factory=dict)


class MessageStep(_Step):
    message: str
    deltas: int = Field(default=3, ge=0)
    delta_delay: float = Field(default=0.0, ge=0)
    fail_attempts: int = Field(default=0, ge=0, le=10)
    """Model requests that fail mid-preview before the one that succeeds (see the docstring)."""
    fail_after: int = Field(default=1, ge=0)
    """Deltas a failed attempt shows before it is cut off."""
    fail_error: str = "model_request_failed_error"


class ToolStep(_Step):
    """A built-in (agent toolset) tool: `agent.tool_use` then `agent.tool_result`."""

    tool: str
    input: dict[str, Any] = Field(default_factory=dict)
    result: str = ""
    is_error: bool = False
    permission: Permission | None = None
    deny_message: str | None = None
    on_deny: list[Step] | None = None
    result_delay: float = Field(default=0.0, ge=0)
    """Seconds the tool runs: between the tool use (or its approval) and its result."""


class McpToolStep(_Step):
    """An MCP tool: `agent.mcp_tool_use` then `agent.mcp_tool_result`."""

    mcp_tool: str
    server: str
    input: dict[str, Any] = Field(default_factory=dict)
    result: str | None = None
    is_error: bool = False
    permission: Permission | None = None
    deny_message: str | None = None
    on_deny: list[Step] | None = None
    result_delay: float = Field(default=0.0, ge=0)


class CustomToolStep(_Step):
    """A custom tool: `agent.custom_tool_use`, idle `requires_action`, wait for the result."""

    custom_tool: str
    input: dict[str, Any] = Field(default_factory=dict)


class SleepStep(_Step):
    sleep: float = Field(ge=0)


class ErrorStep(_Step):
    error: str = "model_overloaded_error"
    retry_status: Literal["retrying", "exhausted", "terminal"] = "retrying"
    message: str | None = None
    mcp_server_name: str | None = None
    flush_queue: bool = True


class UsageDelta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation_5m_input_tokens: int = Field(default=0, ge=0)
    cache_creation_1h_input_tokens: int = Field(default=0, ge=0)
    active_seconds: float = Field(default=0.0, ge=0)
    web_search_requests: int = Field(default=0, ge=0)


class UsageStep(_Step):
    usage: UsageDelta


class DropStreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["close", "abort"] = "close"


class DropStreamStep(_Step):
    drop_stream: DropStreamOptions = Field(default_factory=DropStreamOptions)


STOP_REASONS = frozenset({"end_turn", "retries_exhausted", "refusal"})


class IdleStep(_Step):
    idle: str
    """end_turn | retries_exhausted | refusal; any other value is a stop reason newer than the
    installed SDK (emitted unvalidated, to test that the app copes)."""
    category: Literal["cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms"] | None = None
    explanation: str | None = None


class TerminateStep(_Step):
    terminate: dict[str, Any] = Field(default_factory=dict)


class EventStep(_Step):
    """Any event type of the installed SDK's union, shaped by the SDK's model."""

    event: str
    fields: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> EventStep:
        from app.sandbox.agents.events import PREVIEW_TYPES, sdk_event_types

        if self.event not in sdk_event_types():
            raise ValueError(f"{self.event!r} is not an event type of the installed anthropic SDK")
        if self.event in PREVIEW_TYPES:
            raise ValueError("previews come from message steps (deltas), not event steps")
        return self


class GraderUsage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    cache_read_input_tokens: int = Field(default=0, ge=0)
    cache_creation_input_tokens: int = Field(default=0, ge=0)


class EvaluateStep(_Step):
    """The grader's verdict on the current outcome (`user.define_outcome`)."""

    evaluate: Literal["satisfied", "needs_revision", "max_iterations_reached", "failed"] = "satisfied"
    explanation: str | None = None
    grader_usage: GraderUsage | None = None
    """The grader's tokens for this cycle (SDK BetaManagedAgentsSpanOutcomeEvaluationEndEvent.usage,
    a BetaManagedAgentsSpanModelUsage); default all zero."""


class MemoryStep(_Step):
    """The agent reads or writes a memory through its store's mount (`/mnt/memory/<slug>`):
    `agent.tool_use` `read`/`write` with the SDK's toolset inputs, then `agent.tool_result`; a
    write is a memory version by the session (`app/sandbox/agents/memory.py`). `store` picks
    an attached store by name, slug or id; null: the one holding the path (read), the first
    read_write one (write)."""

    memory: Literal["read", "write"]
    path: str
    content: str | None = None
    store: str | None = None
    permission: Permission | None = None


class SubagentStep(_Step):
    """The coordinator hands `task` to one of its predefined subagents: a session thread plays
    `steps` and answers with `reply` (default: its last tool result). See `threads.py`."""

    subagent: str
    task: str = "{user_text}"
    steps: list[Step] = Field(default_factory=list)
    reply: str | None = None


class ParallelStep(_Step):
    """Several tool calls from one model response: one idle lists every pending id."""

    parallel: list[Step]

    @model_validator(mode="after")
    def _only_tools(self) -> ParallelStep:
        for step in self.parallel:
            if not isinstance(step, ToolStep | McpToolStep | CustomToolStep):
                raise ValueError("parallel holds only tool, mcp_tool and custom_tool steps")
        return self


# Looked up in this order: `error` first, since an error step may carry a `message`.
_STEP_KEYS: dict[str, type[_Step]] = {
    "error": ErrorStep,
    "thinking": ThinkingStep,
    "message": MessageStep,
    "tool": ToolStep,
    "mcp_tool": McpToolStep,
    "custom_tool": CustomToolStep,
    "parallel": ParallelStep,
    "sleep": SleepStep,
    "usage": UsageStep,
    "drop_stream": DropStreamStep,
    "idle": IdleStep,
    "terminate": TerminateStep,
    "event": EventStep,
    "evaluate": EvaluateStep,
    "memory": MemoryStep,
    "subagent": SubagentStep,
}


_TOOL_STEPS = (ToolStep, McpToolStep, CustomToolStep)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in _STEP_KEYS:
            if key in value:
                return key
        return None
    for key, cls in _STEP_KEYS.items():
        if isinstance(value, cls):
            return key
    return None


Step = Annotated[
    Annotated[ThinkingStep, Tag("thinking")]
    | Annotated[MessageStep, Tag("message")]
    | Annotated[ToolStep, Tag("tool")]
    | Annotated[McpToolStep, Tag("mcp_tool")]
    | Annotated[CustomToolStep, Tag("custom_tool")]
    | Annotated[ParallelStep, Tag("parallel")]
    | Annotated[SleepStep, Tag("sleep")]
    | Annotated[ErrorStep, Tag("error")]
    | Annotated[UsageStep, Tag("usage")]
    | Annotated[DropStreamStep, Tag("drop_stream")]
    | Annotated[IdleStep, Tag("idle")]
    | Annotated[TerminateStep, Tag("terminate")]
    | Annotated[EventStep, Tag("event")]
    | Annotated[EvaluateStep, Tag("evaluate")]
    | Annotated[MemoryStep, Tag("memory")]
    | Annotated[SubagentStep, Tag("subagent")],
    Discriminator(_step_kind),
]

ToolStep.model_rebuild()
McpToolStep.model_rebuild()
ParallelStep.model_rebuild()
SubagentStep.model_rebuild()


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    match: str | None = None
    """A regex searched in the user message text; None matches every message."""
    steps: list[Step] = Field(default_factory=list)
    max_uses: int | None = None
    """Serve at most this many turns (None: unlimited)."""

    def matches(self, text: str) -> bool:
        return self.match is None or re.search(self.match, text, re.S) is not None


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)
    spans: bool = True
    """Wrap model output in `span.model_request_start` / `span.model_request_end` events."""
    default_deltas: int = 3
    status_lag: float = Field(default=0.0, ge=0, le=30)
    budget_resume_lag: float = Field(default=0.0, ge=0, le=30)
    """Seconds after each idle event during which retrieve still reads running and archive /
    delete answer 400 (client-patterns section 6)."""
    interrupt: Literal["immediate", "boundary"] = "immediate"
    """How `user.interrupt` ends a turn: cancel the step in progress, or let it finish
    (client-patterns section 3: the real API stops at a safe boundary)."""

    @classmethod
    def parse(cls, value: Scenario | dict[str, Any] | list[Any] | None) -> Scenario:
        """Accept a Scenario, its JSON dict, or a bare list of rules."""
        if value is None:
            return cls()
        if isinstance(value, Scenario):
            return value
        if isinstance(value, list):
            return cls.model_validate({"rules": value})
        return cls.model_validate(value)

    @classmethod
    def reply(cls, *steps: dict[str, Any], match: str | None = None) -> Scenario:
        """A one-rule scenario: `Scenario.reply({"message": "hi"})`."""
        return cls.model_validate({"rules": [{"match": match, "steps": list(steps)}]})

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=False)


def default_steps(text: str, deltas: int = 3) -> list[Step]:
    return [MessageStep(message=f"You asked: {text}", deltas=deltas)]


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class TurnRuntime(Protocol):
    """What the engine needs from the emulator's session (implemented in agents_state)."""

    def emit(self, event_type: str, **fields: Any) -> dict[str, Any]: ...

    def new_event_id(self) -> str: ...

    def preview_start(self, event_id: str, event_type: str) -> None: ...

    def preview_delta(self, event_id: str, text: str) -> None: ...

    def permission_for(
        self, kind: Literal["tool", "mcp_tool"], name: str, server: str | None
    ) -> Literal["always_allow", "always_ask", "auto"]: ...

    async def wait_actions(self, event_ids: list[str]) -> dict[str, dict[str, Any]]: ...

    async def check_budget(self) -> None: ...

    def add_usage(self, delta: UsageDelta, emit: bool = True) -> None: ...

    async def call_mcp(
        self,
        server: str,
        tool: str,
        tool_input: dict[str, Any],
        scripted: str | None,
        scripted_is_error: bool,
    ) -> tuple[str, bool]: ...

    def drop_streams(self, mode: str) -> None: ...

    def flush_queue(self) -> None: ...

    def terminate(self) -> None: ...

    def evaluate(self, result: str, explanation: str | None) -> None: ...

    async def run_subagent(self, step: SubagentStep, parent: TurnEngine) -> None: ...

    def memory_tool(
        self, op: str, store: str | None, path: str, content: str | None
    ) -> tuple[str, dict[str, Any], Callable[[], tuple[str, bool]]]: ...


class TurnEnded(Exception):
    """Raised inside the engine when a step ended the turn (idle, exhausted, terminate)."""


class TurnInterrupted(Exception):
    """Raised between steps after a `user.interrupt` under `interrupt: "boundary"`."""


@dataclass
class _Pending:
    step: ToolStep | McpToolStep | CustomToolStep
    event_id: str
    permission: Permission
    tool_input: dict[str, Any]


@dataclass
class TurnEngine:
    """Plays one turn's steps against a runtime. The runtime emits `session.status_running`
    before `run()` and an `end_turn` idle after it if `run()` returns normally."""

    runtime: TurnRuntime
    scenario: Scenario
    user_text: str
    turn: int = 1
    last_tool_result: str = ""
    interrupted: bool = False
    """Set by the runtime on `user.interrupt` under `interrupt: "boundary"`."""
    _span_id: str | None = None
    _span_usage: dict[str, int] = field(default_factory=dict)

    # -- templates ---------------------------------------------------------------------------

    def render(self, text: str) -> str:
        values = {
            "user_text": self.user_text,
            "last_tool_result": self.last_tool_result,
            "turn": str(self.turn),
        }
        return re.sub(r"\{(user_text|last_tool_result|turn)\}", lambda m: values[m.group(1)], text)

    def _render_input(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.render(value)
        if isinstance(value, dict):
            return {k: self._render_input(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._render_input(v) for v in value]
        return value

    # -- spans -------------------------------------------------------------------------------

    def _open_span(self) -> None:
        if self.scenario.spans and self._span_id is None:
            self._span_id = self.runtime.emit("span.model_request_start")["id"]
            self._span_usage = {}

    def close_span(self, is_error: bool = False) -> None:
        if self._span_id is None:
            return
        usage = self._span_usage
        self.runtime.emit(
            "span.model_request_end",
            model_request_start_id=self._span_id,
            is_error=is_error,
            model_usage={
                "input_tokens": usage.get("input_tokens", 0),
                "output_tokens": usage.get("output_tokens", 0),
                "cache_read_input_tokens": usage.get("cache_read_input_tokens", 0),
                "cache_creation_input_tokens": usage.get("cache_creation_input_tokens", 0),
                "speed": "standard",
            },
        )
        self._span_id = None
        self._span_usage = {}

    # -- running -----------------------------------------------------------------------------

    async def run(self, steps: list[Step]) -> None:
        """Play `steps`. Returns normally when the steps ran out (the runtime then ends the turn
        with `end_turn`); raises TurnEnded when a step ended the turn itself."""
        try:
            await self._run_steps(steps)
        finally:
            self.close_span()

    async def _run_steps(self, steps: list[Step]) -> None:
        for step in steps:
            if self.interrupted:  # a safe boundary: the step before has finished
                self.close_span()
                raise TurnInterrupted
            if isinstance(
                step, ThinkingStep | MessageStep | ToolStep | McpToolStep | CustomToolStep | ParallelStep | MemoryStep
            ):
                if self._span_id is None:
                    await self.runtime.check_budget()
                self._open_span()
            else:
                if not isinstance(step, UsageStep):
                    self.close_span()
            replacement = await self._run_step(step)
            if replacement is not None:
                await self._run_steps(replacement)
                return

    async def _run_step(self, step: Step) -> list[Step] | None:
        rt = self.runtime
        if isinstance(step, ThinkingStep):
            event_id = rt.new_event_id()
            rt.preview_start(event_id, "agent.thinking")
            rt.emit("agent.thinking", id=event_id)
        elif isinstance(step, MessageStep):
            await self._message(step)
        elif isinstance(step, ToolStep | McpToolStep | CustomToolStep):
            return await self._tools([step])
        elif isinstance(step, ParallelStep):
            return await self._tools([s for s in step.parallel if isinstance(s, _TOOL_STEPS)])
        elif isinstance(step, SleepStep):
            await asyncio.sleep(step.sleep)
        elif isinstance(step, UsageStep):
            self._usage(step.usage)
        elif isinstance(step, DropStreamStep):
            rt.drop_streams(step.drop_stream.mode)
        elif isinstance(step, ErrorStep):
            await self._error(step)
        elif isinstance(step, IdleStep):
            self.close_span()
            fields: dict[str, Any] = {"stop_reason": {"type": step.idle}}
            if step.idle == "refusal":
                details: dict[str, Any] = {"type": "refusal"}
                if step.category:
                    details["category"] = step.category
                if step.explanation:
                    details["explanation"] = step.explanation
                fields["stop_details"] = details
            if step.idle not in STOP_REASONS:
                fields["_unchecked"] = True
            rt.emit("session.status_idle", **fields)
            raise TurnEnded
        elif isinstance(step, TerminateStep):
            self.close_span()
            rt.terminate()
            raise TurnEnded
        elif isinstance(step, EventStep):
            from app.sandbox.agents.events import sample_event

            body = sample_event(step.event, **step.fields)
            given_id = step.fields.get("id")
            body.pop("id", None)
            body.pop("processed_at", None)
            body.pop("type", None)
            rt.emit(step.event, **({"id": given_id} if given_id else {}), **body)
        elif isinstance(step, MemoryStep):
            await self._memory(step)
        elif isinstance(step, EvaluateStep):
            self.close_span()
            grade = getattr(rt, "grade", None)  # the primary session's runtime reports the grader's usage
            if grade is not None:
                grade(step.evaluate, step.explanation, step.grader_usage.model_dump() if step.grader_usage else None)
            else:
                rt.evaluate(step.evaluate, step.explanation)
        elif isinstance(step, SubagentStep):
            await rt.run_subagent(step, self)
        return None

    async def _message(self, step: MessageStep) -> None:
        rt = self.runtime
        text = self.render(step.message)
        for _ in range(step.fail_attempts):
            # A model request that fails mid-answer: its preview is cut off, no buffered
            # agent.message follows, span.model_request_end closes it (docs: "Live previews").
            failed_id = rt.new_event_id()
            rt.preview_start(failed_id, "agent.message")
            for chunk in split_text(text, max(step.deltas, 1))[: step.fail_after]:
                rt.preview_delta(failed_id, chunk)
            self.close_span(is_error=True)
            from app.sandbox.agents.events import session_error_types

            rt.emit(
                "session.error",
                error={
                    "type": step.fail_error,
                    "message": f"emulated {step.fail_error}",
                    "retry_status": {"type": "retrying"},
                },
                _unchecked=step.fail_error not in session_error_types(),
            )
            rt.emit("session.status_rescheduled")
            rt.emit("session.status_running")
            self._open_span()
        event_id = rt.new_event_id()
        rt.preview_start(event_id, "agent.message")
        for chunk in split_text(text, step.deltas):
            if step.delta_delay:
                await asyncio.sleep(step.delta_delay)
            rt.preview_delta(event_id, chunk)
        rt.emit("agent.message", id=event_id, content=[{"type": "text", "text": text}])

    async def _memory(self, step: MemoryStep) -> None:
        rt = self.runtime
        content = self.render(step.content) if step.content is not None else None
        name, tool_input, run = rt.memory_tool(step.memory, step.store, self.render(step.path), content)
        permission = step.permission or (
            "ask" if rt.permission_for("tool", name, None) == "always_ask" else "allow"
        )
        event = rt.emit(
            "agent.tool_use", name=name, input=tool_input, evaluated_permission=permission,
            evaluation=self._evaluation(permission),
        )
        self.close_span()
        allowed = permission == "allow"
        if permission == "ask":
            answer = (await rt.wait_actions([event["id"]]))[event["id"]]
            allowed = answer.get("result") == "allow"
        text, is_error = run() if allowed else ("The tool call was denied.", True)
        rt.emit("agent.tool_result", tool_use_id=event["id"], content=[{"type": "text", "text": text}],
                is_error=is_error)
        self.last_tool_result = text

    def _usage(self, delta: UsageDelta) -> None:
        if self._span_id is not None:
            self._span_usage = {
                "input_tokens": delta.input_tokens,
                "output_tokens": delta.output_tokens,
                "cache_read_input_tokens": delta.cache_read_input_tokens,
                "cache_creation_input_tokens": delta.cache_creation_5m_input_tokens
                + delta.cache_creation_1h_input_tokens,
            }
            self.close_span()
        self.runtime.add_usage(delta)

    async def _error(self, step: ErrorStep) -> None:
        rt = self.runtime
        self.close_span(is_error=True)
        error: dict[str, Any] = {
            "type": step.error,
            "message": step.message or f"emulated {step.error}",
            "retry_status": {"type": step.retry_status},
        }
        if step.error.startswith("mcp_"):
            error["mcp_server_name"] = step.mcp_server_name or "unknown"
        if step.error == "credential_host_unreachable_error":
            error["credential_id"] = "vcrd_emulated"
            error["vault_id"] = "vlt_emulated"
        from app.sandbox.agents.events import session_error_types

        # An error type newer than the installed SDK is sent as is (to test that the app copes).
        rt.emit("session.error", error=error, _unchecked=step.error not in session_error_types())
        if step.retry_status == "retrying":
            rt.emit("session.status_rescheduled")
            rt.emit("session.status_running")
            return
        if step.flush_queue:
            rt.flush_queue()
        if step.retry_status == "exhausted":
            rt.emit("session.status_idle", stop_reason={"type": "retries_exhausted"})
        else:
            rt.terminate()
        raise TurnEnded

    # -- tools -------------------------------------------------------------------------------

    def _permission(self, step: ToolStep | McpToolStep) -> Permission:
        if step.permission is not None:
            return step.permission
        if isinstance(step, ToolStep):
            policy = self.runtime.permission_for("tool", step.tool, None)
        else:
            policy = self.runtime.permission_for("mcp_tool", step.mcp_tool, step.server)
        return "ask" if policy == "always_ask" else "allow"

    @staticmethod
    def _evaluation(permission: Permission) -> dict[str, Any]:
        if permission == "allow":
            return {"type": "always_allow"}
        if permission == "ask":
            return {"type": "always_ask"}
        return {"type": "auto", "evaluated_permission": {"type": "deny", "reason_code": "high_risk"}}

    def _emit_use(self, step: ToolStep | McpToolStep | CustomToolStep) -> _Pending:
        rt = self.runtime
        tool_input = self._render_input(step.input)
        if isinstance(step, CustomToolStep):
            event = rt.emit("agent.custom_tool_use", name=step.custom_tool, input=tool_input)
            return _Pending(step, event["id"], "ask", tool_input)
        permission = self._permission(step)
        common = {
            "input": tool_input,
            "evaluated_permission": permission,
            "evaluation": self._evaluation(permission),
        }
        if isinstance(step, ToolStep):
            event = rt.emit("agent.tool_use", name=step.tool, **common)
        else:
            event = rt.emit("agent.mcp_tool_use", name=step.mcp_tool, mcp_server_name=step.server, **common)
        return _Pending(step, event["id"], permission, tool_input)

    async def _tools(self, steps: list[ToolStep | McpToolStep | CustomToolStep]) -> list[Step] | None:
        uses = [self._emit_use(step) for step in steps]
        self.close_span()
        waiting = [u.event_id for u in uses if u.permission == "ask"]
        replacement: list[Step] | None = None
        # Calls that need no answer run first, as they would on the server.
        for use in uses:
            if use.permission == "allow":
                await self._run_tool(use)
            elif use.permission == "deny" and not isinstance(use.step, CustomToolStep):
                message = use.step.deny_message or "The tool call was denied by the permission policy."
                self._tool_result(use, message, True)
                if use.step.on_deny is not None and replacement is None:
                    replacement = list(use.step.on_deny)
        if waiting:
            answers = await self.runtime.wait_actions(waiting)
            for use in uses:
                if use.event_id not in answers:
                    continue
                answer = answers[use.event_id]
                if isinstance(use.step, CustomToolStep):
                    self.last_tool_result = content_text(answer.get("content"))
                elif answer.get("result") == "allow":
                    await self._run_tool(use)
                else:
                    message = answer.get("deny_message") or use.step.deny_message or ("The user denied this tool call.")
                    self._tool_result(use, message, True)
                    if use.step.on_deny is not None and replacement is None:
                        replacement = list(use.step.on_deny)
        return replacement

    async def _run_tool(self, use: _Pending) -> None:
        step = use.step
        if isinstance(step, ToolStep | McpToolStep) and step.result_delay:
            await asyncio.sleep(step.result_delay)
        if isinstance(step, ToolStep):
            if step.tool == "web_search":
                self.runtime.add_usage(UsageDelta(web_search_requests=1), emit=False)
            self._tool_result(use, self.render(step.result), step.is_error)
        elif isinstance(step, McpToolStep):
            scripted = self.render(step.result) if step.result is not None else None
            text, is_error = await self.runtime.call_mcp(
                step.server, step.mcp_tool, use.tool_input, scripted, step.is_error
            )
            self._tool_result(use, text, is_error)

    def _tool_result(self, use: _Pending, text: str, is_error: bool) -> None:
        content = [{"type": "text", "text": text}]
        if isinstance(use.step, McpToolStep):
            self.runtime.emit("agent.mcp_tool_result", mcp_tool_use_id=use.event_id, content=content, is_error=is_error)
        else:
            self.runtime.emit("agent.tool_result", tool_use_id=use.event_id, content=content, is_error=is_error)
        self.last_tool_result = text


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def split_text(text: str, parts: int) -> list[str]:
    """Split `text` into at most `parts` non-empty chunks that join back to `text`."""
    if parts <= 0 or not text:
        return []
    parts = min(parts, len(text))
    size, extra = divmod(len(text), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(text[start:end])
        start = end
    return chunks


def content_text(content: Any) -> str:
    """The text of a list of content blocks (text blocks joined with newlines)."""
    if not isinstance(content, list):
        return ""
    texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    return "\n".join(texts)


def pick_steps(scenario: Scenario, text: str, uses: dict[int, int]) -> list[Step]:
    """The steps for a user message: the first matching rule with uses left, else the default.
    `uses` counts how often each rule (by index) has served; it is updated."""
    for index, rule in enumerate(scenario.rules):
        if rule.max_uses is not None and uses.get(index, 0) >= rule.max_uses:
            continue
        if rule.matches(text):
            uses[index] = uses.get(index, 0) + 1
            return list(rule.steps)
    return default_steps(text, scenario.default_deltas)


McpCaller = Callable[[str, str, dict[str, Any], str | None], Awaitable[tuple[str, bool]]]
"""`mcp_caller(server_url, tool, input, bearer_token) -> (text, is_error)`."""
