"""Synthetic agent turns: the SDK's own event types, timed like a live session stream.

Used by the streaming benchmark and the renderer tests. Events are built with the `anthropic`
SDK's models (`BetaManagedAgentsStreamSessionEvents`), so the renderer sees exactly what the
session follower hands it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from anthropic._models import construct_type
from anthropic.types.beta.sessions import BetaManagedAgentsStreamSessionEvents

from app.render.base import Renderer
from app.tickets.model import Ticket

PROCESSED_AT = "2026-01-01T00:00:00Z"

_WORDS = (
    "the vpn gateway certificate expired overnight so clients fail the handshake and retry "
    "we rotated the key checked the load balancer logs confirmed the health probe and asked "
    "networking to renew it before the next maintenance window customers in europe saw most "
    "errors because their region pins the older endpoint"
).split()


def event(etype: str, **fields: Any) -> Any:
    """One stream event of type `etype`, as the SDK parses it."""
    value: dict[str, Any] = {"type": etype, **fields}
    if etype not in ("event_start", "event_delta"):
        value.setdefault("processed_at", PROCESSED_AT)
    return construct_type(type_=BetaManagedAgentsStreamSessionEvents, value=value)


def start(mid: str, kind: str = "agent.message") -> Any:
    return event("event_start", event={"type": kind, "id": mid})


def delta(mid: str, text: str, index: int = 0) -> Any:
    return event(
        "event_delta",
        event_id=mid,
        delta={"type": "content_delta", "index": index, "content": {"type": "text", "text": text}},
    )


def message(mid: str, text: str) -> Any:
    return event("agent.message", id=mid, content=[{"type": "text", "text": text}])


def text_result(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def prose(chars: int, rng: random.Random, *, code_every: int = 4) -> str:
    """Markdown-ish text of about `chars` characters: paragraphs, sometimes a code block."""
    paragraphs: list[str] = []
    total = 0
    while total < chars:
        if paragraphs and len(paragraphs) % code_every == 0:
            body = "\n".join(f"$ {' '.join(rng.choices(_WORDS, k=4))}" for _ in range(3))
            para = f"```\n{body}\n```"
        else:
            para = " ".join(rng.choices(_WORDS, k=rng.randint(25, 60))).capitalize() + "."
        paragraphs.append(para)
        total += len(para) + 2
    return "\n\n".join(paragraphs)[:chars].rstrip() + "."


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


@dataclass
class Step:
    at: float  # seconds after the turn starts
    event: Any
    preview: bool = False  # event_start / event_delta: goes to `Renderer.delta`


@dataclass
class Turn:
    steps: list[Step] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # the agent's texts, in order

    @property
    def content_events(self) -> int:
        """Events that put something new in the thread (deltas, tool calls and results)."""
        kinds = ("event_delta", "agent.tool_use", "agent.tool_result", "agent.mcp_tool_use",
                 "agent.mcp_tool_result", "agent.custom_tool_use")
        return sum(1 for s in self.steps if s.event.type in kinds)


def synthetic_turn(
    key: str,
    *,
    tool_calls: int = 6,
    answer_chars: int = 2_400,
    delta_chars: int = 40,
    seconds: float = 4.0,
    seed: int | None = None,
    intro: str | None = None,
    answer: str | None = None,
) -> Turn:
    """running -> a short intro streamed in deltas -> tool calls (built-in, MCP, custom) with
    results -> a long streamed answer -> idle. Event ids start with `key`; the whole turn
    spans about `seconds`."""
    rng = random.Random(seed if seed is not None else key)
    turn = Turn()
    ids = iter(range(1, 1_000_000))

    def nid() -> str:
        return f"sevt_{key}_{next(ids)}"

    intro = intro if intro is not None else "Let me check what is going on with the VPN."
    answer = answer if answer is not None else prose(answer_chars, rng)
    intro_share, tools_share = 0.1, 0.4
    t = 0.0
    turn.steps.append(Step(t, event("session.status_running", id=nid())))
    turn.steps.append(Step(t, event("agent.thinking", id=nid())))

    def stream_text(text: str, begin: float, span: float) -> None:
        mid = nid()
        parts = pieces(text, delta_chars)
        turn.steps.append(Step(begin, start(mid), preview=True))
        for i, part in enumerate(parts):
            turn.steps.append(Step(begin + span * (i + 1) / len(parts), delta(mid, part), preview=True))
        turn.steps.append(Step(begin + span, message(mid, text)))
        turn.messages.append(text)

    stream_text(intro, 0.05 * seconds, intro_share * seconds)
    t = (0.05 + intro_share) * seconds
    step = tools_share * seconds / max(1, tool_calls)
    for i in range(tool_calls):
        use = nid()
        kind = i % 3
        if kind == 0:
            ev = event("agent.tool_use", id=use, name="bash", input={"command": f"ping -c 1 gw{i}"})
            res = event("agent.tool_result", id=nid(), tool_use_id=use, content=text_result(f"gw{i} ok"))
        elif kind == 1:
            ev = event("agent.mcp_tool_use", id=use, name="search_issues", mcp_server_name="tickets",
                       input={"query": f"vpn {i}"})
            res = event("agent.mcp_tool_result", id=nid(), mcp_tool_use_id=use,
                        content=text_result(f"{i + 2} similar tickets"))
        else:
            ev = event("agent.custom_tool_use", id=use, name="lookup_customer", input={"id": f"C-{i}"})
            res = None
        turn.steps.append(Step(t, ev))
        if res is not None:
            turn.steps.append(Step(t + step * 0.8, res))
        t += step
    stream_text(answer, t, (1 - 0.05 - intro_share - tools_share) * seconds)
    turn.steps.append(
        Step(seconds, event("session.status_idle", id=nid(), stop_reason={"type": "end_turn"}))
    )
    turn.steps.sort(key=lambda s: s.at)
    return turn


async def play(
    renderer: Renderer,
    ticket: Ticket,
    turn: Turn,
    *,
    stop_reason: str | None = "end_turn",
    on_emit: Callable[[Any, float], None] | None = None,
) -> None:
    """Feed a turn's events to a renderer on their schedule, as the session follower does,
    then end the turn (unless `stop_reason` is None)."""
    t0 = time.monotonic()
    for step in turn.steps:
        target = t0 + step.at
        delay = target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if on_emit is not None:
            on_emit(step.event, target)
        if step.preview:
            await renderer.delta(ticket, step.event)
        else:
            await renderer.event(ticket, step.event, replay=False)
    if stop_reason is not None:
        await renderer.turn_ended(ticket, stop_reason)
