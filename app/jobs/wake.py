"""Waking a ticket that nobody follows: a session parked on an approval, its budget or its requester.

A follower lets its ticket go when the session waits on a person (`requires_action` on a tool
confirmation, `budget_reached`, or idle after an answer): no SSE stream, no lease. Whatever
ends the wait (Approve / Deny, a budget raise, a webhook) first acts on the session, then calls
`wake`, which in one transaction marks the ticket (`sa:wake:<id>`) and queues its job.

The mark closes the race between "let go" and the job being consumed. A job taken while a
follower still holds the lease is dropped (its holder is deemed to see everything), so:
- a holder that lets go looks at the mark after releasing the lease, and follows again if it
  is set (`Worker._follow_in_scope`);
- a worker that acquires the lease clears the mark in the same step (`LeaseManager.acquire`),
  and then lists the session's history, which holds what the waker did before it woke us.
A wake-up is therefore consumed exactly once by someone who reads the session after it; at
worst a ticket is followed once more than needed, which finds nothing new and lets go again.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from app.jobs.queue import STREAM

WAKE_TTL_SECONDS = 7 * 24 * 3600
JOB_STREAM_MAXLEN = 100_000


def wake_key(ticket_id: str) -> str:
    return f"sa:wake:{ticket_id}"


async def wake(redis: aioredis.Redis, ticket_id: str, reason: str) -> None:
    """Mark the ticket woken and queue its job (one transaction: both or neither)."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(wake_key(ticket_id), reason, ex=WAKE_TTL_SECONDS)
        pipe.xadd(STREAM, {"ticket_id": ticket_id, "reason": reason}, maxlen=JOB_STREAM_MAXLEN)
        await pipe.execute()


async def woken(redis: aioredis.Redis, ticket_id: str) -> bool:
    """Whether a wake-up for the ticket is still to be consumed."""
    return bool(await redis.exists(wake_key(ticket_id)))
