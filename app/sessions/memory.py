"""Memory stores for tickets (issue 19): made on first use, attached at session creation, and
forgotten with an expired ticket. What a ticket read and wrote: `app/sessions/memory_history.py`.

- Stores are found by their ids in Redis (`sa:provisioned`, kinds `memory_store:customer:<key>`
  and `memory_store:product:<env>`, as `app/sessions/resources.py` keeps agents and vaults), else
  by our metadata among the workspace's stores, else created; one process at a time.
- `session_resources` gives `sessions.create(resources=...)` (SDK
  `BetaManagedAgentsMemoryStoreResourceParam`) and records what a ticket got
  (`sa:memory:ticket:<id>`), so the trace, App Home and `/support memory` know its stores.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import anthropic
import redis.asyncio as aioredis
from anthropic import AsyncAnthropic
from pydantic import BaseModel
from slack_sdk.errors import SlackApiError

from app.config.memory import customer_key, customer_label, customer_store_name, product_store_name
from app.config.model import AppConfig
from app.sessions.resources import first_use_lock, record_id, recorded_id
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

KIND = "memory_store"
MANAGED_BY = "support-agent"
STORES = "sa:memory:stores"  # store id -> {kind, key, label}
TEAM_CACHE_SECONDS = 86400


def ticket_key(ticket_id: str) -> str:
    return f"sa:memory:ticket:{ticket_id}"


class Attachment(BaseModel):
    """A store a ticket's session got."""

    store_id: str
    kind: Literal["customer", "product"]
    key: str  # the customer organisation, or the environment for a product store
    label: str
    access: Literal["read_write", "read_only"]
    instructions: str | None = None

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": KIND, "memory_store_id": self.store_id, "access": self.access}
        if self.instructions:
            out["instructions"] = self.instructions
        return out


# -- which stores -------------------------------------------------------------------------------


async def requester_team(slack: Any, redis: aioredis.Redis, user_id: str) -> str | None:
    """The requester's home team (`users.info` `team_id`: another organisation's for a Slack
    Connect member), cached a day; unknown on any error (no customer store then, never a guess)."""
    if slack is None or not user_id:
        return None
    key = f"sa:memory:userteam:{user_id}"
    cached = await redis.get(key)
    if cached:
        return str(cached)
    try:
        response = await slack.users_info(user=user_id)
    except SlackApiError as exc:
        log.warning("users.info failed; no customer memory", extra={"error": exc.response.get("error")})
        return None
    team = (response.get("user") or {}).get("team_id")
    if not isinstance(team, str) or not team:
        return None
    await redis.set(key, team, ex=TEAM_CACHE_SECONDS)
    return team


async def _find_existing(client: AsyncAnthropic, kind: str, key: str) -> str | None:
    """A store we made before (its metadata names it) whose id Redis lost."""
    async for store in client.beta.memory_stores.list(limit=100):
        meta = store.metadata or {}
        if meta.get("managed_by") == MANAGED_BY and meta.get("kind") == kind and meta.get("key") == key:
            return store.id
    return None


async def ensure_store(
    client: AsyncAnthropic, redis: aioredis.Redis, *, kind: str, key: str, label: str, name: str, description: str
) -> str:
    """The store's id: remembered, found, or created (idempotent, one maker at a time)."""
    what = f"{kind}:{key}"
    found = await recorded_id(redis, KIND, what)
    if found:
        return found
    async with first_use_lock(redis, f"{KIND}:{what}"):
        found = await recorded_id(redis, KIND, what) or await _find_existing(client, kind, key)
        if not found:
            store = await client.beta.memory_stores.create(
                name=name, description=description,
                metadata={"managed_by": MANAGED_BY, "kind": kind, "key": key[:512]},
            )
            found = store.id
            log.info("memory store created", extra={"memory_store": found, "kind": kind, "key": key})
        await record_id(redis, KIND, what, found)
        await redis.hset(STORES, found, json.dumps({"kind": kind, "key": key, "label": label}))
    return found


async def attachments_for(
    client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, ticket: Ticket, slack: Any = None
) -> list[Attachment]:
    env = config.environments.get(ticket.environment)
    memory = env.memory if env is not None else None
    if memory is None or not memory.enabled:
        return []
    out: list[Attachment] = []
    if memory.customers is not None:
        team = await requester_team(slack, redis, ticket.requester_id) if memory.customers.slack_connect else None
        key = customer_key(
            config.customers, memory, channel_id=ticket.channel_id, requester_team=team, our_team=ticket.team_id
        )
        if key is not None:
            label = customer_label(config.customers, key)
            store_id = await ensure_store(
                client, redis, kind="customer", key=key, label=label,
                name=customer_store_name(config.customers, key), description=memory.customers.description,
            )
            out.append(Attachment(store_id=store_id, kind="customer", key=key, label=label,
                                  access=memory.customers.access, instructions=memory.customers.instructions))
    if memory.product is not None:
        name = product_store_name(config.agent.name, ticket.environment, memory.product)
        store_id = await ensure_store(
            client, redis, kind="product", key=ticket.environment, label=f"product ({ticket.environment})",
            name=name, description=memory.product.description,
        )
        out.append(Attachment(store_id=store_id, kind="product", key=ticket.environment,
                              label=f"product ({ticket.environment})", access="read_only",
                              instructions=memory.product.instructions))
    return out


async def session_resources(
    client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, ticket: Ticket, slack: Any = None
) -> list[dict[str, Any]]:
    """`resources` for the ticket's new session (memory stores attach only at creation).

    A store the API will not make leaves the session without memory (logged), rather than the
    ticket without an answer: no customer's memory is ever given in its place."""
    try:
        return await _session_resources(client, redis, config, ticket, slack)
    except anthropic.APIError as exc:
        log.warning("memory stores not attached", extra={"ticket": ticket.id, "error": type(exc).__name__})
        return []


async def _session_resources(
    client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, ticket: Ticket, slack: Any = None
) -> list[dict[str, Any]]:
    attached = await attachments_for(client, redis, config, ticket, slack)
    if attached:
        await redis.set(ticket_key(ticket.id), json.dumps([a.model_dump() for a in attached]))
    return [a.resource() for a in attached]


async def attached(redis: aioredis.Redis, ticket_id: str) -> list[Attachment]:
    raw = await redis.get(ticket_key(ticket_id))
    return [Attachment.model_validate(a) for a in json.loads(raw)] if raw else []


async def known_stores(redis: aioredis.Redis) -> dict[str, dict[str, str]]:
    return {str(k): json.loads(v) for k, v in (await redis.hgetall(STORES)).items()}


# -- retention ------------------------------------------------------------------------------------


async def forget_taught(client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, ticket: Ticket) -> int:
    """With `memory.forget_with_retention`: what the ticket's session wrote goes with it. A memory
    whose content is still this session's is deleted (if unchanged meanwhile), and every version
    the session wrote is redacted. Returns how many versions were redacted (idempotent)."""
    env = config.environments.get(ticket.environment)
    if env is None or env.memory is None or not env.memory.forget_with_retention or not ticket.session_id:
        return 0
    redacted = 0
    for att in await attached(redis, ticket.id):
        if att.access != "read_write":
            continue
        stores = client.beta.memory_stores
        versions = [v async for v in stores.memory_versions.list(att.store_id, session_id=ticket.session_id, limit=100)]
        for memory_id in dict.fromkeys(v.memory_id for v in versions):
            try:
                memory = await stores.memories.retrieve(memory_id, memory_store_id=att.store_id, view="basic")
            except anthropic.NotFoundError:
                continue
            if any(v.id == memory.memory_version_id for v in versions):
                try:
                    await stores.memories.delete(
                        memory_id, memory_store_id=att.store_id, expected_content_sha256=memory.content_sha256
                    )
                except anthropic.ConflictError:
                    log.info("retention: memory changed meanwhile; kept", extra={"memory": memory_id})
        for v in versions:
            if v.redacted_at is None and v.operation != "deleted":
                await stores.memory_versions.redact(v.id, memory_store_id=att.store_id)
                redacted += 1
    if redacted:
        log.info("retention: ticket's memories forgotten", extra={"ticket": ticket.id, "redacted": redacted})
    return redacted
