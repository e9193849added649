"""What only we know about a ticket, kept for its trace: who approved a tool, which worker
followed it and why (takeovers), which webhooks woke it, what Slack did to its streams.

The session's event history says *that* a tool was confirmed, never *who* clicked; the
approval handler (`app.slack.approvals`) records that. Keys (all under `sa:ticket:<id>:`):
  approvals   hash  tool-use event id -> {"user", "result", "reason", "at"} (shared with
                    app.slack.approvals, which writes it with HSETNX)
  follows     list  {"at", "worker", "reason", "fence"}, oldest first (last FOLLOWS_KEPT)
  webhooks    list  {"at", "id", "type", "action"}, oldest first (last WEBHOOKS_KEPT)
  streams     list  {"at", "event", "detail"}, oldest first (last STREAMS_KEPT); event is
                    rotated | expired | refused | congested (app.render.stream)
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

FOLLOWS_KEPT = 200
WEBHOOKS_KEPT = 200
STREAMS_KEPT = 200

# Reasons a worker starts following a ticket that mean another worker had it before.
TAKEOVER_REASONS = ("takeover", "reclaimed")


def _key(ticket_id: str, what: str) -> str:
    return f"sa:ticket:{ticket_id}:{what}"


def is_takeover(reason: str) -> bool:
    return reason.split(":", 1)[0] in TAKEOVER_REASONS


async def record_approval(
    redis: aioredis.Redis,
    ticket_id: str,
    tool_use_id: str,
    *,
    actor: str,
    result: str,
    reason: str | None = None,
    at: float | None = None,
) -> bool:
    """Who answered a tool confirmation (`result` allow|deny); the first answer is kept."""
    value = json.dumps(
        {"user": actor, "result": result, "reason": reason, "at": at if at is not None else time.time()}
    )
    return bool(await redis.hsetnx(_key(ticket_id, "approvals"), tool_use_id, value))  # type: ignore[misc]


async def approvals(redis: aioredis.Redis, ticket_id: str) -> dict[str, dict[str, Any]]:
    raw: dict[str, str] = await redis.hgetall(_key(ticket_id, "approvals"))  # type: ignore[assignment,misc]
    out: dict[str, dict[str, Any]] = {}
    for tool_use_id, value in raw.items():
        try:
            decision = json.loads(value)
        except ValueError:
            continue
        if isinstance(decision, dict):
            decision.setdefault("actor", decision.get("user"))
            out[tool_use_id] = decision
    return out


async def _append(redis: aioredis.Redis, ticket_id: str, what: str, item: dict[str, Any], kept: int) -> None:
    """Add a timestamped item to one of the ticket's lists, keeping the last `kept`."""
    key = _key(ticket_id, what)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, json.dumps({"at": time.time(), **item}))
        pipe.ltrim(key, -kept, -1)
        await pipe.execute()


async def _items(redis: aioredis.Redis, ticket_id: str, what: str) -> list[dict[str, Any]]:
    raw = await redis.lrange(_key(ticket_id, what), 0, -1)  # type: ignore[misc]
    return [json.loads(r) for r in raw]


async def record_follow(redis: aioredis.Redis, ticket_id: str, *, worker: str, reason: str, fence: int) -> None:
    """A worker started following the ticket (with the lease's fence)."""
    await _append(redis, ticket_id, "follows", {"worker": worker, "reason": reason, "fence": fence}, FOLLOWS_KEPT)


async def follows(redis: aioredis.Redis, ticket_id: str) -> list[dict[str, Any]]:
    return await _items(redis, ticket_id, "follows")


async def record_webhook(
    redis: aioredis.Redis, ticket_id: str, *, webhook_id: str, event_type: str, action: str
) -> None:
    item = {"id": webhook_id, "type": event_type, "action": action}
    await _append(redis, ticket_id, "webhooks", item, WEBHOOKS_KEPT)


async def webhooks(redis: aioredis.Redis, ticket_id: str) -> list[dict[str, Any]]:
    return await _items(redis, ticket_id, "webhooks")


async def record_stream(redis: aioredis.Redis, ticket_id: str, *, event: str, detail: dict[str, Any]) -> None:
    """Something Slack did to one of the ticket's streamed messages (see `app.render.stream`)."""
    await _append(redis, ticket_id, "streams", {"event": event, "detail": detail}, STREAMS_KEPT)


async def streams(redis: aioredis.Redis, ticket_id: str) -> list[dict[str, Any]]:
    return await _items(redis, ticket_id, "streams")
