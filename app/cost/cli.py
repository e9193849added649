"""`support-agent costs` (reports from the ledger) and `support-agent cost quote` (a what-if).

Neither needs Slack or Anthropic credentials: `costs` reads Redis, `quote` only the config.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import sys
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from app.cli import add_sandbox_option, cli_settings
from app.config.model import AppConfig, Pricing, load_config
from app.config.settings import Settings, load_settings
from app.cost.ledger import DIMENSIONS, CostLedger, Row, utc_today
from app.cost.model import (
    TOKEN_CATEGORIES,
    UnknownModel,
    Usage,
    compute_cost,
    format_duration,
    format_usd,
    round_usd,
    usd_number,
)

EXIT_USAGE = 2
# Used by `cost quote` when the config cannot be read: the checked-in agent model.
FALLBACK_MODEL = "claude-sonnet-4-6"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "costs",
        help="report ticket costs from the ledger",
        description="Report ticket costs recorded in the Redis ledger, by UTC day.",
    )
    p.add_argument("--since", type=_date, help="first day, YYYY-MM-DD (default: first of this month)")
    p.add_argument("--until", type=_date, help="last day, inclusive, YYYY-MM-DD (default: today)")
    p.add_argument("--by", choices=(*DIMENSIONS, "category", "specialist"), default="ticket",
                   help="group by (default: ticket; category only with --verified; specialist: each "
                        "subagent's threads)")
    p.add_argument("--verified", action="store_true",
                   help="verified resolutions and cost per verified resolution (outcomes), by channel, "
                        "environment, category or day (default day)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", dest="fmt")
    add_sandbox_option(p)
    p.set_defaults(func=cmd_costs)

    cost = subparsers.add_parser("cost", help="cost tools (quote)", description="Cost tools.")
    cost_sub = cost.add_subparsers(dest="cost_command", metavar="COMMAND")
    cost.set_defaults(func=lambda _args: _help(cost))
    q = cost_sub.add_parser(
        "quote",
        help="what a session with this usage would cost",
        description="Price a session's usage: runtime, tokens by category and web searches.",
    )
    q.add_argument("--active-seconds", required=True, help="seconds the session was running")
    q.add_argument("--model", help="model id (default: the config's agent model)")
    for flag in (
        "--input-tokens", "--output-tokens", "--cache-read-tokens",
        "--cache-write-5m-tokens", "--cache-write-1h-tokens", "--web-searches",
    ):
        q.add_argument(flag, default="0", metavar="N")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_quote)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _err(message: str, code: int = EXIT_USAGE) -> int:
    print(f"support-agent: {message}", file=sys.stderr)
    return code


# -- cost quote ---------------------------------------------------------------------------


class _BadInput(ValueError):
    pass


def _count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise _BadInput(f"{name} must be a whole number, not {raw!r}") from None
    if value < 0:
        raise _BadInput(f"{name} cannot be negative ({value})")
    return value


def _seconds(raw: str) -> Decimal:
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _BadInput(f"--active-seconds must be a number, not {raw!r}") from None
    if not value.is_finite():
        raise _BadInput(f"--active-seconds must be a finite number, not {raw!r}")
    if value < 0:
        raise _BadInput(f"--active-seconds cannot be negative ({raw})")
    return value


def _load_config_quietly() -> tuple[AppConfig | None, str | None]:
    try:
        settings = load_settings()
        return load_config(settings.config_path), None
    except Exception as exc:  # any failure (missing, invalid): fall back to built-in prices
        return None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def cmd_quote(args: argparse.Namespace) -> int:
    try:
        usage = Usage(
            active_seconds=_seconds(args.active_seconds),
            input_tokens=_count("--input-tokens", args.input_tokens),
            output_tokens=_count("--output-tokens", args.output_tokens),
            cache_read_input_tokens=_count("--cache-read-tokens", args.cache_read_tokens),
            cache_write_5m_tokens=_count("--cache-write-5m-tokens", args.cache_write_5m_tokens),
            cache_write_1h_tokens=_count("--cache-write-1h-tokens", args.cache_write_1h_tokens),
            web_search_requests=_count("--web-searches", args.web_searches),
        )
    except _BadInput as exc:
        return _err(str(exc))
    config, problem = _load_config_quietly()
    if config is None:
        print(f"support-agent: config not loaded ({problem}); using built-in prices", file=sys.stderr)
    pricing = config.pricing if config is not None else Pricing()
    model = args.model or (config.agent.model if config is not None else FALLBACK_MODEL)
    try:
        cost = compute_cost(usage, model, pricing)
    except UnknownModel as exc:
        return _err(str(exc))
    if args.json:
        out: dict[str, Any] = {
            "model": model,
            "runtime_usd": usd_number(cost.runtime_usd),
            "tokens_usd": usd_number(cost.tokens_usd),
            "web_search_usd": usd_number(cost.web_search_usd),
            "total_usd": usd_number(cost.total_usd),
            **{name: usd_number(getattr(cost, name)) for name, _label, _f in TOKEN_CATEGORIES},
            "runtime_usd_per_hour": float(pricing.runtime_usd_per_hour),
            "active_seconds": float(usage.active_seconds),
        }
        print(json.dumps(out))
        return 0
    rows: list[tuple[str, str, str]] = [
        ("runtime", f"{format_duration(usage.active_seconds)} ({usage.active_seconds} s)",
         _money(cost.runtime_usd)),
    ]
    for name, label, usage_field in TOKEN_CATEGORIES:
        rows.append((label, f"{getattr(usage, usage_field):,} tokens", _money(getattr(cost, name))))
    rows.append(("tokens", "", _money(cost.tokens_usd)))
    rows.append(("web search", f"{usage.web_search_requests:,} searches", _money(cost.web_search_usd)))
    print(f"Model {model}; runtime {format_usd(pricing.runtime_usd_per_hour)}/session-hour")
    for label, detail, money in rows:
        print(f"  {label:<15} {detail:>30} {money:>14}")
    print(f"  {'total':<15} {'':>30} {_money(cost.total_usd):>14}  ({format_usd(cost.total_usd)})")
    return 0


def _money(usd: Decimal) -> str:
    return f"${round_usd(usd, 6)}"


# -- costs ----------------------------------------------------------------------------------

COLUMNS_TICKET = ("ticket", "channel", "environment")
COLUMNS_GROUP = ("tickets",)
COLUMNS_FIGURES = (
    "turns", "active_seconds", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_5m_tokens", "cache_write_1h_tokens", "web_searches",
    "runtime_usd", "tokens_usd", "web_search_usd", "total_usd",
)


class Labels:
    """What people read instead of ids: `#12` (or `T123#12` with several workspaces) for a
    ticket, `#support` for a channel. Ids stay in CSV and JSON, the names beside them."""

    def __init__(self, tickets: dict[str, str] | None = None, channels: dict[str, str] | None = None) -> None:
        self.tickets = tickets or {}
        self.channels = channels or {}

    def ticket(self, ticket_id: str) -> str:
        return self.tickets.get(ticket_id, ticket_id)

    def channel(self, channel_id: str) -> str:
        return self.channels.get(channel_id, channel_id)


def ticket_refs(rows: list[Row]) -> dict[str, str]:
    """`T1-12` -> `#12`; with tickets of several workspaces, `T1#12`."""
    parsed = {r.key: r.key.rpartition("-") for r in rows if r.by == "ticket"}
    teams = {team for team, sep, number in parsed.values() if sep and number.isdigit()}
    out: dict[str, str] = {}
    for key, (team, sep, number) in parsed.items():
        if sep and number.isdigit():
            out[key] = f"#{number}" if len(teams) == 1 else f"{team}#{number}"
    return out


def _record(row: Row, labels: Labels | None = None) -> dict[str, Any]:
    """A row as plain values: money as Decimal rounded to micro-dollars."""
    labels = labels or Labels()
    t = row.totals
    rec: dict[str, Any] = {row.by: row.key}
    if row.by == "ticket":
        rec["channel"] = row.channel
        rec["environment"] = row.environment
    else:
        rec["tickets"] = t.tickets
    rec.update(
        turns=t.turns,
        active_seconds=round_usd(t.active_seconds, 3),
        input_tokens=t.input_tokens,
        output_tokens=t.output_tokens,
        cache_read_tokens=t.cache_read_tokens,
        cache_write_5m_tokens=t.cache_write_5m_tokens,
        cache_write_1h_tokens=t.cache_write_1h_tokens,
        web_searches=t.web_searches,
        runtime_usd=round_usd(t.runtime_usd),
        tokens_usd=round_usd(t.tokens_usd),
        web_search_usd=round_usd(t.web_search_usd),
        total_usd=round_usd(t.total_usd),
    )
    if row.by == "ticket":
        rec["ref"] = labels.ticket(row.key)
    channel = row.channel if row.by == "ticket" else row.key if row.by == "channel" else None
    if channel is not None:
        rec["channel_name"] = labels.channel(channel)
    return rec


def render_rows(rows: list[Row], by: str, fmt: str, labels: Labels | None = None) -> str:
    records = [_record(r, labels) for r in rows]
    if fmt == "json":
        return json.dumps(
            [{k: float(v) if isinstance(v, Decimal) else v for k, v in rec.items()} for rec in records],
            indent=2,
        )
    columns = [by, *(COLUMNS_TICKET[1:] if by == "ticket" else COLUMNS_GROUP), *COLUMNS_FIGURES]
    columns += [name for name in ("ref", "channel_name") if records and name in records[0]]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for rec in records:
            writer.writerow({k: str(v) for k, v in rec.items()})
        return buf.getvalue().rstrip("\n")
    return _table(records, by)


def _table(records: list[dict[str, Any]], by: str) -> str:
    head = [by, *(["channel", "env"] if by == "ticket" else ["tickets"]), "turns", "active",
            "tokens in/out", "cache r/w", "runtime", "tokens", "web", "total"]
    body = []
    for rec in records:
        cells = [str(rec.get("ref") or rec.get("channel_name") if by in ("ticket", "channel") else rec[by])]
        cells += [rec["channel_name"], rec["environment"]] if by == "ticket" else [str(rec["tickets"])]
        cells += [
            str(rec["turns"]),
            format_duration(rec["active_seconds"]),
            f"{rec['input_tokens']:,}/{rec['output_tokens']:,}",
            f"{rec['cache_read_tokens']:,}/{rec['cache_write_5m_tokens'] + rec['cache_write_1h_tokens']:,}",
            format_usd(rec["runtime_usd"]),
            format_usd(rec["tokens_usd"]),
            format_usd(rec["web_search_usd"]),
            format_usd(rec["total_usd"]),
        ]
        body.append(cells)
    if records:
        total = sum((rec["total_usd"] for rec in records), Decimal(0))
        body.append(["TOTAL", *[""] * (len(head) - 2), format_usd(total)])
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    numeric = {i for i, h in enumerate(head) if h not in (by, "channel", "env")}
    lines = []
    for cells in [head, *body]:
        lines.append("  ".join(
            c.rjust(widths[i]) if i in numeric else c.ljust(widths[i]) for i, c in enumerate(cells)
        ).rstrip())
    return "\n".join(lines)


async def _read_rows(url: str, by: str, since: date, until: date, settings: Settings) -> tuple[list[Row], Labels]:
    from app.names import Names, slack_client
    from app.redis_conn import connect

    redis = connect(url)
    try:
        rows = await CostLedger(redis).totals(by, since=since, until=until)
        names = Names(redis, slack_client(settings))
        channels = {r.channel if by == "ticket" else r.key for r in rows if by in ("ticket", "channel")}
        labels = Labels(ticket_refs(rows), {c: await names.channel(c) for c in channels if c})
        return rows, labels
    finally:
        await redis.aclose()


def cmd_costs(args: argparse.Namespace) -> int:
    from app.redis_conn import redis_url_or_embedded

    today = utc_today()
    since: date = args.since or today.replace(day=1)
    until: date = args.until or today
    if since > until:
        return _err(f"--since {since} is after --until {until}")
    settings = cli_settings(args.sandbox)
    url, embedded = redis_url_or_embedded(
        settings.redis_url.get_secret_value() if settings.redis_url else None, settings.redis_data_dir
    )
    if args.by == "specialist" and not args.verified:  # issue 19 (app/cost/threads.py)
        try:
            print(asyncio.run(_specialist_rows(url, since, until, args.fmt)))
            return 0
        finally:
            if embedded is not None:
                embedded.close()
    if args.verified or args.by == "category":
        try:  # issue 18: verified resolutions (app/cost/verified.py)
            return _verified(args, url, since, until, settings)
        finally:
            if embedded is not None:
                embedded.close()
    try:
        rows, labels = asyncio.run(_read_rows(url, args.by, since, until, settings))
        # The outcome grader's own line (issue 18), beside the table.
        grader = _grader_line(url, since, until) if args.fmt == "table" else None
    finally:
        if embedded is not None:
            embedded.close()
    print(render_rows(rows, args.by, args.fmt, labels))
    if not rows and args.fmt == "table":
        print(f"(no costs recorded from {since} to {until})", file=sys.stderr)
    if grader:
        print(grader)
    return 0


async def _specialist_rows(url: str, since: date, until: date, fmt: str) -> str:
    from app.cost.threads import render_specialists, specialists_between
    from app.redis_conn import connect

    redis = connect(url)
    try:
        return render_specialists(await specialists_between(redis, since, until), fmt)
    finally:
        await redis.aclose()


def _grader_line(url: str, since: date, until: date) -> str | None:
    from app.cost.grader import GraderLedger
    from app.redis_conn import connect

    async def read() -> str | None:
        redis = connect(url)
        try:
            totals = await GraderLedger(redis).total(since=since, until=until)
        finally:
            await redis.aclose()
        if not totals.evaluations:
            return None
        checks = f"{totals.evaluations} check{'s' if totals.evaluations != 1 else ''}"
        tickets = f"{totals.tickets} ticket{'s' if totals.tickets != 1 else ''}"
        return (f"outcome grader: {format_usd(totals.total_usd)} over {checks} on {tickets}"
                " (its own line, not in the figures above; see --verified)")

    return asyncio.run(read())


def _verified(args: argparse.Namespace, url: str, since: date, until: date, settings: Settings) -> int:
    from app.cost import verified
    from app.redis_conn import connect

    if not args.verified:
        return _err("--by category needs --verified (the ledger's costs are kept by channel, environment and day)")
    by = "day" if args.by == "ticket" else args.by
    config, _problem = _load_config_quietly()

    async def read() -> list[verified.VerifiedRow]:
        redis = connect(url)
        try:
            return verified.group(await verified.gather(redis, config, since=since, until=until), by)
        finally:
            await redis.aclose()

    rows = asyncio.run(read())
    print(verified.render(rows, by, args.fmt))
    if not rows and args.fmt == "table":
        print(f"(no resolutions from {since} to {until})", file=sys.stderr)
    return 0
