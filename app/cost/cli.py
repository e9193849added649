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

from app.config.model import AppConfig, Pricing, load_config
from app.config.settings import load_settings
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
    p.add_argument("--by", choices=DIMENSIONS, default="ticket", help="group by (default: ticket)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", dest="fmt")
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


def _record(row: Row) -> dict[str, Any]:
    """A row as plain values: money as Decimal rounded to micro-dollars."""
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
    return rec


def render_rows(rows: list[Row], by: str, fmt: str) -> str:
    records = [_record(r) for r in rows]
    if fmt == "json":
        return json.dumps(
            [{k: float(v) if isinstance(v, Decimal) else v for k, v in rec.items()} for rec in records],
            indent=2,
        )
    columns = [by, *(COLUMNS_TICKET[1:] if by == "ticket" else COLUMNS_GROUP), *COLUMNS_FIGURES]
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
        cells = [str(rec[by])]
        cells += [rec["channel"], rec["environment"]] if by == "ticket" else [str(rec["tickets"])]
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


async def _read_rows(url: str, by: str, since: date, until: date) -> list[Row]:
    from app.redis_conn import connect

    redis = connect(url)
    try:
        return await CostLedger(redis).totals(by, since=since, until=until)
    finally:
        await redis.aclose()


def cmd_costs(args: argparse.Namespace) -> int:
    from app.redis_conn import redis_url_or_embedded

    today = utc_today()
    since: date = args.since or today.replace(day=1)
    until: date = args.until or today
    if since > until:
        return _err(f"--since {since} is after --until {until}")
    settings = load_settings()
    url, embedded = redis_url_or_embedded(
        settings.redis_url.get_secret_value() if settings.redis_url else None, settings.redis_data_dir
    )
    try:
        rows = asyncio.run(_read_rows(url, args.by, since, until))
    finally:
        if embedded is not None:
            embedded.close()
    print(render_rows(rows, args.by, args.fmt))
    if not rows and args.fmt == "table":
        print(f"(no costs recorded from {since} to {until})", file=sys.stderr)
    return 0
