"""Cost in Slack: the turn footer, `/support cost` and the admin App Home, within Block Kit limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from app.config.model import AppConfig
from app.cost.ledger import CostLedger, Row, Totals
from app.cost.slack import (
    HomeSummary,
    channel_cost_message,
    channel_report,
    cost_home_blocks,
    footer_block,
    format_footer,
    home_summary,
    should_show_cost,
)
from app.tickets.model import Ticket

D = Decimal
SONNET = "claude-sonnet-4-6"
NOW = datetime(2026, 10, 6, 12, 0, tzinfo=UTC)


def ticket(number: int, channel: str = "C1", environment: str = "internal") -> Ticket:
    return Ticket(
        id=f"T1-{number}", number=number, team_id="T1", channel_id=channel, thread_ts=f"{number}.0",
        requester_id="U1", environment=environment, title=f"printer <on fire> {number}",
        session_id=f"sesn_{number}",
    )


def check_blocks(blocks: list[dict[str, Any]], max_blocks: int) -> None:
    assert len(blocks) <= max_blocks
    for block in blocks:
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "context":
            assert all(len(e["text"]) <= 3000 for e in block["elements"])


def test_cost_shows_only_where_allowed_and_never_to_customers(app_config: AppConfig) -> None:
    assert should_show_cost(app_config.environments["internal"])
    assert not should_show_cost(app_config.environments["customers"])
    hidden = app_config.environments["internal"].model_copy(update={"show_cost": False})
    assert not should_show_cost(hidden)


async def test_footer_for_a_turn(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    t = ticket(1)
    await ledger.record_snapshot(
        t, model=SONNET, source_event_id="e1", at=NOW,
        usage_snapshot={"active_seconds": 100, "input_tokens": 20_000, "output_tokens": 1_000},
    )
    turn = await ledger.record_snapshot(
        t, model=SONNET, source_event_id="e2", at=NOW,
        usage_snapshot={"active_seconds": 300, "input_tokens": 60_000, "output_tokens": 5_200,
                        "server_tool_use": {"web_search_requests": 2}},
    )
    assert turn is not None
    total = await ledger.ticket_total(t.id)
    # delta: 200 s (0.00444), 40k in (0.12), 4.2k out (0.063), 2 searches (0.02) -> $0.2074
    # total: 300 s (0.00667), 60k in (0.18), 5.2k out (0.078), 2 searches (0.02) -> $0.2847
    line = format_footer(turn, total)
    assert line == "This turn $0.21 (3m 20s active, 44.2k tokens, 2 web searches) · ticket total $0.28"
    assert format_footer(turn) == line  # the total carried by the turn agrees with the ledger
    block = footer_block(turn, total)
    assert block["type"] == "context" and line in block["elements"][0]["text"]


async def test_support_cost_for_a_channel(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    earlier = datetime(2026, 10, 2, 9, 0, tzinfo=UTC)
    for n, (at, channel, tokens) in enumerate(
        [(NOW, "C1", 1_000_000), (earlier, "C1", 2_000_000), (NOW, "C2", 5_000_000)], 1
    ):
        await ledger.record_snapshot(
            ticket(n, channel), model=SONNET, source_event_id=f"e{n}", at=at,
            usage_snapshot={"input_tokens": tokens},
        )
    report = await channel_report(ledger, "C1", today=NOW.date())
    assert report.today_totals.total_usd == D(3)
    assert report.month_totals.total_usd == D(9)
    assert [r.key for r in report.top_month] == ["T1-2", "T1-1"]
    msg = channel_cost_message(report)
    assert "today $3.00" in msg["text"] and "October 2026 $9.00" in msg["text"]
    body = json.dumps(msg["blocks"])
    assert "<#C1>" in body and "C2" not in body
    assert "*#2* printer &lt;on fire&gt; 2" in body  # titles are escaped for mrkdwn
    check_blocks(msg["blocks"], 50)


async def test_support_cost_in_a_quiet_channel(redis: aioredis.Redis) -> None:
    msg = channel_cost_message(await channel_report(CostLedger(redis), "C9", today=NOW.date()))
    assert "$0.00" in msg["text"]
    assert "No ticket costs recorded yet" in json.dumps(msg["blocks"])


async def test_admin_home_with_real_ledger(redis: aioredis.Redis) -> None:
    ledger = CostLedger(redis)
    await ledger.record_snapshot(
        ticket(1, "C1", "internal"), model=SONNET, source_event_id="e1", at=NOW,
        usage_snapshot={"active_seconds": 1800, "input_tokens": 1_000_000},
    )
    await ledger.record_snapshot(
        ticket(2, "C2", "customers"), model=SONNET, source_event_id="e1", at=NOW,
        usage_snapshot={"output_tokens": 1_000_000},
    )
    summary = await home_summary(ledger, today=NOW.date())
    assert summary.month_totals.total_usd == D("18.04")
    blocks = cost_home_blocks(summary)
    body = json.dumps(blocks)
    for expected in ("<#C1>", "<#C2>", "*internal*", "*customers*", "$18.04", "$15.00", "$3.04", "#2"):
        assert expected in body
    check_blocks(blocks, 100)


def test_admin_home_stays_within_limits_with_many_channels() -> None:
    def row(by: str, i: int) -> Row:
        return Row(by=by, key=f"{by}-{i:04d}" if by != "channel" else f"C{i:08d}",
                   totals=Totals(total_n=10**9 * i, tickets=i), number=i, title="x" * 300, channel="C1")

    summary = HomeSummary(
        today=NOW.date(),
        today_totals=Totals(),
        month_totals=Totals(total_n=10**12),
        by_channel=[row("channel", i) for i in range(500)],
        by_environment=[row("environment", i) for i in range(50)],
        top_tickets=[row("ticket", i) for i in range(200)],
    )
    blocks = cost_home_blocks(summary)
    check_blocks(blocks, 100)
    assert len(blocks) <= 12  # leaves the admin's App Home room for the ticket list
    assert "more channels" in json.dumps(blocks)
