"""Find a ticket from what a person types: `#42`, `T123#42`, a Slack thread link, a session id
or a ticket id (`T123-42`)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

from app.tickets.model import Ticket
from app.tickets.store import P, TicketStore

_NUMBER = re.compile(r"^#?(\d+)$")
_TEAM_NUMBER = re.compile(r"^([A-Z][A-Z0-9]+)#(\d+)$", re.IGNORECASE)
_TICKET_ID = re.compile(r"^([A-Z][A-Z0-9]+)-(\d+)$", re.IGNORECASE)
_ARCHIVES = re.compile(r"/archives/([A-Z0-9]+)/p(\d{10})(\d{6})")
SESSION_PREFIXES = ("sesn_", "session_")


class TicketNotFound(LookupError):
    """No ticket matches; the message says why, for the person who asked."""


def parse_slack_link(text: str) -> tuple[str, str] | None:
    """(channel, thread ts) of a Slack message link; a reply's link gives its thread's ts."""
    if "/archives/" not in text:
        return None
    match = _ARCHIVES.search(text)
    if not match:
        return None
    channel, secs, micros = match.groups()
    ts = f"{secs}.{micros}"
    query = parse_qs(urlparse(text.strip("<>")).query)
    thread_ts = (query.get("thread_ts") or [""])[0]
    return channel, thread_ts or ts


async def teams(store: TicketStore) -> list[str]:
    found: set[str] = set()
    async for key in store.redis.scan_iter(match=f"{P}team:*:numbers", count=500):
        found.add(str(key)[len(f"{P}team:"):-len(":numbers")])
    return sorted(found)


async def find_ticket(store: TicketStore, ref: str, team_id: str | None = None) -> Ticket:
    """The ticket `ref` names. `team_id` (the asker's workspace) resolves a bare `#42`."""
    ref = ref.strip()
    if not ref:
        raise TicketNotFound("no ticket given")
    if ref.startswith(SESSION_PREFIXES):
        ticket = await store.by_session(ref)
        if ticket is None:
            raise TicketNotFound(f"no ticket has session {ref}")
        return ticket
    link = parse_slack_link(ref)
    if link is not None:
        return await _by_link(store, *link, team_id=team_id, ref=ref)
    match = _TEAM_NUMBER.match(ref)
    if match:
        return await _by_number(store, match.group(1).upper(), int(match.group(2)))
    match = _TICKET_ID.match(ref)
    if match:
        ticket = await store.get(f"{match.group(1).upper()}-{match.group(2)}")
        if ticket is not None:
            return ticket
        return await _by_number(store, match.group(1).upper(), int(match.group(2)))
    match = _NUMBER.match(ref)
    if match:
        number = int(match.group(1))
        if team_id:
            return await _by_number(store, team_id, number)
        known = await teams(store)
        if not known:
            raise TicketNotFound(f"no ticket {ref}: there are no tickets yet")
        if len(known) > 1:
            raise TicketNotFound(
                f"tickets from several workspaces ({', '.join(known)}): say which, e.g. {known[0]}#{number}"
            )
        return await _by_number(store, known[0], number)
    raise TicketNotFound(
        f"cannot read {ref!r} as a ticket: use #42, T123#42, a Slack thread link or a session id (sesn_...)"
    )


async def _by_number(store: TicketStore, team_id: str, number: int) -> Ticket:
    ticket = await store.by_number(team_id, number)
    if ticket is None:
        raise TicketNotFound(f"no ticket #{number} in workspace {team_id}")
    return ticket


async def _by_link(store: TicketStore, channel: str, ts: str, *, team_id: str | None, ref: str) -> Ticket:
    candidates = [team_id] if team_id else await teams(store)
    for team in candidates:
        ticket = await store.by_thread(team, channel, ts)
        if ticket is not None:
            return ticket
    # A link to a reply without thread_ts: the ticket's root may be another message.
    raise TicketNotFound(
        f"no ticket for the Slack thread {channel}/{ts} (link to the thread's first message, or add ?thread_ts=)"
    )
