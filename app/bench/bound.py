"""What Slack's budget allows: the best event-to-visible latency any renderer could reach.

Given when each turn's content events were emitted, and a workspace's budgets for stream
starts and appends (Slack's per-workspace, per-method token buckets), an ideal scheduler that
knows the future no better than we do: whenever a token is there and some turn has content
waiting, it serves the turn whose oldest waiting event is oldest, and one call shows all that
turn's waiting content (a turn's first call is a stream start, later ones appends). Every
event's latency under that schedule is a lower bound for ours on the same workload.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    """Tokens per second and bucket capacity (Slack allows a minute's budget at once)."""

    rate: float
    capacity: float


def bound_latencies(turns: Sequence[Sequence[float]], start: Budget, append: Budget) -> list[float]:
    """Latency (seconds) of every event under the ideal schedule; `turns` holds emit times."""
    pending: list[list[float]] = [sorted(t) for t in turns]
    started = [False] * len(pending)
    nxt = [0] * len(pending)  # first event not yet shown, per turn
    out: list[float] = []
    if not any(pending):
        return out
    tokens = {"start": start.capacity, "append": append.capacity}
    budgets = {"start": start, "append": append}
    now = min(t[0] for t in pending if t)
    end_of_work = max(t[-1] for t in pending if t)
    step = min(0.01, 0.1 / max(append.rate, start.rate))
    # Turns with shown-able content, keyed by their oldest waiting event.
    ready: list[tuple[float, int]] = []
    queued = [False] * len(pending)
    while any(nxt[i] < len(p) for i, p in enumerate(pending)):
        for i, times in enumerate(pending):
            if not queued[i] and nxt[i] < len(times) and times[nxt[i]] <= now:
                heapq.heappush(ready, (times[nxt[i]], i))
                queued[i] = True
        deferred: list[tuple[float, int]] = []
        while ready:
            oldest, i = heapq.heappop(ready)
            kind = "append" if started[i] else "start"
            if tokens[kind] < 1:
                deferred.append((oldest, i))
                continue
            tokens[kind] -= 1
            started[i] = True
            times = pending[i]
            while nxt[i] < len(times) and times[nxt[i]] <= now:
                out.append(now - times[nxt[i]])
                nxt[i] += 1
            queued[i] = False
        for item in deferred:
            heapq.heappush(ready, item)
        now += step
        for kind, budget in budgets.items():
            tokens[kind] = min(budget.capacity, tokens[kind] + budget.rate * step)
        if now > end_of_work + 3600:  # a budget of zero: nothing more can be shown
            break
    return out
