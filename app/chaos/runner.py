"""One chaos run: start the world, keep tickets going, inject the faults, let every turn end, then
compare each ticket's agent record with its Slack thread and sum the figures."""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.chaos.faults import Injector
from app.chaos.figures import Figures, ticket_figures
from app.chaos.script import plan_ticket
from app.chaos.tickets import Tickets
from app.chaos.world import World


@dataclass
class RunOptions:
    mode: str  # takeover | drop | redis | mixed
    faults: list[str]  # the fault of each kill point, in order: takeover | drop | redis
    seed: int
    concurrency: int = 3
    rotate_after: float = 3.0
    lease_seconds: float = 3.0
    settle_timeout: float = 120.0
    scale: float = 1.0  # stretches (or shrinks) every agent turn's durations
    gap_scale: float = 1.0  # stretches (or shrinks) the pauses between faults
    keep: Path | None = None  # keep the run's folder (logs) here instead of a temporary one


GAPS = {"takeover": (0.5, 2.0), "drop": (0.3, 1.2), "redis": (2.0, 4.0)}


class Run:
    def __init__(self, options: RunOptions, world: World, first_number: int = 1) -> None:
        self.options = options
        self.world = world
        self.rng = random.Random(f"{options.mode}:{options.seed}")
        self.tickets = Tickets(world)
        self.next_number = first_number
        self.opening = True

    def _plan(self) -> Any:
        n = self.next_number
        self.next_number += 1
        rng = random.Random(f"{self.options.seed}:{n}")
        # Every other ticket waits on an approval; every other one streams past a rotation.
        return plan_ticket(n, rng, rotate_after=self.options.rotate_after,
                           approval=n % 2 == 1, rotation=n % 3 != 2, scale=self.options.scale)

    async def keep_busy(self) -> None:
        await asyncio.to_thread(self.tickets.poll)
        await self.tickets.approve(self.rng.uniform)
        if self.opening:
            while len(self.tickets.open) < self.options.concurrency:
                await self.tickets.open_ticket(self._plan())

    async def run(self) -> Figures:
        started = time.monotonic()
        options = self.options
        injector = Injector(self.tickets, self.rng, self.keep_busy)
        await self.keep_busy()
        gaps = {kind: (low * options.gap_scale, high * options.gap_scale) for kind, (low, high) in GAPS.items()}
        await injector.run(options.faults, gaps)
        self.opening = False
        await self.tickets.settle(options.settle_timeout, self.rng.uniform)
        return self.figures(injector, time.monotonic() - started)

    def figures(self, injector: Injector, wall: float) -> Figures:
        state = self.world.stack.agents.state
        figures = Figures(mode=self.options.mode, seed=self.options.seed)
        details = []
        for ticket in self.tickets.all:
            events = state.events(ticket.session_id) if ticket.session_id else []
            thread = self.tickets.thread(ticket)
            one = ticket_figures(ticket, events, thread)
            figures.add(one)
            details.append({"figures": asdict(one), "thread_ts": ticket.ts, "thread": thread, "events": events})
        figures.fault_points(injector.points)
        figures.wall_s = round(wall, 1)
        if self.options.keep is not None:
            out = self.options.keep / f"{self.options.mode}-details.json"
            points = [asdict(p) for p in injector.points]
            out.write_text(json.dumps({"points": points, "tickets": details}, indent=1, default=str))
        return figures


async def run_in(world: World, options: RunOptions, first_number: int = 1) -> dict[str, Any]:
    """One run in a world that is already started (several runs may share one world)."""
    figures = await Run(options, world, first_number).run()
    return figures.as_dict()


async def chaos_run(options: RunOptions) -> dict[str, Any]:
    """Run `options` in a fresh world (a temporary folder unless `keep`) and return the figures."""
    with tempfile.TemporaryDirectory(prefix="support-agent-chaos-") as tmp:
        root = options.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        world = World(root, rotate_after=options.rotate_after, lease_seconds=options.lease_seconds)
        try:
            world.start()  # on the loop's thread: children die with the thread that forked them
            return await run_in(world, options)
        finally:
            world.close()
