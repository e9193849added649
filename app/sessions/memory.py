"""Memory stores for tickets (issue 19): made on first use, attached at session creation, and
what a ticket read and wrote, with the ticket that taught each memory.

- Stores are found by their ids in Redis (`sa:provisioned`, kinds `memory_store:customer:<key>`
  and `memory_store:product:<env>`, as `app/sessions/resources.py` keeps agents and vaults), else
  by our metadata among the workspace's stores, else created; one process at a time.
- `session_resources` gives `sessions.create(resources=...)` (SDK
  `BetaManagedAgentsMemoryStoreResourceParam`) and records what a ticket got
  (`sa:memory:ticket:<id>`), so the trace, App Home and `/support memory` know its stores.
- Reads are the session's `read`/`grep`/`glob` tool uses under a store's `mount_path`; writes
  are the store's memory versions filtered by the session (`memory_versions.list(session_id=)`).
  The version a read saw is the memory's newest version at the time of the read; its
  `created_by` session names the ticket that taught it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Literal

import anthropic
import redis.asyncio as aioredis
from anthropic import AsyncAnthropic
from anthropic.types.beta.sessions import BetaManagedAgentsMemoryStoreResource
from pydantic import BaseModel
from slack_sdk.errors import SlackApiError

from app.config.memory import customer_key, customer_label, customer_store_name, product_store_name
from app.config.model import AppConfig
from app.sessions.resources import first_use_lock, record_id, recorded_id
from app.tickets.model import Ticket
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)

KIND = "memory_store"
MANAGED_BY = "support-agent"
STORES = "sa:memory:stores"  # store id -> {kind, key, label}
TEAM_CACHE_SECONDS = 86400
READ_TOOLS = ("read", "grep", "glob")  # SDK agent toolset tools that take a file path
PREVIEW = 200


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


class MemoryEntry(BaseModel):
    """One memory a ticket read or wrote, and who taught it."""

    store_id: str
    store_label: str
    memory_id: str | None
    version_id: str | None
    path: str
    operation: str  # read | created | modified | deleted
    at: str
    content: str | None = None
    redacted: bool = False
    current: bool = False  # the memory still holds this version's content
    taught_by_session: str | None = None
    taught_by_ticket: str | None = None  # ticket ref (#12), or who else wrote it
    taught_by_ticket_id: str | None = None


class TicketMemory(BaseModel):
    attached: list[Attachment]
    reads: list[MemoryEntry]
    writes: list[MemoryEntry]


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


# -- what a ticket read and wrote -----------------------------------------------------------------


def _iso(value: datetime | str | None) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


async def teacher(store: TicketStore, created_by: Any) -> tuple[str | None, str | None, str | None]:
    """(session, ticket ref, ticket id) of a version's author; staff edits say so."""
    if created_by is None:
        return None, "unknown", None
    if created_by.type != "session_actor":
        return None, "staff (API)" if created_by.type == "api_actor" else created_by.type, None
    ticket = await store.by_session(created_by.session_id)
    if ticket is None:
        return created_by.session_id, "another session", None
    return created_by.session_id, ticket.ref, ticket.id


async def _entry(client: AsyncAnthropic, store: TicketStore, label: str, version: Any, operation: str) -> MemoryEntry:
    session, ref, ticket_id = await teacher(store, version.created_by)
    current = False
    if version.operation != "deleted":
        try:
            memory = await client.beta.memory_stores.memories.retrieve(
                version.memory_id, memory_store_id=version.memory_store_id, view="basic"
            )
            current = memory.memory_version_id == version.id
        except Exception:  # deleted since: not current
            current = False
    content = version.content
    return MemoryEntry(
        store_id=version.memory_store_id, store_label=label, memory_id=version.memory_id,
        version_id=version.id, path=version.path or "(redacted)", operation=operation,
        at=_iso(version.created_at), content=content[:PREVIEW] if content else None,
        redacted=version.redacted_at is not None, current=current, taught_by_session=session,
        taught_by_ticket=ref, taught_by_ticket_id=ticket_id,
    )


async def writes(
    client: AsyncAnthropic, store: TicketStore, ticket: Ticket, stores: list[Attachment]
) -> list[MemoryEntry]:
    out: list[MemoryEntry] = []
    if not ticket.session_id:
        return out
    for att in stores:
        async for version in client.beta.memory_stores.memory_versions.list(
            att.store_id, session_id=ticket.session_id, view="full", limit=20
        ):
            out.append(await _entry(client, store, att.label, version, version.operation))
    return sorted(out, key=lambda e: e.at)


def _reads_from_events(events: list[Any], mounts: dict[str, str]) -> list[tuple[str, str, str]]:
    """(store id, path in the store, processed_at) of each read under a memory mount."""
    found = []
    for event in events:
        if getattr(event, "type", None) != "agent.tool_use" or getattr(event, "name", None) not in READ_TOOLS:
            continue
        tool_input = getattr(event, "input", None) or {}
        file_path = str(tool_input.get("file_path") or tool_input.get("path") or "")
        for store_id, mount in mounts.items():
            if file_path.startswith(mount.rstrip("/") + "/"):
                found.append((store_id, file_path[len(mount.rstrip("/")):], _iso(event.processed_at)))
    return found


async def reads(
    client: AsyncAnthropic, store: TicketStore, ticket: Ticket, stores: list[Attachment]
) -> list[MemoryEntry]:
    if not ticket.session_id or not stores:
        return []
    labels = {a.store_id: a.label for a in stores}
    session = await client.beta.sessions.retrieve(ticket.session_id)
    mounts = {
        r.memory_store_id: r.mount_path for r in session.resources
        if isinstance(r, BetaManagedAgentsMemoryStoreResource) and r.memory_store_id in labels and r.mount_path
    }
    events = [e async for e in client.beta.sessions.events.list(ticket.session_id, limit=1000)]
    out: list[MemoryEntry] = []
    for store_id, path, at in _reads_from_events(events, mounts):
        version = None
        async for memory in client.beta.memory_stores.memories.list(store_id, path_prefix=path.rsplit("/", 1)[0] + "/"):
            if memory.type == "memory" and memory.path == path:
                # The version the read saw: the memory's newest one written before it.
                async for v in client.beta.memory_stores.memory_versions.list(
                    store_id, memory_id=memory.id, created_at_lte=at, view="full", limit=1
                ):
                    version = v
                    break
                break
        if version is None:
            out.append(MemoryEntry(store_id=store_id, store_label=labels[store_id], memory_id=None, version_id=None,
                                   path=path, operation="read", at=at))
        else:
            entry = await _entry(client, store, labels[store_id], version, "read")
            out.append(entry.model_copy(update={"at": at}))
    return out


async def ticket_memory(client: AsyncAnthropic, store: TicketStore, ticket: Ticket) -> TicketMemory:
    stores = await attached(store.redis, ticket.id)
    return TicketMemory(
        attached=stores,
        reads=await reads(client, store, ticket, stores),
        writes=await writes(client, store, ticket, stores),
    )


# -- in the trace ---------------------------------------------------------------------------------

TRACE_KIND = "memory"


def entry_summary(entry: MemoryEntry) -> str:
    verb = {"read": "read", "created": "wrote (new)", "modified": "rewrote", "deleted": "deleted"}.get(
        entry.operation, entry.operation
    )
    taught = f" · taught by {entry.taught_by_ticket}" if entry.taught_by_ticket else ""
    if entry.operation == "read" and entry.version_id is None:
        taught = " · not found"
    state = ""
    if entry.redacted:
        state = " · redacted"
    elif not entry.current and entry.operation != "read":
        state = " · since changed"
    return f"memory {verb} {entry.path} in {entry.store_label}{taught}{state}"


async def add_to_trace(client: Any, store: TicketStore, ticket: Ticket, trace: Any, scrubber: Any) -> Any:
    """The memories the ticket read and wrote, as trace entries (kind `memory`), appended after
    the timeline. Never fails the trace: a problem becomes a warning."""
    if client is None or not ticket.session_id or ticket.session_deleted_at:
        return trace
    if not await attached(store.redis, ticket.id):
        return trace
    from app.trace.model import TraceEntry

    try:
        tm = await ticket_memory(client, store, ticket)
    except Exception as exc:  # the trace must show what it can
        log.warning("trace: memory not read", extra={"ticket": ticket.id, "error": type(exc).__name__})
        trace.warnings.append(f"memory could not be read ({type(exc).__name__})")
        return trace
    seq = max((e.seq for e in trace.entries), default=0)
    for entry in sorted([*tm.reads, *tm.writes], key=lambda e: e.at):
        seq += 1
        detail = scrubber.data(entry.model_dump())
        trace.entries.append(TraceEntry(
            seq=seq, at=entry.at, kind=TRACE_KIND, summary=scrubber.text(entry_summary(entry)),
            source="memory", detail=detail,
        ))
    trace.totals["memory_reads"] = len(tm.reads)
    trace.totals["memory_writes"] = len(tm.writes)
    return trace


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
