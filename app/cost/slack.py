"""What people see of costs in Slack: the turn footer, `/support cost` and the admin App Home.

Pure formatting over ledger figures; `channel_report` / `home_summary` gather the figures.
Block Kit limits respected here: at most 100 blocks in a view, 50 in a message, section
text at most 3000 characters, header text at most 150.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field

from app.config.model import Environment
from app.cost.ledger import CostLedger, Row, Totals, TurnCost, utc_today
from app.cost.model import format_duration, format_tokens, format_usd
from app.render.slack_text import escape

SECTION_TEXT_LIMIT = 3000
HEADER_TEXT_LIMIT = 150
MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_BLOCKS = 50


def should_show_cost(env: Environment) -> bool:
    """Costs appear in a thread only where the environment allows and never to customers."""
    return env.show_cost and not env.customer_facing


# -- the turn footer ---------------------------------------------------------------------


def format_footer(turn_cost: TurnCost, ticket_total: Totals | Decimal | None = None) -> str:
    """One line: `This turn $0.12 (3m 20s active, 45.2k tokens) · ticket total $0.31`."""
    cost = turn_cost.cost
    tokens = turn_cost.delta.total_tokens
    detail = f"{format_duration(turn_cost.delta.active_seconds)} active, {format_tokens(tokens)} tokens"
    if turn_cost.delta.web_search_requests:
        n = turn_cost.delta.web_search_requests
        detail += f", {n} web search{'es' if n != 1 else ''}"
    if ticket_total is None:
        total = turn_cost.ticket_total_usd
    elif isinstance(ticket_total, Totals):
        total = ticket_total.total_usd
    else:
        total = ticket_total
    return f"This turn {format_usd(cost.total_usd)} ({detail}) · ticket total {format_usd(total)}"


def footer_block(turn_cost: TurnCost, ticket_total: Totals | Decimal | None = None) -> dict[str, Any]:
    """The footer as a context block, to append to the turn's last message."""
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": f":receipt: {format_footer(turn_cost, ticket_total)}"}],
    }


# -- shared pieces ------------------------------------------------------------------------


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SECTION_TEXT_LIMIT)}}


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _clip(text, HEADER_TEXT_LIMIT)}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _clip(text, SECTION_TEXT_LIMIT)}]}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _lines(lines: list[str], empty: str) -> str:
    """Lines joined within the section limit; the overflow is counted, not cut mid-line."""
    if not lines:
        return empty
    out: list[str] = []
    size = 0
    for i, line in enumerate(lines):
        more = f"…and {len(lines) - i} more"
        if size + len(line) + 1 + len(more) > SECTION_TEXT_LIMIT:
            out.append(more)
            break
        out.append(line)
        size += len(line) + 1
    return "\n".join(out)


def summary_line(totals: Totals) -> str:
    """`$1.23 · 4 tickets · 12 turns · 1h 02m active · 1.3M tokens`."""
    parts = [f"*{format_usd(totals.total_usd)}*"]
    parts.append(f"{totals.tickets} ticket{'s' if totals.tickets != 1 else ''}")
    parts.append(f"{totals.turns} turn{'s' if totals.turns != 1 else ''}")
    parts.append(f"{format_duration(totals.active_seconds)} active")
    parts.append(f"{format_tokens(totals.total_tokens)} tokens")
    return " · ".join(parts)


def split_line(totals: Totals) -> str:
    """`runtime $0.01 · tokens $1.20 · web search $0.02`."""
    line = f"runtime {format_usd(totals.runtime_usd)} · tokens {format_usd(totals.tokens_usd)}"
    if totals.web_search_n:
        line += f" · web search {format_usd(totals.web_search_usd)}"
    return line


def ticket_label(row: Row, *, with_channel: bool = False) -> str:
    ref = f"#{row.number}" if row.number is not None else row.key
    title = f" {escape(row.title[:80])}" if row.title else ""
    where = f" in <#{row.channel}>" if with_channel and row.channel else ""
    return f"*{ref}*{title}{where}"


def ticket_lines(rows: list[Row], *, with_channel: bool = False) -> list[str]:
    return [
        f"{i}. {ticket_label(r, with_channel=with_channel)} · {format_usd(r.totals.total_usd)}"
        f" ({format_duration(r.totals.active_seconds)} active, {format_tokens(r.totals.total_tokens)} tokens)"
        for i, r in enumerate(rows, 1)
    ]


# -- /support cost ------------------------------------------------------------------------


class ChannelCostReport(BaseModel):
    channel: str
    today: date
    today_totals: Totals
    month_totals: Totals
    top_today: list[Row] = Field(default_factory=list)
    top_month: list[Row] = Field(default_factory=list)


async def channel_report(
    ledger: CostLedger, channel: str, today: date | None = None, n: int = 5
) -> ChannelCostReport:
    today = today or utc_today()
    month_start = today.replace(day=1)
    return ChannelCostReport(
        channel=channel,
        today=today,
        today_totals=await ledger.total(since=today, until=today, channel=channel),
        month_totals=await ledger.total(since=month_start, until=today, channel=channel),
        top_today=await ledger.top_tickets(since=today, until=today, channel=channel, n=n),
        top_month=await ledger.top_tickets(since=month_start, until=today, channel=channel, n=n),
    )


def channel_cost_message(report: ChannelCostReport) -> dict[str, Any]:
    """`text` + `blocks` answering `/support cost` in a channel (post it ephemerally)."""
    ch = f"<#{report.channel}>"
    month = report.today.strftime("%B %Y")
    text = (
        f"Support costs in {ch}: today {format_usd(report.today_totals.total_usd)}, "
        f"{month} {format_usd(report.month_totals.total_usd)}."
    )
    blocks: list[dict[str, Any]] = [
        _section(f":receipt: *Support costs in {ch}*"),
        _section(f"*Today* ({report.today.isoformat()} UTC)\n{summary_line(report.today_totals)}\n"
                 f"{split_line(report.today_totals)}"),
        _section(f"*{month}*\n{summary_line(report.month_totals)}\n{split_line(report.month_totals)}"),
    ]
    if report.top_today:
        blocks.append(_section("*Most expensive tickets today*\n" + _lines(ticket_lines(report.top_today), "")))
    blocks.append(
        _section(
            f"*Most expensive tickets in {month}*\n"
            + _lines(ticket_lines(report.top_month), "_No ticket costs recorded yet._")
        )
    )
    blocks.append(_context("Runtime at the session-hour rate plus tokens at the model's list prices."))
    return {"text": text, "blocks": blocks[:MAX_MESSAGE_BLOCKS]}


# -- App Home for admins ------------------------------------------------------------------


class HomeSummary(BaseModel):
    today: date
    today_totals: Totals
    month_totals: Totals
    by_channel: list[Row] = Field(default_factory=list)
    by_environment: list[Row] = Field(default_factory=list)
    top_tickets: list[Row] = Field(default_factory=list)


async def home_summary(ledger: CostLedger, today: date | None = None, n: int = 10) -> HomeSummary:
    """This month's figures for the admin home tab."""
    today = today or utc_today()
    month_start = today.replace(day=1)
    return HomeSummary(
        today=today,
        today_totals=await ledger.total(since=today, until=today),
        month_totals=await ledger.total(since=month_start, until=today),
        by_channel=await ledger.totals("channel", since=month_start, until=today),
        by_environment=await ledger.totals("environment", since=month_start, until=today),
        top_tickets=await ledger.top_tickets(since=month_start, until=today, n=n),
    )


def cost_home_blocks(summary: HomeSummary, max_rows: int = 15) -> list[dict[str, Any]]:
    """The cost part of the admin App Home: today, this month, by channel and environment."""
    month = summary.today.strftime("%B %Y")
    channel_lines = [
        f"<#{r.key}> · {format_usd(r.totals.total_usd)} · {r.totals.tickets} ticket"
        f"{'s' if r.totals.tickets != 1 else ''}"
        for r in summary.by_channel[:max_rows]
    ]
    if len(summary.by_channel) > max_rows:
        channel_lines.append(f"…and {len(summary.by_channel) - max_rows} more channels")
    env_lines = [
        f"*{escape(r.key)}* · {format_usd(r.totals.total_usd)} · {r.totals.tickets} ticket"
        f"{'s' if r.totals.tickets != 1 else ''} · {split_line(r.totals)}"
        for r in summary.by_environment[:max_rows]
    ]
    blocks: list[dict[str, Any]] = [
        _header("Support costs"),
        _context(f"Figures in USD, by UTC day. Updated {summary.today.isoformat()}."),
        _section(f"*Today*\n{summary_line(summary.today_totals)}\n{split_line(summary.today_totals)}"),
        _section(f"*{month}*\n{summary_line(summary.month_totals)}\n{split_line(summary.month_totals)}"),
        {"type": "divider"},
        _section(f"*By channel, {month}*\n" + _lines(channel_lines, "_Nothing yet._")),
        _section(f"*By environment, {month}*\n" + _lines(env_lines, "_Nothing yet._")),
        {"type": "divider"},
        _section(
            f"*Most expensive tickets, {month}*\n"
            + _lines(ticket_lines(summary.top_tickets[:max_rows], with_channel=True), "_Nothing yet._")
        ),
    ]
    return blocks[:MAX_VIEW_BLOCKS]
