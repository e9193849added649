"""The faults, each at a seeded random moment mid-turn, in one of the phases a turn goes through:

- takeover: SIGKILL the worker holding the lease of a ticket that is streaming deltas, between a
  tool's use and its result, rotating its stream, or waiting on an approval (no lease is held
  then: the worker that last followed it); a new worker takes the dead one's place at once.
- drop: cut the ticket's event stream (clean close or abort), in the same phases; on some drops
  the next history listing of the session is slow first (the catch-up races the live stream).
- redis: stop (SIGTERM) or crash (SIGKILL) the Redis server, keep it down a moment, start it again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.chaos.tickets import APPROVAL, DELTAS, ROTATION, TOOL, Ticket, Tickets

PHASES = {
    "takeover": (DELTAS, TOOL, ROTATION, APPROVAL),
    "drop": (DELTAS, TOOL, ROTATION, "slow_list"),
    "redis": (DELTAS, TOOL, ROTATION, APPROVAL),
}
ROTATION_WINDOW = (-0.4, 0.4)


@dataclass
class FaultPoint:
    phase: str
    found: bool  # the wanted phase was found (else: any ticket mid-turn)
    ticket: int
    hit: list[int] = field(default_factory=list)
    detail: str = ""


class Injector:
    """Finds a ticket in a wanted phase and injects the fault there."""

    def __init__(
        self, mode: str, tickets: Tickets, rng: random.Random, keep_busy: Callable[[], Awaitable[None]]
    ) -> None:
        self.mode = mode
        self.tickets = tickets
        self.world = tickets.world
        self.rng = rng
        self.keep_busy = keep_busy
        self.points: list[FaultPoint] = []

    def _in_phase(self, ticket: Ticket, phase: str) -> bool:
        now, _ = self.tickets.phase(ticket)
        if phase == ROTATION:
            return now == DELTAS and ticket.plan.rotation and self.tickets.rotating(ticket, ROTATION_WINDOW)
        if phase == "slow_list":
            return now == DELTAS
        if now != phase:
            return False
        if self.mode == "takeover":
            holder = ticket.holder if phase != APPROVAL else ticket.last_holder
            return holder is not None and self.world.alive(holder)
        return True

    def _mid_turn(self, ticket: Ticket) -> bool:
        now, _ = self.tickets.phase(ticket)
        return now is not None and (self.mode != "takeover" or bool(ticket.holder and self.world.alive(ticket.holder)))

    async def _find(self, phase: str, timeout: float) -> tuple[Ticket, bool] | None:
        deadline = time.monotonic() + timeout
        fallback_at = time.monotonic() + timeout / 2
        while time.monotonic() < deadline:
            await self.keep_busy()
            candidates = [t for t in self.tickets.open if await asyncio.to_thread(self._in_phase, t, phase)]
            if candidates:
                return self.rng.choice(candidates), True
            if time.monotonic() > fallback_at:
                busy = [t for t in self.tickets.open if await asyncio.to_thread(self._mid_turn, t)]
                if busy:
                    return self.rng.choice(busy), False
            await asyncio.sleep(0.05)
        return None

    async def run(self, count: int, gap: tuple[float, float], timeout: float = 40.0) -> None:
        order = list(PHASES[self.mode])
        self.rng.shuffle(order)
        for k in range(count):
            phase = order[k % len(order)]
            found = await self._find(phase, timeout)
            if found is None:
                continue
            ticket, exact = found
            if phase not in (ROTATION, APPROVAL):
                await asyncio.sleep(self.rng.uniform(0.0, 0.3))
            point = FaultPoint(phase if exact else f"{phase}~any", exact, ticket.plan.number)
            await getattr(self, f"_{self.mode}")(ticket, point)
            self.points.append(point)
            await self._pause(self.rng.uniform(*gap))

    async def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.keep_busy()
            await asyncio.sleep(0.1)

    # -- the faults ----------------------------------------------------------------------------

    async def _takeover(self, ticket: Ticket, point: FaultPoint) -> None:
        await asyncio.to_thread(self.tickets.poll)
        victim = ticket.holder or ticket.last_holder
        if victim is None or not self.world.alive(victim):
            return
        hit = [t for t in self.tickets.open if victim in (t.holder, t.last_holder if t is ticket else None)]
        self.world.kill(victim)
        slot = self.world.slot_of(victim)
        point.detail = f"killed {victim}"
        point.hit = [t.plan.number for t in hit]
        for t in hit:
            t.hit.append(point.phase)
        if slot is not None:
            self.world.restart_worker(slot)  # on this thread: children die with the thread that forks them

    async def _drop(self, ticket: Ticket, point: FaultPoint) -> None:
        agents = self.world.stack.agents
        session = ticket.session_id
        if session is None:
            return
        if point.phase.startswith("slow_list"):
            delay = round(self.rng.uniform(1.0, 2.5), 2)
            agents.fail_next("GET", rf"^/v1/sessions/{session}/events$", 0, count=1, delay=delay)
            point.detail = f"slow list {delay}s"
        mode = self.rng.choice(("close", "abort"))
        dropped = agents.drop_streams(session, mode)
        point.detail = f"{point.detail} {mode} x{dropped}".strip()
        point.hit = [ticket.plan.number]
        ticket.hit.append(point.phase)

    async def _redis(self, ticket: Ticket, point: FaultPoint) -> None:
        server = self.world.redis_server
        hit = [t for t in self.tickets.open if self.tickets.phase(t)[0] is not None]
        crash = self.rng.random() < 0.5
        outage = round(self.rng.uniform(0.3, 2.0), 2)
        # Not in a worker thread: a child gets PR_SET_PDEATHSIG when the *thread* that forked it ends.
        (server.kill if crash else server.stop)()
        await asyncio.sleep(outage)
        server.start()
        point.detail = f"{'SIGKILL' if crash else 'SIGTERM'} down {outage}s"
        point.hit = [t.plan.number for t in hit]
        for t in hit:
            t.hit.append(point.phase)
