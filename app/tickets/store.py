"""Tickets in Redis: the thread -> ticket -> session mapping, states, inbox and dedupe.

Everything a ticket needs to survive a restart lives here; no process keeps it in memory.
Keys (all under `sa:`):
  ticket:<id>                  the Ticket JSON
  ticket:<id>:transitions      list of Transition JSON, oldest first
  ticket:<id>:inbox            list of InboxMessage JSON waiting for the session, in order
  ticket:<id>:sent             set of Slack ts already delivered to the session
  thread:<team>:<channel>:<ts> -> ticket id
  session:<session id>         -> ticket id
  team:<team>:seq              ticket number counter per workspace
  team:<team>:numbers          hash number -> ticket id
  tickets                      zset of ticket ids by creation time
  tickets:active               zset of the ids of tickets in an active state, by creation time
  channel:<team>:<channel>     zset of that channel's ticket ids by creation time
  dedupe:event:<event id>, dedupe:msg:<channel>:<ts>   delivery dedupe markers
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from app.tickets.inbox_signal import CHANNEL as INBOX_CHANNEL
from app.tickets.model import ACTIVE_STATES, InboxMessage, Ticket, TicketState, Transition

P = "sa:"
DEDUPE_TTL_SECONDS = 24 * 3600
# Closed by a person (or the escalation path): only an explicit move from that state reopens it.
CLOSED_STATES = frozenset({TicketState.RESOLVED, TicketState.ESCALATED})

# Allocate a ticket for a thread exactly once, even when two intakes race on the same thread.
_OPEN_LUA = """
local existing = redis.call('GET', KEYS[1])
if existing then return {existing, 0} end
local n = redis.call('INCR', KEYS[2])
local id = ARGV[1] .. '-' .. n
redis.call('SET', KEYS[1], id)
redis.call('HSET', KEYS[3], n, id)
return {id, n}
"""


class TicketStore:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._open = redis.register_script(_OPEN_LUA)

    # -- delivery dedupe ---------------------------------------------------------------

    async def claim_event(self, event_id: str) -> bool:
        """True the first time an Events API event id is seen."""
        return bool(await self.redis.set(f"{P}dedupe:event:{event_id}", "1", nx=True, ex=DEDUPE_TTL_SECONDS))

    async def claim_message(self, channel: str, ts: str) -> bool:
        """True the first time a Slack message (channel + ts) is seen, whichever event carried it."""
        return bool(await self.redis.set(f"{P}dedupe:msg:{channel}:{ts}", "1", nx=True, ex=DEDUPE_TTL_SECONDS))

    async def release_message(self, channel: str, ts: str) -> None:
        await self.redis.delete(f"{P}dedupe:msg:{channel}:{ts}")

    # -- tickets ----------------------------------------------------------------------

    async def open_ticket(
        self,
        *,
        team_id: str,
        channel_id: str,
        thread_ts: str,
        requester_id: str,
        environment: str,
        title: str,
    ) -> tuple[Ticket, bool]:
        """The thread's ticket, created if the thread has none. Returns (ticket, created)."""
        thread_key = f"{P}thread:{team_id}:{channel_id}:{thread_ts}"
        ticket_id, number = await self._open(
            keys=[thread_key, f"{P}team:{team_id}:seq", f"{P}team:{team_id}:numbers"], args=[team_id]
        )
        existing = await self.get(ticket_id)
        if existing is not None:
            return existing, False
        if int(number) == 0:
            number = int(ticket_id.rsplit("-", 1)[1])
        ticket = Ticket(
            id=ticket_id,
            number=int(number),
            team_id=team_id,
            channel_id=channel_id,
            thread_ts=thread_ts,
            requester_id=requester_id,
            environment=environment,
            title=title[:200],
        )
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{P}ticket:{ticket.id}", ticket.model_dump_json())
            pipe.zadd(f"{P}tickets", {ticket.id: ticket.created_at})
            pipe.zadd(f"{P}tickets:active", {ticket.id: ticket.created_at})
            pipe.zadd(f"{P}channel:{team_id}:{channel_id}", {ticket.id: ticket.created_at})
            pipe.rpush(
                f"{P}ticket:{ticket.id}:transitions",
                Transition(from_state=None, to_state=TicketState.OPEN, cause="opened", actor=requester_id)
                .model_dump_json(),
            )
            await pipe.execute()
        return ticket, True

    async def get(self, ticket_id: str) -> Ticket | None:
        raw = await self.redis.get(f"{P}ticket:{ticket_id}")
        return Ticket.model_validate_json(raw) if raw else None

    async def by_thread(self, team_id: str, channel_id: str, thread_ts: str) -> Ticket | None:
        ticket_id = await self.redis.get(f"{P}thread:{team_id}:{channel_id}:{thread_ts}")
        return await self.get(str(ticket_id)) if ticket_id else None

    async def by_number(self, team_id: str, number: int) -> Ticket | None:
        ticket_id = await self.redis.hget(f"{P}team:{team_id}:numbers", str(number))
        return await self.get(str(ticket_id)) if ticket_id else None

    async def by_session(self, session_id: str) -> Ticket | None:
        ticket_id = await self.redis.get(f"{P}session:{session_id}")
        return await self.get(str(ticket_id)) if ticket_id else None

    async def save(self, ticket: Ticket) -> None:
        """Write the ticket's fields, but never its state: a state moves only by `transition`.

        Whoever saves may hold a copy read before a person resolved or escalated the ticket (a
        follower finishing its turn); writing that copy's state would undo the close. The copy
        is brought up to the stored state instead."""
        await self._write(ticket, None)

    async def transition(
        self, ticket: Ticket, to_state: TicketState, cause: str, actor: str | None = None
    ) -> Ticket:
        """Move a ticket to a state, recording when and why. A no-op move is not recorded.

        Compare-and-set on the stored ticket: a move made from a stale copy never undoes a close
        (resolved, escalated) made meanwhile; the stored ticket is returned unchanged then, and
        the copy is brought up to it."""
        if ticket.state == to_state:
            return ticket
        return await self._write(ticket, (to_state, cause, actor))

    async def _write(self, ticket: Ticket, move: tuple[TicketState, str, str | None] | None) -> Ticket:
        key = f"{P}ticket:{ticket.id}"
        seen = ticket.state  # what the caller's copy says: the state it decided from
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    stored = Ticket.model_validate_json(raw) if raw else None
                    if stored is not None:
                        ticket.state, ticket.resolved_at = stored.state, stored.resolved_at
                    record: Transition | None = None
                    if move is not None:
                        to_state, cause, actor = move
                        closed_meanwhile = ticket.state in CLOSED_STATES and ticket.state != seen
                        if ticket.state == to_state or closed_meanwhile:
                            await pipe.reset()
                            return ticket
                    pipe.multi()
                    if move is not None:
                        record = Transition(from_state=ticket.state, to_state=to_state, cause=cause, actor=actor)
                        ticket.state = to_state
                        if to_state == TicketState.RESOLVED:
                            ticket.resolved_at = record.at
                    ticket.updated_at = time.time()
                    pipe.set(key, ticket.model_dump_json())
                    if ticket.session_id:
                        pipe.set(f"{P}session:{ticket.session_id}", ticket.id)
                    if ticket.state in ACTIVE_STATES:
                        pipe.zadd(f"{P}tickets:active", {ticket.id: ticket.created_at})
                    else:
                        pipe.zrem(f"{P}tickets:active", ticket.id)
                    if record is not None:
                        pipe.rpush(f"{key}:transitions", record.model_dump_json())
                    await pipe.execute()
                    return ticket
                except WatchError:
                    continue

    async def transitions(self, ticket_id: str) -> list[Transition]:
        raw = await self.redis.lrange(f"{P}ticket:{ticket_id}:transitions", 0, -1)
        return [Transition.model_validate_json(r) for r in raw]

    async def channel_tickets(self, team_id: str, channel_id: str, limit: int = 50) -> list[Ticket]:
        ids = await self.redis.zrevrange(f"{P}channel:{team_id}:{channel_id}", 0, limit - 1)
        return await self._many(ids)

    async def recent(self, limit: int = 50, since: float | None = None) -> list[Ticket]:
        if since is None:
            ids = await self.redis.zrevrange(f"{P}tickets", 0, limit - 1)
        else:
            ids = await self.redis.zrevrangebyscore(f"{P}tickets", "+inf", since, start=0, num=limit)
        return await self._many(ids)

    async def active(self, limit: int = 500) -> list[Ticket]:
        """Tickets in an active state, newest first, however old they are."""
        ids = await self.redis.zrevrange(f"{P}tickets:active", 0, limit - 1)
        return await self._many(ids)

    async def count_active(self) -> int:
        return int(await self.redis.zcard(f"{P}tickets:active"))

    async def _many(self, raw_ids: Iterable[Any]) -> list[Ticket]:
        ids = [str(i) for i in raw_ids]
        if not ids:
            return []
        raws = await self.redis.mget([f"{P}ticket:{i}" for i in ids])
        return [Ticket.model_validate_json(r) for r in raws if r]

    # -- inbox: user messages on their way to the session ---------------------------------

    async def push_message(self, ticket_id: str, message: InboxMessage) -> None:
        """Queue a message for the ticket's session and wake its follower (`inbox_signal`)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(f"{P}ticket:{ticket_id}:inbox", message.model_dump_json())
            pipe.publish(INBOX_CHANNEL, ticket_id)
            await pipe.execute()

    async def pending_messages(self, ticket_id: str) -> list[InboxMessage]:
        raw = await self.redis.lrange(f"{P}ticket:{ticket_id}:inbox", 0, -1)
        return [InboxMessage.model_validate_json(r) for r in raw]

    async def was_sent(self, ticket_id: str, ts: str) -> bool:
        return bool(await self.redis.sismember(f"{P}ticket:{ticket_id}:sent", ts))

    async def count_sent_with_text(self, ticket_id: str, text: str) -> int:
        return int(await self.redis.hget(f"{P}ticket:{ticket_id}:sent_texts", _text_key(text)) or 0)

    async def mark_sent(self, ticket_id: str, message: InboxMessage) -> None:
        """Record delivery and drop the message from the head of the inbox, atomically."""
        already = await self.was_sent(ticket_id, message.ts)
        async with self.redis.pipeline(transaction=True) as pipe:
            if not already:
                pipe.hincrby(f"{P}ticket:{ticket_id}:sent_texts", _text_key(message.text), 1)
            pipe.sadd(f"{P}ticket:{ticket_id}:sent", message.ts)
            pipe.lrem(f"{P}ticket:{ticket_id}:inbox", 1, message.model_dump_json())
            await pipe.execute()


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
