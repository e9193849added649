"""`support-agent trace TICKET [--format text|json|jsonl]`: a ticket's timeline on stdout.

TICKET is `#42` (the only workspace's ticket 42), `T123#42`, a Slack thread link, a session id
(`sesn_...`) or a ticket id (`T123-42`). Needs ANTHROPIC_API_KEY (+ ANTHROPIC_BASE_URL) and
Redis (REDIS_URL, or the embedded one under REDIS_DATA_DIR); not Slack.
Exit codes: 0 printed, 1 settings missing, 2 unknown ticket or bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.cli import add_sandbox_option, cli_settings
from app.trace import FORMATS

# The SDKs, Redis and the trace builder are imported when the command runs, not to list it.
if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from anthropic import AsyncAnthropic

    from app.config.model import AppConfig
    from app.config.settings import Settings
    from app.observability.scrub import Scrubber
    from app.tickets.store import TicketStore

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "trace",
        help="print a ticket's timeline (messages, tool calls, approvals, errors, costs)",
        description=(
            "Print a ticket's ordered timeline from its session's event history joined with our "
            "ticket record. Secrets are scrubbed as in the logs."
        ),
    )
    p.add_argument("ticket", metavar="TICKET", help="#42, T123#42, a Slack thread link or a session id (sesn_...)")
    p.add_argument("--format", choices=FORMATS, default="text", dest="fmt", help="output format (default: text)")
    add_sandbox_option(p)
    p.set_defaults(func=cmd_trace)


@dataclass
class CliContext:
    settings: Settings
    config: AppConfig
    redis: aioredis.Redis
    anthropic: AsyncAnthropic | None
    scrubber: Scrubber

    @property
    def store(self) -> TicketStore:
        from app.tickets.store import TicketStore

        return TicketStore(self.redis)


def boot(*, need_anthropic: bool, settings: Settings | None = None) -> tuple[Settings, AppConfig, Scrubber]:
    """Settings and config for a one-shot command; logs (warnings only) go to stderr."""
    from app.config.model import load_config
    from app.config.settings import SettingsError, describe_missing, load_settings
    from app.observability.logs import configure_logging
    from app.runtime import make_scrubber

    settings = settings or load_settings()
    missing = settings.missing(need_slack=False, need_anthropic=need_anthropic)
    if missing:
        raise SettingsError(describe_missing(missing))
    config = load_config(settings.config_path)
    scrubber = make_scrubber(settings, config)
    configure_logging(scrubber, "WARNING")
    return settings, config, scrubber


@asynccontextmanager
async def cli_context(settings: Settings, config: AppConfig, scrubber: Scrubber) -> AsyncIterator[CliContext]:
    from app.redis_conn import connect, redis_url_or_embedded
    from app.runtime import make_anthropic_client

    url, embedded = redis_url_or_embedded(
        settings.redis_url.get_secret_value() if settings.redis_url else None, settings.redis_data_dir
    )
    redis = connect(url)
    client = make_anthropic_client(settings) if settings.anthropic_api_key else None
    try:
        yield CliContext(settings, config, redis, client, scrubber)
    finally:
        await redis.aclose()
        if client is not None:
            await client.close()
        if embedded is not None:
            embedded.close()


def cmd_trace(args: argparse.Namespace) -> int:
    settings, config, scrubber = boot(need_anthropic=True, settings=cli_settings(args.sandbox))
    return asyncio.run(_trace(settings, config, scrubber, args.ticket, args.fmt))


async def _trace(settings: Settings, config: AppConfig, scrubber: Scrubber, ref: str, fmt: str) -> int:
    from app.names import Names, slack_client
    from app.trace.build import build_trace
    from app.trace.lookup import TicketNotFound, find_ticket
    from app.trace.render import render

    async with cli_context(settings, config, scrubber) as ctx:
        try:
            ticket = await find_ticket(ctx.store, ref)
        except TicketNotFound as exc:
            print(f"support-agent trace: {exc}", file=sys.stderr)
            return EXIT_USAGE
        names = Names(ctx.redis, slack_client(settings))
        trace = await build_trace(ctx.anthropic, ctx.store, ticket, scrubber, settings.anthropic_console_workspace,
                                  names)
    print(render(trace, fmt))
    return 0
