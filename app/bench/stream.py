"""`support-agent bench stream`: N tickets' agent turns streamed into Slack at once.

Each ticket plays one synthetic agent turn (tool calls, a short intro and a long answer in
small deltas) through a renderer, into the Slack emulator over real HTTP with its rate limits
on, with an embedded Redis for the shared buckets. It runs twice, on a fresh workspace each
time: our `StreamRenderer`, then a naive renderer making one Slack call per agent event. For
each it reports Slack calls per turn, 429 responses met, characters of the agent's text
missing from the thread, and the delay from an agent event to Slack holding its content.

By default Slack's real limits apply and each turn lasts a minute, so a run takes minutes;
`--rate-scale K` multiplies the limits (and our buckets) by K to finish sooner, and the
output names it, since latencies then hold only at that compression. Latency is counted
over every content event: an event never shown by the end of the run counts with the run's
end as its time, and is also reported apart (`events_never_shown`). The naive baseline runs
without 429 retries (slack_sdk's defaults) and with them (`naive_retrying`). `bound_p50_ms` /
`bound_p99_ms` are what the workspace's budget allows on the same workload (app/bench/bound.py).
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import math
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.bench import bench_subparsers
from app.bench.bound import Budget, bound_latencies
from app.bench.naive import NaiveRenderer
from app.bench.synthetic import play, synthetic_turn
from app.redis_conn import EmbeddedRedis, connect
from app.render.ratelimit import DEFAULT_LIMITS, TokenBuckets
from app.render.slack_text import neutralise_mentions
from app.render.stream import StreamRenderer
from app.sandbox.slack import RateLimitConfig, SlackEmulator
from app.tickets.model import Ticket

CHANNEL = "C0001"
CONTENT = frozenset({
    "event_delta", "agent.message", "agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use",
    "agent.tool_result", "agent.mcp_tool_result",
})
REQUESTER = "U0001"


@dataclass
class Options:
    tickets: int = 20
    rate_scale: float = 1.0
    turn_seconds: float = 60.0
    tool_calls: int = 6
    answer_chars: int = 2_400
    delta_chars: int = 40
    flush_interval: float = 1.0
    naive_retries: int = 10
    start_wait: float = 10.0
    grace_seconds: float = 120.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sub = bench_subparsers(subparsers)
    p = sub.add_parser(
        "stream",
        help="stream N tickets' agent turns into the Slack emulator: ours vs one call per event",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    p.add_argument("--tickets", type=int, default=d.tickets, help="concurrent tickets (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--rate-scale", type=float, default=d.rate_scale,
                   help="multiply Slack's rate limits (default 1: the real ones; 60 gives a minute's "
                   "budget per second, and latencies hold only at that compression)")
    p.add_argument("--turn-seconds", type=float, default=d.turn_seconds, help="length of each turn (default 60)")
    p.add_argument("--tool-calls", type=int, default=d.tool_calls, help="tool calls per turn")
    p.add_argument("--answer-chars", type=int, default=d.answer_chars, help="answer length")
    p.add_argument("--delta-chars", type=int, default=d.delta_chars, help="characters per delta")
    p.add_argument("--flush-interval", type=float, default=d.flush_interval,
                   help="our renderer's flush timer, seconds")
    p.add_argument("--naive-retries", type=int, default=d.naive_retries,
                   help="429 retries for the retrying naive renderer (default 10)")
    p.add_argument("--grace-seconds", type=float, default=d.grace_seconds,
                   help="how long after its turns end a side may go on showing them (default 120)")
    p.add_argument("--start-wait", type=float, default=d.start_wait,
                   help="seconds our renderer waits for a stream start before posting instead")
    p.set_defaults(func=cmd_bench_stream)


def cmd_bench_stream(args: argparse.Namespace) -> int:
    if args.tickets < 1:
        print("--tickets must be at least 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    opts = Options(
        tickets=args.tickets, rate_scale=args.rate_scale, turn_seconds=args.turn_seconds,
        tool_calls=args.tool_calls, answer_chars=args.answer_chars, delta_chars=args.delta_chars,
        flush_interval=args.flush_interval, naive_retries=args.naive_retries,
        start_wait=args.start_wait, grace_seconds=args.grace_seconds,
    )
    result = asyncio.run(run_bench(opts))
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result, opts))
    return 0


async def run_bench(opts: Options) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        redis_server = EmbeddedRedis(Path(tmp))
        emulator = SlackEmulator(rate_limits=RateLimitConfig(scale=opts.rate_scale)).start()
        try:
            ours = await run_side("ours", emulator, redis_server.url, opts)
            naive = await run_side("naive", emulator, redis_server.url, opts)
            retrying = await run_side("naive_retrying", emulator, redis_server.url, opts)
        finally:
            emulator.stop()
            redis_server.close()
    return {
        "tickets": opts.tickets, "rate_limit_scale": opts.rate_scale,
        "bound_p50_ms": ours["bound_p50_ms"], "bound_p99_ms": ours["bound_p99_ms"],
        "ours": ours, "naive": naive, "naive_retrying": retrying,
    }


async def run_side(side: str, emulator: SlackEmulator, redis_url: str, opts: Options) -> dict[str, Any]:
    emulator.state.reset()
    tickets: list[Ticket] = []
    for i in range(opts.tickets):
        ts = await emulator.user_posts(CHANNEL, f"ticket {i}: the VPN is down", user=REQUESTER)
        tickets.append(Ticket(
            id=f"T0001-{i + 1}", number=i + 1, team_id=emulator.state.team_id, channel_id=CHANNEL,
            thread_ts=ts, requester_id=REQUESTER, environment="bench", title=f"VPN down ({i + 1})",
        ))
    turns = [
        synthetic_turn(
            f"{side}{i}", tool_calls=opts.tool_calls, answer_chars=opts.answer_chars,
            delta_chars=opts.delta_chars, seconds=opts.turn_seconds, seed=i,
        )
        for i in range(opts.tickets)
    ]
    emitted: dict[int, float] = {}
    visible: dict[int, float] = {}

    def on_visible(_ticket: Ticket, events: list[Any]) -> None:
        now = time.monotonic()
        for ev in events:
            visible.setdefault(id(ev), now)

    redis = connect(redis_url)
    renderer: StreamRenderer | NaiveRenderer
    if side == "ours":
        buckets = TokenBuckets(redis, scale=opts.rate_scale, prefix=f"bench-{uuid.uuid4().hex[:8]}")
        renderer = StreamRenderer(
            emulator.client(), redis, buckets=buckets, flush_interval=opts.flush_interval,
            start_wait=opts.start_wait, on_visible=on_visible, key_prefix=f"bench-render-{uuid.uuid4().hex[:8]}",
        )
    else:
        retries = opts.naive_retries if side == "naive_retrying" else 0
        renderer = NaiveRenderer(emulator.client(), on_visible, rate_limit_retries=retries)

    def on_emit(event: Any, at: float) -> None:
        emitted[id(event)] = at

    started = time.monotonic()
    plays = asyncio.gather(*(
        play(renderer, t, turn, on_emit=on_emit) for t, turn in zip(tickets, turns, strict=True)
    ))
    try:
        await asyncio.wait_for(plays, opts.turn_seconds + opts.grace_seconds)
    except TimeoutError:
        pass  # what is not shown by now counts as never shown
    ended = time.monotonic()
    seconds = ended - started
    if isinstance(renderer, StreamRenderer):
        await renderer.aclose()
    await redis.aclose()

    state = emulator.state
    calls = state.calls()
    lost = 0
    for ticket, turn in zip(tickets, turns, strict=True):
        lost += lost_chars(turn.messages, bot_text(state.thread(CHANNEL, ticket.thread_ts), state.bot_user_id))
    content_events = sum(t.content_events for t in turns)
    # Every content event of every turn counts, on its schedule: one a renderer held up so long
    # that it was never even emitted counts as never shown, like one emitted and never shown.
    latencies: list[float] = []
    never = 0
    per_turn: list[list[float]] = []
    for turn in turns:
        due = [(step.event, started + step.at) for step in turn.steps if step.event.type in CONTENT]
        per_turn.append([at for _, at in due])
        for ev, at in due:
            key = id(ev)
            if key in visible:
                latencies.append((visible[key] - emitted.get(key, at)) * 1000)
            else:
                never += 1
                latencies.append((ended - emitted.get(key, at)) * 1000)
    latencies.sort()
    bound = sorted(x * 1000 for x in bound_latencies(per_turn, *budgets(opts.rate_scale)))
    not_streamed = 0
    if isinstance(renderer, StreamRenderer):
        not_streamed = renderer.stats.congested + renderer.stats.fallbacks
    return {
        "slack_calls_per_turn": round(len(calls) / len(turns), 2),
        "rate_limited_responses": state.ratelimited_count,
        "text_lost_chars": lost,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "slack_calls": len(calls),
        "turns": len(turns),
        "content_events": content_events,
        "events_counted": len(latencies),
        "events_shown": len(latencies) - never,
        "events_never_shown": never,
        "bound_p50_ms": percentile(bound, 50),
        "bound_p99_ms": percentile(bound, 99),
        "turns_not_streamed": not_streamed,
        "seconds": round(seconds, 2),
        "rate_limit_scale": opts.rate_scale,
    }


def budgets(scale: float) -> tuple[Budget, Budget]:
    """Slack's workspace budgets for stream starts and appends, as the emulator applies them."""
    start, append = DEFAULT_LIMITS["chat.startStream"], DEFAULT_LIMITS["chat.appendStream"]
    return (
        Budget(start.per_minute / 60 * scale, start.burst),
        Budget(append.per_minute / 60 * scale, append.burst),
    )


def bot_text(thread: list[dict[str, Any]], bot_user_id: str) -> str:
    """Everything the bot's messages in a thread say, oldest first."""
    return "".join(str(m.get("text") or "") for m in thread if m.get("user") == bot_user_id)


_TOKENS = re.compile(r"\s+|[^\s]+")


def lost_chars(expected: Sequence[str], shown: str) -> int:
    """Characters of the agent's messages (mentions neutralised) not found, in order, in `shown`.

    A message found verbatim costs nothing; otherwise its words are matched against the rest
    of the thread and the characters of unmatched words count as lost.
    """
    pos = 0
    lost = 0
    for text in expected:
        text = neutralise_mentions(text)
        found = shown.find(text, pos)
        if found >= 0:
            pos = found + len(text)
            continue
        want = _TOKENS.findall(text)
        have = _TOKENS.findall(shown[pos:])
        matcher = difflib.SequenceMatcher(None, want, have, autojunk=False)
        matched = sum(len("".join(want[b.a : b.a + b.size])) for b in matcher.get_matching_blocks())
        lost += len(text) - matched
    return lost


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))  # nearest rank
    return round(ordered[index], 1)


def format_report(result: dict[str, Any], opts: Options) -> str:
    ours, naive = result["ours"], result["naive"]
    rows = [
        ("Slack calls per turn", "slack_calls_per_turn"),
        ("429 responses met", "rate_limited_responses"),
        ("text lost (chars)", "text_lost_chars"),
        ("event -> visible p50 (ms)", "latency_p50_ms"),
        ("event -> visible p99 (ms)", "latency_p99_ms"),
        ("content events shown", "events_shown"),
        ("content events never shown", "events_never_shown"),
        ("turns posted, not streamed", "turns_not_streamed"),
        ("wall time (s)", "seconds"),
    ]
    lines = [
        f"Streaming benchmark: {result['tickets']} tickets at once in one channel, one agent turn "
        f"each ({opts.tool_calls} tool calls, {opts.answer_chars:,}-character answer in "
        f"{opts.delta_chars}-character deltas, over {opts.turn_seconds:g} s).",
        "Slack emulator over HTTP with Slack's real rate limits on."
        if opts.rate_scale == 1
        else f"Slack emulator over HTTP with its rate limits scaled x{opts.rate_scale:g} (a minute's "
        f"budget every {60 / opts.rate_scale:g} s; our buckets scaled the same): latencies hold only "
        "at that compression.",
        f"Naive: one Slack call per agent event, without 429 retries and with {opts.naive_retries}.",
        f"What the budget allows on this workload: p50 {_cell(result['bound_p50_ms'])} ms, "
        f"p99 {_cell(result['bound_p99_ms'])} ms.",
        "",
        f"{'':28}{'ours':>12}{'naive':>12}{'retrying':>12}",
    ]
    retrying = result["naive_retrying"]
    for label, key in rows:
        lines.append(
            f"{label:28}{_cell(ours.get(key)):>12}{_cell(naive.get(key)):>12}{_cell(retrying.get(key)):>12}"
        )
    lines.append(f"{'content events per run':28}{ours['content_events']:>12}{naive['content_events']:>12}")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"
