"""Retention: sessions hold full transcripts until deleted. Delete them once a ticket has been
resolved for longer than its environment's `retention_days`.

`support-agent retention run [--dry-run]` finds resolved tickets whose session is past the
period, deletes each session (`sessions.delete`: its events and container are gone for good)
and marks the ticket (`session_deleted_at`). Our own record stays: the ticket (title, state,
requester, transitions), its cost ledger and the session id, so costs and the ticket summary
still report, and `support-agent trace` still shows what we recorded.

A ticket qualifies only if it is `resolved` now (a reopened ticket is not), has a session not
yet deleted, and its environment sets `retention_days`. The dry run lists exactly the
sessions the real run would delete, and needs no Anthropic key.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from app.config.model import AppConfig
from app.tickets.model import Ticket, TicketState
from app.tickets.store import P, TicketStore

if TYPE_CHECKING:  # the SDK is imported when sessions are deleted, not to list the command
    from anthropic import AsyncAnthropic

    from app.config.settings import Settings
    from app.observability.scrub import Scrubber

log = logging.getLogger(__name__)

DAY = 86400
SCAN_BATCH = 500


@dataclass(frozen=True)
class Expired:
    ticket_id: str
    ref: str
    session_id: str
    environment: str
    resolved_at: float
    retention_days: int
    age_days: float


@dataclass
class Outcome:
    expired: Expired
    result: str  # deleted | already_gone | skipped | failed
    detail: str = ""


def is_expired(ticket: Ticket, config: AppConfig, now: float) -> Expired | None:
    if ticket.state != TicketState.RESOLVED or not ticket.session_id or ticket.session_deleted_at:
        return None
    env = config.environments.get(ticket.environment)
    if env is None or env.retention_days is None or ticket.resolved_at is None:
        return None
    age = now - ticket.resolved_at
    if age <= env.retention_days * DAY:
        return None
    return Expired(
        ticket_id=ticket.id,
        ref=ticket.ref,
        session_id=ticket.session_id,
        environment=ticket.environment,
        resolved_at=ticket.resolved_at,
        retention_days=env.retention_days,
        age_days=round(age / DAY, 1),
    )


async def all_tickets(store: TicketStore) -> list[Ticket]:
    out: list[Ticket] = []
    start = 0
    while True:
        ids = await store.redis.zrange(f"{P}tickets", start, start + SCAN_BATCH - 1)
        if not ids:
            return out
        out.extend(await store._many(ids))
        start += SCAN_BATCH


async def find_expired(store: TicketStore, config: AppConfig, now: float | None = None) -> list[Expired]:
    now = time.time() if now is None else now
    found = [e for t in await all_tickets(store) if (e := is_expired(t, config, now)) is not None]
    return sorted(found, key=lambda e: e.resolved_at)


async def delete_expired(
    client: AsyncAnthropic, store: TicketStore, config: AppConfig, now: float | None = None
) -> list[Outcome]:
    import anthropic

    from app.sessions.memory import forget_taught

    now = time.time() if now is None else now
    outcomes: list[Outcome] = []
    for item in await find_expired(store, config, now):
        # Re-read: the ticket may have been reopened since it was listed.
        ticket = await store.get(item.ticket_id)
        if ticket is None or is_expired(ticket, config, now) is None:
            outcomes.append(Outcome(item, "skipped", "no longer expired (reopened or changed)"))
            continue
        try:
            # What the ticket taught goes first, so a failure here leaves the session for the next run.
            forgotten = await forget_taught(client, store.redis, config, ticket)
        except anthropic.APIError as exc:
            outcomes.append(Outcome(item, "failed", f"its memories could not be removed ({type(exc).__name__})"))
            continue
        try:
            await client.beta.sessions.delete(item.session_id)
            result, detail = "deleted", (f"{forgotten} memory versions redacted" if forgotten else "")
        except anthropic.NotFoundError:
            result, detail = "already_gone", "the session no longer existed"
        except anthropic.APIStatusError as exc:
            log.warning("retention: session not deleted",
                        extra={"ticket": item.ticket_id, "session": item.session_id, "status": exc.status_code})
            outcomes.append(Outcome(item, "failed", f"the API refused ({exc.status_code})"))
            continue
        except anthropic.APIError as exc:
            outcomes.append(Outcome(item, "failed", type(exc).__name__))
            continue
        ticket.session_deleted_at = time.time()
        await store.save(ticket)
        await store.redis.delete(f"sa:cursor:{item.session_id}", f"sa:rendered:{item.session_id}")
        log.info("retention: session deleted",
                 extra={"ticket": item.ticket_id, "session": item.session_id, "environment": item.environment})
        outcomes.append(Outcome(item, result, detail))
    return outcomes


# -- CLI --------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "retention",
        help="delete sessions of tickets resolved longer ago than their retention period",
        description="Session retention: transcripts of resolved tickets past their environment's retention_days.",
    )
    sub = p.add_subparsers(dest="retention_command", metavar="COMMAND")
    p.set_defaults(func=lambda _args: _help(p))
    run = sub.add_parser(
        "run",
        help="delete (or with --dry-run, list) the expired sessions",
        description=(
            "Delete the Managed Agents sessions of resolved tickets past their environment's "
            "retention_days and mark the tickets; cost ledger and ticket records are kept."
        ),
    )
    run.add_argument("--dry-run", action="store_true", help="list the expired sessions; delete nothing")
    run.add_argument("--format", choices=("text", "json"), default="text", dest="fmt")
    run.set_defaults(func=cmd_run)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _line(e: Expired) -> str:
    resolved = time.strftime("%Y-%m-%d", time.gmtime(e.resolved_at))
    return (f"{e.ticket_id:<14} {e.ref:<6} {e.session_id}  {e.environment}  resolved {resolved} "
            f"({e.age_days:g} days ago; retention {e.retention_days} days)")


def cmd_run(args: argparse.Namespace) -> int:
    from app.trace.cli import boot

    settings, config, scrubber = boot(need_anthropic=not args.dry_run)
    return asyncio.run(_run(settings, config, scrubber, dry_run=args.dry_run, fmt=args.fmt))


async def _run(settings: Settings, config: AppConfig, scrubber: Scrubber, *, dry_run: bool, fmt: str) -> int:
    from app.trace.cli import cli_context

    async with cli_context(settings, config, scrubber) as ctx:
        if dry_run:
            expired = await find_expired(ctx.store, config)
            if fmt == "json":
                print(json.dumps([asdict(e) for e in expired], indent=2))
            else:
                for e in expired:
                    print(_line(e))
                n = len(expired)
                print(f"{n} session{'s' if n != 1 else ''} past retention (dry run: nothing deleted)",
                      file=sys.stderr)
            return 0
        assert ctx.anthropic is not None
        outcomes = await delete_expired(ctx.anthropic, ctx.store, config)
    if fmt == "json":
        print(json.dumps([{**asdict(o.expired), "result": o.result, "detail": o.detail} for o in outcomes], indent=2))
    else:
        for o in outcomes:
            print(f"{o.result:<12} {_line(o.expired)}" + (f"  [{o.detail}]" if o.detail else ""))
        done = sum(1 for o in outcomes if o.result in ("deleted", "already_gone"))
        failed = sum(1 for o in outcomes if o.result == "failed")
        print(f"deleted {done} session{'s' if done != 1 else ''}; {failed} failed", file=sys.stderr)
    return 1 if any(o.result == "failed" for o in outcomes) else 0
