"""The `ticket_history` MCP server: search and read past resolved tickets; add a note.

Internal environments only: a token needs `tickets:read` to reach the server at all (others
get HTTP 403), and `tickets:write` for `add_note`.

The server's Redis client is made inside the server's lifespan, i.e. on the event loop that
serves requests: from `redis_url` (owned and closed by the server), or by calling
`redis_factory()` (the caller owns that client; pass one bound to the serving loop).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.asyncio as aioredis
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from redis.exceptions import RedisError

from mcp_servers.auth import (
    SCOPE_TICKETS_READ,
    SCOPE_TICKETS_WRITE,
    ScopedMCPServer,
    TokenRegistry,
    auth_kwargs,
    require_principal,
)
from mcp_servers.ticket_history.store import (
    MAX_NOTE_CHARS,
    AmbiguousRef,
    HistoryNote,
    HistoryRecord,
    TicketHistory,
)

log = logging.getLogger(__name__)

SERVER_SCOPE = SCOPE_TICKETS_READ
MAX_LIMIT = 20
RedisFactory = Callable[[], aioredis.Redis]

INSTRUCTIONS = (
    "Search past resolved support tickets to see how similar questions were answered. "
    "search_tickets finds tickets by words; read_ticket gives one ticket's question, resolution "
    "summary and notes. Mention the ticket ref (e.g. #42) when you rely on a past ticket."
)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


class TicketHit(BaseModel):
    ticket_ref: str = Field(description="Pass to read_ticket")
    ticket_id: str
    question: str
    summary: str = Field(description="How it was resolved")
    tags: list[str]
    resolved_at: str = Field(description="ISO 8601, UTC")
    environment: str
    score: float = Field(description="Relevance; higher is better")
    matched_terms: list[str]


class NoteOut(BaseModel):
    text: str
    at: str = Field(description="ISO 8601, UTC")
    environment: str


class TicketDetail(BaseModel):
    ticket_ref: str
    ticket_id: str
    question: str
    summary: str
    tags: list[str]
    resolved_at: str
    environment: str
    channel_id: str
    notes: list[NoteOut]


class NoteAdded(BaseModel):
    ticket_ref: str
    ticket_id: str
    note: NoteOut


def _note_out(note: HistoryNote) -> NoteOut:
    return NoteOut(text=note.text, at=note.at_iso, environment=note.environment)


class _RedisHolder:
    client: aioredis.Redis | None = None


def _unavailable(exc: Exception) -> ToolError:
    # The exception text can carry a Redis URL; log only its type.
    log.error("ticket history redis error", extra={"error_type": type(exc).__name__})
    return ToolError("Ticket history is temporarily unavailable; try again in a minute or answer without it.")


def build_server(
    *,
    tokens: TokenRegistry,
    redis_url: str | None = None,
    redis_factory: RedisFactory | None = None,
    name: str = "ticket_history",
) -> ScopedMCPServer:
    if (redis_url is None) == (redis_factory is None):
        raise ValueError("ticket_history needs exactly one of redis_url or redis_factory")
    holder = _RedisHolder()

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[dict[str, Any]]:
        if redis_factory is not None:
            holder.client = redis_factory()
            try:
                yield {}
            finally:
                holder.client = None
            return
        from app.redis_conn import connect

        assert redis_url is not None
        client = connect(redis_url)
        holder.client = client
        try:
            yield {}
        finally:
            holder.client = None
            await client.aclose()

    server = ScopedMCPServer(
        name,
        title="Support ticket history",
        instructions=INSTRUCTIONS,
        version="1.0.0",
        lifespan=lifespan,
        tool_scopes={
            "search_tickets": SCOPE_TICKETS_READ,
            "read_ticket": SCOPE_TICKETS_READ,
            "add_note": SCOPE_TICKETS_WRITE,
        },
        **auth_kwargs(tokens, SERVER_SCOPE),
    )

    def history() -> TicketHistory:
        if holder.client is None:
            raise ToolError("Ticket history is not running; try again in a minute.")
        return TicketHistory(holder.client)

    async def find(ticket_ref: str) -> HistoryRecord:
        try:
            record = await history().get(ticket_ref[:200])
        except AmbiguousRef as exc:
            raise ToolError(
                f"Ticket ref {ticket_ref!r} matches several tickets; use a ticket_id instead: "
                + ", ".join(exc.ticket_ids[:10])
            ) from None
        except RedisError as exc:
            raise _unavailable(exc) from None
        if record is None:
            raise ToolError(f"No resolved ticket {ticket_ref[:200]!r}. Use search_tickets to find tickets.")
        return record

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def search_tickets(
        query: Annotated[str, Field(description="Words describing the problem")],
        limit: Annotated[int, Field(description=f"How many tickets (1-{MAX_LIMIT})")] = 5,
    ) -> list[TicketHit]:
        """Search past resolved tickets; returns the best matches first with their resolution
        summaries. Use read_ticket(ticket_ref) for the full record and notes."""
        require_principal()
        limit = max(1, min(MAX_LIMIT, limit))
        try:
            hits = await history().search(query[:1000], limit)
        except RedisError as exc:
            raise _unavailable(exc) from None
        return [
            TicketHit(
                ticket_ref=h.record.ref,
                ticket_id=h.record.ticket_id,
                question=_clip(h.record.question, 400),
                summary=_clip(h.record.summary, 600),
                tags=h.record.tags,
                resolved_at=h.record.resolved_at_iso,
                environment=h.record.environment,
                score=h.score,
                matched_terms=h.matched,
            )
            for h in hits
        ]

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def read_ticket(
        ticket_ref: Annotated[str, Field(description="A ticket ref like #42, or a ticket_id")],
    ) -> TicketDetail:
        """One past ticket: the question, how it was resolved, tags and staff notes."""
        require_principal()
        record = await find(ticket_ref)
        try:
            notes = await history().notes(record.ticket_id)
        except RedisError as exc:
            raise _unavailable(exc) from None
        return TicketDetail(
            ticket_ref=record.ref,
            ticket_id=record.ticket_id,
            question=record.question,
            summary=record.summary,
            tags=record.tags,
            resolved_at=record.resolved_at_iso,
            environment=record.environment,
            channel_id=record.channel_id,
            notes=[_note_out(n) for n in notes],
        )

    @server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                             idempotent_hint=False, open_world_hint=False))
    async def add_note(
        ticket_ref: Annotated[str, Field(description="A ticket ref like #42, or a ticket_id")],
        note: Annotated[str, Field(description=f"The note (at most {MAX_NOTE_CHARS} characters)")],
    ) -> NoteAdded:
        """Attach a staff note to a past ticket (e.g. "this workaround no longer applies")."""
        principal = require_principal()
        text = note.strip()
        if not text:
            raise ToolError("The note is empty.")
        if len(text) > MAX_NOTE_CHARS:
            raise ToolError(f"The note is too long ({len(text)} characters; at most {MAX_NOTE_CHARS}).")
        record = await find(ticket_ref)
        try:
            added = await history().add_note(record.ticket_id, text, principal.environment)
        except RedisError as exc:
            raise _unavailable(exc) from None
        log.info("ticket history note added", extra={"ticket_id": record.ticket_id,
                                                      "environment": principal.environment})
        return NoteAdded(ticket_ref=record.ref, ticket_id=record.ticket_id, note=_note_out(added))

    server.check_scopes_cover_tools()
    return server
