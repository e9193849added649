"""The cost ledger in Redis: idempotent capture, turn deltas, aggregates, restarts; the log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from app.config.model import Pricing
from app.cost.ledger import CostLedger, Totals
from app.cost.logline import log_resolve_cost, log_turn_cost
from app.cost.model import UnknownModel, Usage, compute_cost, to_nanos
from app.observability.logs import JsonFormatter
from app.observability.scrub import Scrubber
from app.redis_conn import EmbeddedRedis, connect
from app.tickets.model import Ticket

D = Decimal
SONNET = "claude-sonnet-4-6"
DAY1 = datetime(2026, 10, 5, 23, 30, tzinfo=UTC)
DAY2 = datetime(2026, 10, 6, 0, 30, tzinfo=UTC)


def ticket(number: int = 1, channel: str = "C1", environment: str = "internal") -> Ticket:
    return Ticket(
        id=f"T1-{number}",
        number=number,
        team_id="T1",
        channel_id=channel,
        thread_ts=f"{number}.0",
        requester_id="U1",
        environment=environment,
        title=f"question {number}",
        session_id=f"sesn_{number}",
    )


def snapshot(seconds: float, inp: int, out: int, **more: object) -> dict[str, object]:
    return {"active_seconds": seconds, "input_tokens": inp, "output_tokens": out, **more}


async def test_a_replayed_event_counts_once(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    first = await ledger.record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(1800, 1_000_000, 0), source_event_id="sevt_1", at=DAY1
    )
    assert first is not None
    assert first.cost.total_usd == D("3.04")
    again = await ledger.record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(1800, 1_000_000, 0), source_event_id="sevt_1", at=DAY1
    )
    assert again is None
    total = await ledger.ticket_total(t.id)
    assert total.total_usd == D("3.04")
    assert total.turns == 1
    day = await ledger.totals("day", since=DAY1.date(), until=DAY1.date())
    assert [r.totals.total_usd for r in day] == [D("3.04")]


async def test_replay_with_a_grown_snapshot_under_the_same_id_is_still_ignored(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    await ledger.record_snapshot(t, model=SONNET, usage_snapshot=snapshot(60, 10, 0), source_event_id="e1")
    assert await ledger.record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(600, 1000, 0), source_event_id="e1"
    ) is None
    assert (await ledger.ticket_total(t.id)).input_tokens == 10


async def test_two_turns_are_priced_as_deltas_of_the_cumulative_usage(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    one = await ledger.record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(600, 10_000, 2_000), source_event_id="e1", at=DAY1
    )
    two = await ledger.record_snapshot(
        t,
        model=SONNET,
        usage_snapshot=snapshot(900, 25_000, 5_000, cache_read_input_tokens=100_000,
                                server_tool_use={"web_search_requests": 2}),
        source_event_id="e2",
        at=DAY1,
    )
    assert one is not None and two is not None
    assert two.delta == Usage(
        active_seconds=D(300), input_tokens=15_000, output_tokens=3_000,
        cache_read_input_tokens=100_000, web_search_requests=2,
    )
    # turn 2: runtime 300/3600*0.08 + 15k*3/M + 3k*15/M + 100k*0.3/M + 2 searches
    expected_two = D("0.08") / 12 + D("0.045") + D("0.045") + D("0.03") + D("0.02")
    assert round(two.cost.total_usd, 12) == round(expected_two, 12)
    cumulative = compute_cost(two.cumulative, SONNET)
    total = await ledger.ticket_total(t.id)
    assert round(total.total_usd, 8) == round(cumulative.total_usd, 8)
    assert round(two.ticket_total_usd, 8) == round(cumulative.total_usd, 8)
    assert total.turns == 2 and total.input_tokens == 25_000 and total.web_searches == 2
    assert total.active_seconds == D(900)
    turns = await ledger.turns(t.id)
    assert [x.event_id for x in turns] == ["e1", "e2"]
    assert turns[1].delta == two.delta


async def test_a_stale_snapshot_adds_nothing(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    await ledger.record_snapshot(t, model=SONNET, usage_snapshot=snapshot(900, 500, 50), source_event_id="e2")
    stale = await ledger.record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(600, 400, 40), source_event_id="retrieve-1"
    )
    assert stale is None
    same = await ledger.record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(900, 500, 50), source_event_id="retrieve-2"
    )
    assert same is None
    assert (await ledger.ticket_total(t.id)).turns == 1


async def test_concurrent_recorders_count_a_snapshot_once(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    results = await asyncio.gather(
        *(
            ledger.record_snapshot(t, model=SONNET, usage_snapshot=snapshot(3600, 1_000_000, 0), source_event_id=e)
            for e in ("e1", "e1", "retrieve-a", "retrieve-b", "e1")
        )
    )
    assert sum(r is not None for r in results) == 1
    assert (await ledger.ticket_total(t.id)).total_usd == D("3.08")


async def test_unknown_model_records_nothing(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    with pytest.raises(UnknownModel):
        await ledger.record_snapshot(ticket(), model="nope", usage_snapshot=snapshot(1, 1, 1), source_event_id="e")
    assert await ledger.ticket_cost("T1-1") is None
    assert (await ledger.ticket_total("T1-1")).total_n == 0


async def test_aggregates_by_ticket_channel_environment_and_day(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    a, b, c = ticket(1, "C1", "internal"), ticket(2, "C1", "internal"), ticket(3, "C2", "customers")
    # a: $3 on day 1 then $1.5 more on day 2; b: $0.08 runtime on day 1; c: $15 on day 2.
    await ledger.record_snapshot(a, model=SONNET, usage_snapshot=snapshot(0, 1_000_000, 0),
                                 source_event_id="a1", at=DAY1)
    await ledger.record_snapshot(a, model=SONNET, usage_snapshot=snapshot(0, 1_000_000, 100_000),
                                 source_event_id="a2", at=DAY2)
    await ledger.record_snapshot(b, model=SONNET, usage_snapshot=snapshot(3600, 0, 0),
                                 source_event_id="b1", at=DAY1)
    await ledger.record_snapshot(c, model=SONNET, usage_snapshot=snapshot(0, 0, 1_000_000),
                                 source_event_id="c1", at=DAY2)
    d1, d2 = DAY1.date(), DAY2.date()

    by_ticket = await ledger.totals("ticket", since=d1, until=d2)
    assert [(r.key, r.totals.total_usd) for r in by_ticket] == [
        ("T1-3", D(15)), ("T1-1", D("4.5")), ("T1-2", D("0.08")),
    ]
    assert by_ticket[0].channel == "C2" and by_ticket[0].environment == "customers"
    assert by_ticket[0].number == 3 and by_ticket[0].title == "question 3"
    # A ticket spanning two days is split by day.
    only_day1 = await ledger.totals("ticket", since=d1, until=d1)
    assert {r.key: r.totals.total_usd for r in only_day1} == {"T1-1": D(3), "T1-2": D("0.08")}

    by_channel = await ledger.totals("channel", since=d1, until=d2)
    assert [(r.key, r.totals.total_usd, r.totals.tickets) for r in by_channel] == [
        ("C2", D(15), 1), ("C1", D("4.58"), 2),
    ]
    by_env = await ledger.totals("environment", since=d1, until=d2)
    assert {r.key: r.totals.total_usd for r in by_env} == {"customers": D(15), "internal": D("4.58")}
    by_day = await ledger.totals("day", since=d1, until=d2)
    assert [(r.key, r.totals.total_usd, r.totals.tickets) for r in by_day] == [
        ("2026-10-05", D("3.08"), 2), ("2026-10-06", D("16.5"), 2),
    ]
    assert await ledger.totals("day", since=date(2026, 11, 1), until=date(2026, 11, 30)) == []

    top = await ledger.top_tickets(since=d1, until=d2, n=2)
    assert [r.key for r in top] == ["T1-3", "T1-1"]
    top_c1 = await ledger.top_tickets(since=d1, until=d2, channel="C1", n=5)
    assert [(r.key, r.totals.total_usd) for r in top_c1] == [("T1-1", D("4.5")), ("T1-2", D("0.08"))]

    assert (await ledger.channel_today("C1", today=d2)).total_usd == D("1.5")
    month = await ledger.channel_month("C1", today=d2)
    assert (month.total_usd, month.tickets, month.turns) == (D("4.58"), 2, 3)
    everything = await ledger.total(since=d1, until=d2)
    assert (everything.total_usd, everything.tickets) == (D("19.58"), 3)
    assert (await ledger.total(since=d1, until=d2, environment="internal")).total_usd == D("4.58")
    with pytest.raises(ValueError):
        await ledger.totals("week", since=d1, until=d2)


async def test_the_ledger_survives_a_new_client(redis: aioredis.Redis, redis_server: EmbeddedRedis) -> None:
    t = ticket()
    await CostLedger(redis).record_snapshot(
        t, model=SONNET, usage_snapshot=snapshot(1800, 0, 0), source_event_id="e1", at=DAY1
    )
    fresh = connect(redis_server.url)
    try:
        ledger = CostLedger(fresh)
        assert (await ledger.ticket_total(t.id)).total_usd == D("0.04")
        # The replay check and the previous snapshot live in Redis too.
        assert await ledger.record_snapshot(
            t, model=SONNET, usage_snapshot=snapshot(1800, 0, 0), source_event_id="e1"
        ) is None
        turn = await ledger.record_snapshot(
            t, model=SONNET, usage_snapshot=snapshot(3600, 0, 0), source_event_id="e2", at=DAY1
        )
        assert turn is not None and turn.cost.total_usd == D("0.04") and turn.ticket_total_usd == D("0.08")
        info = await ledger.ticket_cost(t.id)
        assert info is not None
        assert (info.channel, info.environment, info.model, info.number) == ("C1", "internal", SONNET, 1)
        assert info.snapshot.active_seconds == D(3600)
    finally:
        await fresh.aclose()


async def test_money_is_kept_as_integers_in_redis(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis, Pricing())
    t = ticket()
    for i in range(1, 11):
        # each turn adds 1 second: 0.08/3600 is a recurring decimal
        await ledger.record_snapshot(t, model=SONNET, usage_snapshot=snapshot(i, i, 0), source_event_id=f"e{i}")
    raw = await redis.hgetall(f"sa:cost:ticket:{t.id}")
    assert all(raw[f].isdigit() for f in ("runtime_n", "input_n", "total_n"))
    total = await ledger.ticket_total(t.id)
    assert total.input_n == 30_000  # 10 tokens at $3/M = $0.00003
    # Ten turns of a recurring decimal, rounded once: no drift from rounding each turn.
    assert total.runtime_n == to_nanos(D("0.08") * 10 / 3600) == 222_222
    assert total.active_us == 10_000_000


async def test_list_cost_mismatch_is_logged(redis: aioredis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    ledger = CostLedger(redis)
    with caplog.at_level(logging.WARNING, logger="app.cost.ledger"):
        ok = await ledger.record_snapshot(
            ticket(1), model=SONNET, source_event_id="e1",
            usage_snapshot=snapshot(0, 1_000_000, 0, list_cost={"amount": "300", "currency": "USD"}),
        )
        bad = await ledger.record_snapshot(
            ticket(2), model=SONNET, source_event_id="e1",
            usage_snapshot=snapshot(0, 1_000_000, 0, list_cost={"amount": "350", "currency": "USD"}),
        )
    assert ok is not None and ok.list_cost_warning is None
    assert bad is not None and bad.list_cost_warning is not None
    warnings = [r for r in caplog.records if r.getMessage() == "ticket.cost.list_cost_mismatch"]
    assert len(warnings) == 1 and warnings[0].ticket == "T1-2"  # type: ignore[attr-defined]


# -- the log line -----------------------------------------------------------------------------


def capture(logger_name: str = "test.cost") -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(Scrubber()))
    logger = logging.getLogger(logger_name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


async def test_ticket_cost_log_lines_per_turn_and_at_resolve(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    logger, stream = capture()
    turns = [
        await ledger.record_snapshot(t, model=SONNET, usage_snapshot=s, source_event_id=e)
        for s, e in ((snapshot(1800, 100_000, 10_000), "e1"), (snapshot(3600, 300_000, 20_000), "e2"))
    ]
    for turn in turns:
        assert turn is not None
        log_turn_cost(t, turn, logger=logger)
    log_resolve_cost(t, await ledger.ticket_total(t.id), model=SONNET, logger=logger)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["ticket.cost"] * 3
    assert [line["phase"] for line in lines] == ["turn", "turn", "resolve"]
    first, second, resolve = lines
    for line in lines:
        for key in ("ticket", "session", "team", "channel", "environment", "requester", "model"):
            assert line[key] not in (None, "", "[redacted]")
    assert (first["ticket"], first["session"], first["team"]) == ("T1-1", "sesn_1", "T1")
    assert (first["channel"], first["environment"], first["requester"]) == ("C1", "internal", "U1")
    # turn 1: 1800 s -> 0.04; 100k in -> 0.30; 10k out -> 0.15
    assert (first["active_seconds"], first["input_tokens"], first["output_tokens"]) == (1800.0, 100_000, 10_000)
    assert (first["runtime_usd"], first["tokens_usd"], first["total_usd"]) == (0.04, 0.45, 0.49)
    assert first["input_usd"] == 0.3 and first["output_usd"] == 0.15
    # turn 2 delta: 1800 s, 200k in, 10k out -> 0.04 + 0.60 + 0.15
    assert (second["input_tokens"], second["total_usd"], second["ticket_total_usd"]) == (200_000, 0.79, 1.28)
    assert (resolve["active_seconds"], resolve["input_tokens"], resolve["total_usd"]) == (3600.0, 300_000, 1.28)
    assert resolve["turns"] == 2
    assert isinstance(resolve["total_usd"], float)


def test_totals_round_trip_through_usage_and_breakdown() -> None:
    usage = Usage(active_seconds=D(1800), input_tokens=10, cache_write_1h_tokens=5, web_search_requests=1)
    cost = compute_cost(usage, SONNET)
    totals = Totals.of_turn(usage, cost)
    assert totals.usage() == usage
    assert totals.breakdown(SONNET).total_usd == totals.total_usd == cost.total_usd


async def test_close_turn_sums_the_snapshots_of_one_turn(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    assert await ledger.close_turn(t.id) is None
    # Turn 1 sends three periodic snapshots; turn 2 one.
    for i, s in enumerate(
        (snapshot(600, 100_000, 0), snapshot(1200, 200_000, 10_000),
         snapshot(1800, 300_000, 20_000, list_cost={"amount": "124", "currency": "USD"})),
        1,
    ):
        await ledger.record_snapshot(t, model=SONNET, usage_snapshot=s, source_event_id=f"e{i}")
    first = await ledger.close_turn(t.id)
    assert first is not None
    assert first.delta == Usage(active_seconds=D(1800), input_tokens=300_000, output_tokens=20_000, list_cost_cents=124)
    assert first.cost.total_usd == D("0.04") + D("0.9") + D("0.3")
    assert first.ticket_total_usd == D("1.24") and first.event_id == "e1,e2,e3"
    assert await ledger.close_turn(t.id) is None  # a replayed turn end logs nothing
    await ledger.record_snapshot(t, model=SONNET, usage_snapshot=snapshot(3600, 300_000, 20_000), source_event_id="e4")
    second = await ledger.close_turn(t.id)
    assert second is not None
    # no list cost in the last snapshot: the running list cost stays, its delta is 0
    assert second.delta == Usage(active_seconds=D(1800), list_cost_cents=0)
    assert second.cost.total_usd == D("0.04")
    assert second.ticket_total_usd == D("1.28") and second.event_id == "e4"
    assert second.list_cost_warning is None


async def test_a_turn_of_several_snapshots_counts_once_everywhere(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket()
    for i, s in enumerate((snapshot(600, 100_000, 0), snapshot(1200, 200_000, 10_000), snapshot(1800, 300_000, 0)), 1):
        await ledger.record_snapshot(t, model=SONNET, usage_snapshot=s, source_event_id=f"e{i}")
    await ledger.close_turn(t.id)
    await ledger.record_snapshot(t, model=SONNET, usage_snapshot=snapshot(2400, 400_000, 0), source_event_id="e4")
    await ledger.close_turn(t.id)
    assert await ledger.close_turn(t.id) is None  # closing again changes nothing
    today = datetime.now(UTC).date()
    assert (await ledger.ticket_total(t.id)).turns == 2
    assert (await ledger.total(since=today, until=today)).turns == 2
    assert (await ledger.total(since=today, until=today, channel="C1")).turns == 2
    assert (await ledger.total(since=today, until=today, environment="internal")).turns == 2
    [row] = await ledger.totals("ticket", since=today, until=today)
    assert row.totals.turns == 2 and row.totals.input_tokens == 400_000
