"""Intake's one atomic write: a Slack message becomes ticket work entirely, or not at all.

One Lua script (Redis runs it as a single step: no other client sees half of it, and a
connection lost before it ran leaves nothing behind) checks the event and message dedupe
markers, finds or opens the thread's ticket, queues the message in the ticket's inbox, adds
the job and wakes the follower, and only then sets the dedupe markers. So a failure at any
point before the reply means Slack's retry redoes the whole delivery, and a delivery that was
committed is never committed twice. It is also one round trip where intake used seven.

The script computes per-ticket key names (the id is allocated inside it): fine on a single
Redis server or a primary with replicas, which is what this project supports (not Cluster).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

import redis.asyncio as aioredis

from app.jobs.queue import STREAM as JOB_STREAM
from app.tickets.inbox_signal import CHANNEL as INBOX_CHANNEL
from app.tickets.model import InboxMessage, Ticket, TicketState, Transition

P = "sa:"
DEDUPE_TTL_SECONDS = 24 * 3600
JOB_STREAM_MAXLEN = 100_000

_COMMIT = """
local has_event = ARGV[1] == '1'
if has_event and redis.call('EXISTS', KEYS[1]) == 1 then return {'duplicate_event', '', 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'duplicate_message', '', 0} end
local id = redis.call('GET', KEYS[3])
local created = 0
if id then
  if ARGV[12] ~= '1' then
    local raw = redis.call('GET', 'sa:ticket:' .. id)
    if raw and cjson.decode(raw)['state'] == 'resolved' then return {'resolved', id, 0} end
  end
else
  if ARGV[12] ~= '1' then return {'no_ticket', '', 0} end
  local n = redis.call('INCR', KEYS[4])
  id = ARGV[3] .. '-' .. n
  redis.call('SET', KEYS[3], id)
  redis.call('HSET', KEYS[5], n, id)
  local body = string.gsub(ARGV[4], ARGV[5], '"' .. id .. '"', 1)
  body = string.gsub(body, ARGV[6], tostring(n), 1)
  redis.call('SET', 'sa:ticket:' .. id, body)
  redis.call('ZADD', KEYS[6], ARGV[7], id)
  redis.call('ZADD', KEYS[7], ARGV[7], id)
  redis.call('ZADD', KEYS[8], ARGV[7], id)
  redis.call('RPUSH', 'sa:ticket:' .. id .. ':transitions', ARGV[8])
  created = 1
end
redis.call('RPUSH', 'sa:ticket:' .. id .. ':inbox', ARGV[9])
redis.call('XADD', KEYS[9], 'MAXLEN', '~', ARGV[13], '*', 'ticket_id', id, 'reason', ARGV[10])
redis.call('PUBLISH', ARGV[11], id)
if has_event then redis.call('SET', KEYS[1], '1', 'EX', ARGV[2]) end
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
return {'committed', id, created}
"""


@dataclass(frozen=True)
class Committed:
    """`status`: committed | duplicate_event | duplicate_message | resolved | no_ticket."""

    status: str
    ticket_id: str
    created: bool


class MessageCommit:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._script = redis.register_script(_COMMIT)

    async def __call__(
        self,
        *,
        event_id: str | None,
        team_id: str,
        channel_id: str,
        thread_ts: str,
        message: InboxMessage,
        may_open: bool,
        environment: str,
        title: str,
        reason: str = "message",
    ) -> Committed:
        """Commit one message. `may_open`: the message asks for a ticket (a mention), so the
        thread gets one if it has none, and a resolved ticket takes it (its worker reopens it);
        otherwise only an open ticket's thread takes it."""
        id_token, number_token = (f'"SA{kind}{secrets.token_hex(8)}"' for kind in ("ID", "NUM"))
        template = Ticket(
            id="-",
            number=0,
            team_id=team_id,
            channel_id=channel_id,
            thread_ts=thread_ts,
            requester_id=message.user_id,
            environment=environment,
            title=title[:200],
        )
        body = template.model_dump(mode="json")
        # Placeholders the script fills with the id and number it allocates (each used once).
        body["id"], body["number"] = id_token[1:-1], number_token[1:-1]
        opened = Transition(
            from_state=None, to_state=TicketState.OPEN, cause="opened", actor=message.user_id
        ).model_dump_json()
        reply = await self._script(
            keys=[
                f"{P}dedupe:event:{event_id or '-'}",
                f"{P}dedupe:msg:{channel_id}:{message.ts}",
                f"{P}thread:{team_id}:{channel_id}:{thread_ts}",
                f"{P}team:{team_id}:seq",
                f"{P}team:{team_id}:numbers",
                f"{P}tickets",
                f"{P}tickets:active",
                f"{P}channel:{team_id}:{channel_id}",
                JOB_STREAM,
            ],
            args=[
                "1" if event_id else "0",
                DEDUPE_TTL_SECONDS,
                team_id,
                json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                id_token,
                number_token,
                template.created_at,
                opened,
                message.model_dump_json(),
                reason,
                INBOX_CHANNEL,
                "1" if may_open else "0",
                JOB_STREAM_MAXLEN,
            ],
        )
        status, ticket_id, created = reply
        return Committed(str(status), str(ticket_id), bool(int(created)))
