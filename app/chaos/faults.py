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
ROTATION_WINDOW = (-0.5, 0.6)


@dataclass
class FaultPoint:
    kind: str
    phase: str
    found: bool  # the wanted phase was found (else: any ticket mid-turn)
    ticket: int
    hit: list[int] = field(default_factory=list)
    detail: str = ""
    at: float = 0.0  # seconds into the run


class Injector:
    """Finds a ticket in a wanted phase and injects the fault there."""

    def __init__(self, tickets: Tickets, rng: random.Random, keep_busy: Callable[[], Awaitable[None]]) -> None:
        self.tickets = tickets
        self.world = tickets.world
        self.rng = rng
        self.keep_busy = keep_busy
        self.points: list[FaultPoint] = []
        self.started = time.monotonic()

    def _in_phase(self, kind: str, ticket: Ticket, phase: str) -> bool:
        now, _ = self.tickets.phase(ticket)
        if phase == ROTATION:  # any stream older than the rotation time rotates at its next flush
            return now in (DELTAS, TOOL) and self._holder_ok(kind, ticket, now) and self.tickets.rotating(
                ticket, ROTATION_WINDOW
            )
        if phase == "slow_list":  # a tool runs: the next message starts while the listing is slow
            return now == TOOL and self._streams(ticket) > 0
        return now == phase and self._holder_ok(kind, ticket, now)

    def _holder_ok(self, kind: str, ticket: Ticket, now: str | None) -> bool:
        """For a takeover: a live worker to kill (while waiting on an approval no lease is held:
        the worker that last followed the ticket). For a drop: an open event stream to cut."""
        if kind == "drop":
            return self._streams(ticket) > 0
        if kind != "takeover":
            return True
        holder = ticket.holder if now != APPROVAL else ticket.last_holder
        return holder is not None and self.world.alive(holder)

    def _mid_turn(self, kind: str, ticket: Ticket) -> bool:
        now, _ = self.tickets.phase(ticket)
        return now is not None and self._holder_ok(kind, ticket, now)

    def _streams(self, ticket: Ticket) -> int:
        """How many event streams of the ticket's session are open."""
        state = self.world.stack.agents.state
        session = ticket.session_id
        if session is None:
            return 0
        return int(state.call(lambda: len(getattr(state.sessions.get(session), "subscribers", ()) or ())))

    async def _find(self, kind: str, phase: str, timeout: float) -> tuple[Ticket, bool] | None:
        deadline = time.monotonic() + timeout
        fallback_at = time.monotonic() + timeout / 2
        while time.monotonic() < deadline:
            await self.keep_busy()
            candidates = [t for t in self.tickets.open if await asyncio.to_thread(self._in_phase, kind, t, phase)]
            if candidates:
                return self.rng.choice(candidates), True
            if time.monotonic() > fallback_at:
                busy = [t for t in self.tickets.open if await asyncio.to_thread(self._mid_turn, kind, t)]
                if busy:
                    return self.rng.choice(busy), False
            await asyncio.sleep(0.05)
        return None

    async def run(self, kinds: list[str], gaps: dict[str, tuple[float, float]], timeout: float = 40.0) -> None:
        """Inject one fault of each kind in `kinds` (takeover | drop | redis), in order; each kind
        goes through its phases in a seeded order."""
        orders = {kind: self.rng.sample(PHASES[kind], len(PHASES[kind])) for kind in PHASES}
        done = dict.fromkeys(PHASES, 0)
        for kind in kinds:
            phase = orders[kind][done[kind] % len(orders[kind])]
            done[kind] += 1
            for _ in range(20):  # a fault that found nothing to hit (a stream already gone) is retried
                found = await self._find(kind, phase, timeout)
                if found is None:
                    continue
                ticket, exact = found
                if phase not in (ROTATION, APPROVAL, "slow_list"):
                    await asyncio.sleep(self.rng.uniform(0.0, 0.3))
                point = FaultPoint(kind, phase if exact else f"{phase}~any", exact, ticket.plan.number,
                                   at=round(time.monotonic() - self.started, 2))
                if await getattr(self, f"_{kind}")(ticket, point):
                    self.points.append(point)
                    break
                await self._pause(0.3)
            await self._pause(self.rng.uniform(*gaps[kind]))

    async def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.keep_busy()
            await asyncio.sleep(0.1)

    # -- the faults ----------------------------------------------------------------------------

    async def _takeover(self, ticket: Ticket, point: FaultPoint) -> bool:
        await asyncio.to_thread(self.tickets.poll)
        victim = ticket.holder or ticket.last_holder
        if victim is None or not self.world.alive(victim):
            return False
        hit = [t for t in self.tickets.open if victim in (t.holder, t.last_holder if t is ticket else None)]
        self.world.kill(victim)
        slot = self.world.slot_of(victim)
        point.detail = f"killed {victim}"
        point.hit = [t.plan.number for t in hit]
        for t in hit:
            t.hit.append(f"{point.kind}:{point.phase}")
        if slot is not None:
            self.world.restart_worker(slot)  # on this thread: children die with the thread that forks them
        return True

    async def _drop(self, ticket: Ticket, point: FaultPoint) -> bool:
        agents = self.world.stack.agents
        session = ticket.session_id
        if session is None or not self._streams(ticket):
            return False
        if point.phase.startswith("slow_list"):
            delay = round(self.rng.uniform(1.0, 2.5), 2)
            agents.fail_next("GET", rf"^/v1/sessions/{session}/events$", 0, count=1, delay=delay)
            point.detail = f"slow list {delay}s"
        mode = self.rng.choice(("close", "abort"))
        dropped = agents.drop_streams(session, mode)
        point.detail = f"{point.detail} {mode} x{dropped}".strip()
        if not dropped:
            return False
        point.hit = [ticket.plan.number]
        ticket.hit.append(f"{point.kind}:{point.phase}")
        return True

    async def _redis(self, ticket: Ticket, point: FaultPoint) -> bool:
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
            t.hit.append(f"{point.kind}:{point.phase}")
        return True
