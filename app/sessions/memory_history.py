"""What a ticket read from and wrote to its memory stores, and which ticket taught each memory
(issue 19): for `/support memory`, App Home and the trace.

Reads are the session's `read` tool uses under a store's `mount_path` (their tool
result says whether the file was there); writes are the store's memory versions filtered by the
session (`memory_versions.list(session_id=)`). The version a read saw is the memory's newest
version written before the read; its `created_by` session names the ticket that taught it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

import anthropic
from anthropic import AsyncAnthropic
from anthropic.types.beta.sessions import BetaManagedAgentsMemoryStoreResource
from pydantic import BaseModel

from app.sessions.memory import Attachment, attached
from app.tickets.model import Ticket
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)

# The toolset tool that reads one file (SDK ...Toolset20260401ReadInput.file_path); grep and glob
# search a directory (`path`) and name no single memory, and bash is off for agents with memory.
READ_TOOLS = ("read",)
PREVIEW = 200


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
    # A read with no version to show: the file was not there, or the memory was deleted since.
    missing: Literal["not_found", "deleted_since"] | None = None


class TicketMemory(BaseModel):
    attached: list[Attachment]
    reads: list[MemoryEntry]
    writes: list[MemoryEntry]


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
        except anthropic.NotFoundError:  # deleted since: not current
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


def _reads_from_events(events: list[Any], mounts: dict[str, str]) -> list[tuple[str, str, str, bool]]:
    """(store id, path in the store, processed_at, whether it failed) of each read under a mount."""
    failed = {getattr(e, "tool_use_id", None): bool(getattr(e, "is_error", False))
              for e in events if getattr(e, "type", None) == "agent.tool_result"}
    found = []
    for event in events:
        if getattr(event, "type", None) != "agent.tool_use" or getattr(event, "name", None) not in READ_TOOLS:
            continue
        tool_input = getattr(event, "input", None) or {}
        file_path = str(tool_input.get("file_path") or "")
        for store_id, mount in mounts.items():
            if file_path.startswith(mount.rstrip("/") + "/"):
                path = file_path[len(mount.rstrip("/")):]
                found.append((store_id, path, _iso(event.processed_at), failed.get(event.id, False)))
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
    for store_id, path, at, failed in _reads_from_events(events, mounts):
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
                                   path=path, operation="read", at=at,
                                   missing="not_found" if failed else "deleted_since"))
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
        taught = " · not found" if entry.missing == "not_found" else " · deleted since"
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


