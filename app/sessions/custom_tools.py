"""Answer the agent's custom tool calls (`tools/`): `agent.custom_tool_use` -> our handler ->
`user.custom_tool_result`.

Follower hooks: `agent.custom_tool_use` remembers the call (name, input) in Redis; the
`session.status_idle` with `requires_action` that follows lists the event ids waiting on us,
and the calls among them that are ours are run and answered in one send. Tool confirmations
in the same list are left for the approvers (`app.slack.approvals`).

Calls to a bridged MCP server's tools (`<server>__<tool>`, `app.sessions.bridge`) go to that
server with the environment's token. Their policies apply: a call that needs approval gets the
same Approve / Deny message as a cloud tool call, and `resolve` answers it when one is pressed.

Each call runs at most once: its result is kept under `sa:custom:<ticket>:<event id>` and a
replayed idle (catch-up after a restart) resends the kept result. A call whose worker died
while it ran is answered with an error saying it may or may not have happened.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anthropic
from slack_sdk.errors import SlackApiError

from app.render.blocks import approval_blocks
from app.render.describe import humanise, input_preview, key_argument
from app.render.slack_text import neutralise_mentions, truncate
from app.runtime import Services
from app.sessions import bridge
from app.sessions.follower import EventHook
from app.tickets.model import Ticket
from tools import custom_tools
from tools.base import CustomTool, ToolContext, ToolResult

log = logging.getLogger(__name__)

TTL_SECONDS = 30 * 24 * 3600
RUNNING = "running"


def _key(ticket_id: str, event_id: str, part: str) -> str:
    return f"sa:custom:{ticket_id}:{event_id}:{part}"


class CustomToolRunner:
    def __init__(self, services: Services, tools: dict[str, CustomTool] | None = None) -> None:
        self.services = services
        self.redis = services.redis
        self.tools = tools if tools is not None else custom_tools()

    def hooks(self) -> dict[str, EventHook]:
        return {"agent.custom_tool_use": self.on_use, "session.status_idle": self.on_idle}

    async def on_use(self, ticket: Ticket, event: Any) -> None:
        call = {"name": str(getattr(event, "name", "")), "input": getattr(event, "input", None) or {}}
        await self.redis.set(_key(ticket.id, event.id, "use"), json.dumps(call, default=str), ex=TTL_SECONDS)

    async def on_idle(self, ticket: Ticket, event: Any) -> None:
        stop = getattr(event, "stop_reason", None)
        if stop is None or getattr(stop, "type", None) != "requires_action" or not ticket.session_id:
            return
        answers: list[dict[str, Any]] = []
        for event_id in getattr(stop, "event_ids", None) or []:
            call = await self.call_of(ticket.id, event_id)
            if call is None:
                continue  # a tool confirmation, not ours to answer
            bridged = bridge.resolve(self.services.config, ticket.environment, call["name"])
            decided = await self.redis.exists(_key(ticket.id, event_id, "result"))
            if bridged is not None and bridged.needs_approval and not decided:
                await self._ask(ticket, event_id, call, bridged)
                continue  # an approver's Approve / Deny answers it (`resolve`)
            answers.append(_answer(event_id, await self._result(ticket, event_id, call)))
        if not answers:
            return
        try:
            await self._send(ticket, answers)
        except anthropic.BadRequestError as exc:
            # Already answered (a lost response, then a replay), or the turn was interrupted.
            log.info("custom tool results not accepted", extra={"ticket": ticket.id, "error": str(exc)[:200]})

    async def call_of(self, ticket_id: str, event_id: str) -> dict[str, Any] | None:
        """The custom tool call behind a tool-use event id, if it is one of ours."""
        raw = await self.redis.get(_key(ticket_id, event_id, "use"))
        return json.loads(raw) if raw else None

    async def resolve(
        self, ticket: Ticket, event_id: str, allow: bool, deny_message: str | None = None
    ) -> ToolResult | None:
        """An approver's answer to a bridged call waiting for approval: run it (allow) or refuse it,
        and send the result. None when the event is not one of our calls. API errors propagate."""
        call = await self.call_of(ticket.id, event_id)
        if call is None or not ticket.session_id:
            return None
        if allow:
            result = await self._result(ticket, event_id, call)
        else:
            result = await self._keep(
                ticket, event_id, ToolResult(deny_message or "A human approver denied this tool call.", is_error=True)
            )
        await self._send(ticket, [_answer(event_id, result)])
        return result

    async def _send(self, ticket: Ticket, answers: list[dict[str, Any]]) -> None:
        assert ticket.session_id
        await self.services.anthropic.beta.sessions.events.send(ticket.session_id, events=answers)  # type: ignore[arg-type]

    async def _ask(self, ticket: Ticket, event_id: str, call: dict[str, Any], bridged: bridge.BridgedCall) -> None:
        """Post Approve / Deny for a bridged call (once per call, replays included)."""
        if not await self.redis.set(_key(ticket.id, event_id, "asked"), "1", nx=True, ex=TTL_SECONDS):
            return
        arg = key_argument(call["input"])
        title = f"{bridged.server_name} · {humanise(bridged.tool)}" + (f": “{truncate(arg, 60)}”" if arg else "")
        blocks = approval_blocks(ticket.id, event_id, neutralise_mentions(title), input_preview(call["input"]))
        try:
            await self.services.slack.chat_postMessage(
                channel=ticket.channel_id, thread_ts=ticket.thread_ts, text=f"Approval needed: {title}", blocks=blocks
            )
        except SlackApiError as exc:
            await self.redis.delete(_key(ticket.id, event_id, "asked"))
            log.warning("approval request not posted", extra={"ticket": ticket.id, "error": exc.response.get("error")})

    async def _keep(self, ticket: Ticket, event_id: str, result: ToolResult) -> ToolResult:
        """Store a decided result unless one is kept already (then that one wins)."""
        key = _key(ticket.id, event_id, "result")
        value = json.dumps({"text": result.text, "is_error": result.is_error})
        if not await self.redis.set(key, value, nx=True, ex=TTL_SECONDS):
            kept = await self.redis.get(key)
            if kept and kept != RUNNING:
                data = json.loads(kept)
                return ToolResult(str(data["text"]), bool(data["is_error"]))
        return result

    async def _result(self, ticket: Ticket, event_id: str, call: dict[str, Any]) -> ToolResult:
        key = _key(ticket.id, event_id, "result")
        if not await self.redis.set(key, RUNNING, nx=True, ex=TTL_SECONDS):
            kept = await self.redis.get(key)
            if kept and kept != RUNNING:
                data = json.loads(kept)
                return ToolResult(str(data["text"]), bool(data["is_error"]))
            return ToolResult(
                f"The {call['name']} call was interrupted (the worker restarted) and may or may not have taken "
                "effect. Check the thread before calling it again.",
                is_error=True,
            )
        tool = self.tools.get(call["name"])
        bridged = bridge.resolve(self.services.config, ticket.environment, call["name"])
        if bridged is not None and tool is None:
            text, is_error = await bridge.call(bridged, call["input"])
            result = ToolResult(text, is_error)
        elif tool is None:
            result = ToolResult(f"Unknown tool {call['name']!r}; it is not available here.", is_error=True)
        else:
            ctx = ToolContext(self.services, ticket, event_id)
            try:
                result = await tool.call(ctx, call["input"])
            except Exception:
                log.exception("custom tool failed", extra={"ticket": ticket.id, "tool": call["name"]})
                result = ToolResult(
                    f"The {call['name']} tool failed unexpectedly. Do not retry it; tell the requester and "
                    "escalate if needed.",
                    is_error=True,
                )
        await self.redis.set(key, json.dumps({"text": result.text, "is_error": result.is_error}), ex=TTL_SECONDS)
        log.info(
            "custom tool answered",
            extra={"ticket": ticket.id, "tool": call["name"], "is_error": result.is_error},
        )
        return result


def _answer(event_id: str, result: ToolResult) -> dict[str, Any]:
    return {
        "type": "user.custom_tool_result",
        "custom_tool_use_id": event_id,
        "content": [{"type": "text", "text": result.text}],
        "is_error": result.is_error,
    }
