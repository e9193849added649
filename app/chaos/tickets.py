"""The tickets of a run: opening them, where each one's turn is, approving, knowing when it is over.

Where a turn is comes from the emulators' own state, never from the app: the Managed Agents
session (a tool call waiting on an approval, a tool running between use and result, else the
agent streaming a message) and Slack (a live stream near its rotation time).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from app.chaos.script import TicketPlan, scenario
from app.chaos.views import TOOL_USES
from app.chaos.world import CHANNEL, STAFF, World

DELTAS, TOOL, ROTATION, APPROVAL = "deltas", "tool", "rotation", "approval"
RESULTS = {"agent.tool_result": "tool_use_id", "agent.mcp_tool_result": "mcp_tool_use_id"}


@dataclass
class Ticket:
    plan: TicketPlan
    ts: str = ""
    ticket_id: str | None = None
    session_id: str | None = None
    holder: str | None = None
    last_holder: str | None = None
    hit: list[str] = field(default_factory=list)
    asked: dict[str, float] = field(default_factory=dict)  # pending tool use id -> first seen
    approved: set[str] = field(default_factory=set)
    approvals_unshown: int = 0
    ended_at: float | None = None
    quiet_since: float = 0.0
    digest: str = ""
    done: bool = False


def session_phase(runtime: Any) -> tuple[str | None, bool]:
    """(phase, turn over) of an emulated session (`agents_session.SessionRuntime`); runs on the
    emulator's loop."""
    events = runtime.events
    messages = [e for e in events if e.get("type") == "agent.message"]
    last_idle = next((e for e in reversed(events) if e.get("type") == "session.status_idle"), None)
    over = (
        runtime.worker is None and last_idle is not None
        and (last_idle.get("stop_reason") or {}).get("type") == "end_turn" and bool(messages)
    )
    if runtime.pending:
        return APPROVAL, over
    if runtime.status != "running":
        return None, over
    done = {e.get(key) for e in events for t, key in RESULTS.items() if e.get("type") == t}
    if any(e.get("type") in TOOL_USES and e["id"] not in done for e in events):
        return TOOL, over
    return DELTAS, over


def _digest(thread: list[dict[str, Any]]) -> str:
    """What a thread shows, as a hash (a live stream's age left out: it changes by itself)."""
    for msg in thread:
        if isinstance(msg.get("stream"), dict):
            msg["stream"].pop("age", None)
    return hashlib.sha1(json.dumps(thread, sort_keys=True, default=str).encode()).hexdigest()


class Tickets:
    def __init__(self, world: World, *, approve_after: tuple[float, float] = (0.8, 2.5)) -> None:
        self.world = world
        self.plans: list[TicketPlan] = []
        self.all: list[Ticket] = []
        self.approve_after = approve_after
        self.rng_seed = 0

    @property
    def open(self) -> list[Ticket]:
        return [t for t in self.all if not t.done]

    async def open_ticket(self, plan: TicketPlan) -> Ticket:
        self.plans.append(plan)
        self.world.stack.agents.set_scenario(scenario(self.plans))
        ticket = Ticket(plan)
        ticket.ts = await self.world.stack.slack.user_posts(CHANNEL, plan.question, user=STAFF)
        self.all.append(ticket)
        return ticket

    # -- where each ticket is ----------------------------------------------------------------

    def _runtime(self, session_id: str) -> Any:
        return self.world.stack.agents.state.sessions.get(session_id)

    def phase(self, ticket: Ticket) -> tuple[str | None, bool]:
        if ticket.session_id is None:
            return None, False
        state = self.world.stack.agents.state

        def read() -> tuple[str | None, bool]:
            runtime = self._runtime(ticket.session_id or "")
            return session_phase(runtime) if runtime is not None else (None, False)

        return state.call(read)

    def rotating(self, ticket: Ticket, window: tuple[float, float]) -> bool:
        """A live stream of the ticket's thread whose age is within `window` seconds of the
        renderer's rotation time."""
        rotate = self.world.rotate_after
        for msg in self.world.stack.slack.state.thread(CHANNEL, ticket.ts):
            stream = msg.get("stream")
            if stream and stream.get("state") == "streaming":
                if rotate + window[0] <= float(stream.get("age", 0)) <= rotate + window[1]:
                    return True
        return False

    def thread(self, ticket: Ticket) -> list[dict[str, Any]]:
        return self.world.stack.slack.state.thread(CHANNEL, ticket.ts)

    def poll(self) -> None:
        """Refresh each open ticket's ids, lease holder and whether it is over."""
        now = time.monotonic()
        for ticket in self.open:
            if ticket.ticket_id is None or ticket.session_id is None:
                record = self.world.ticket_of(ticket.ts)
                if record:
                    ticket.ticket_id = record.get("id")
                    ticket.session_id = record.get("session_id")
            if ticket.ticket_id is not None:
                ticket.holder = self.world.lease_holder(ticket.ticket_id)
                if ticket.holder:
                    ticket.last_holder = ticket.holder
            digest = _digest(self.thread(ticket))
            if digest != ticket.digest:
                ticket.digest, ticket.quiet_since = digest, now
            _, over = self.phase(ticket)
            if not over:
                ticket.ended_at = None
                continue
            ticket.ended_at = ticket.ended_at or now
            if ticket.ticket_id is None or ticket.holder is not None:
                continue
            if self.world.is_active(ticket.ticket_id) is False and now - ticket.quiet_since >= 1.5:
                ticket.done = True

    # -- approvals -----------------------------------------------------------------------------

    def _pending(self, ticket: Ticket) -> list[str]:
        if ticket.session_id is None:
            return []
        return self.world.stack.agents.state.call(
            lambda: list(getattr(self._runtime(ticket.session_id or ""), "pending", {}) or {})
        )

    def _button(self, ticket: Ticket, tool_use_id: str) -> dict[str, Any] | None:
        """The newest message with an Approve button for `tool_use_id`."""
        for msg in reversed(self.thread(ticket)):
            for block in msg.get("blocks") or []:
                for el in block.get("elements") or []:
                    if el.get("action_id") == "tool_approve" and tool_use_id in str(el.get("value")):
                        return msg
        return None

    async def approve(self, rng_uniform: Any, unshown_after: float = 25.0) -> None:
        """Press Approve on tool calls that have waited their (seeded) time. A call whose
        buttons never show is approved through the API (and counted) so the turn can end."""
        now = time.monotonic()
        for ticket in self.open:
            for use_id in self._pending(ticket):
                if use_id in ticket.approved:
                    continue
                first = ticket.asked.setdefault(use_id, now + rng_uniform(*self.approve_after))
                if now < first:
                    continue
                msg = self._button(ticket, use_id)
                if msg is not None:
                    ticket.approved.add(use_id)
                    await self.world.stack.slack.click(CHANNEL, msg["ts"], "tool_approve", user=STAFF)
                elif now - first > unshown_after:
                    ticket.approved.add(use_id)
                    ticket.approvals_unshown += 1
                    await self._approve_by_api(ticket, use_id)

    async def _approve_by_api(self, ticket: Ticket, use_id: str) -> None:
        client = self.world.stack.agents.client()
        try:
            await client.beta.sessions.events.send(
                ticket.session_id or "",
                events=[{"type": "user.tool_confirmation", "tool_use_id": use_id, "result": "allow"}],
            )
        finally:
            await client.close()

    async def settle(self, timeout: float, rng_uniform: Any) -> None:
        """Wait until every ticket is over and Slack is quiet (or `timeout`)."""
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            await asyncio.to_thread(self.poll)
            await self.approve(rng_uniform)
            await asyncio.sleep(0.2)
