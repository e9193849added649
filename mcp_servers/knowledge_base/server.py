"""The `knowledge_base` MCP server: `search_docs` and `read_doc` over a docs folder.

A caller sees internal docs only when its token has `docs:internal`; otherwise internal docs
do not exist for it (search leaves them out, `read_doc` answers "not found", exactly as for an
id that does not exist).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from pathlib import Path
from typing import Annotated

import anyio.to_thread
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_servers.auth import (
    SCOPE_DOCS_INTERNAL,
    SCOPE_DOCS_PUBLIC,
    ScopedMCPServer,
    TokenRegistry,
    auth_kwargs,
    require_principal,
)
from mcp_servers.knowledge_base.index import DocsFolderMissing, KnowledgeBase

log = logging.getLogger(__name__)

# A token needs this scope to reach the server at all (else HTTP 403).
SERVER_SCOPE = SCOPE_DOCS_PUBLIC
MAX_LIMIT = 20
MAX_QUERY_CHARS = 1000

INSTRUCTIONS = (
    "Search the company's support knowledge base (FAQs, product docs, and for staff, internal "
    "runbooks). Use search_docs first, then read_doc for the full text of a promising result. "
    "Cite the `url` of every document you rely on."
)


class DocHit(BaseModel):
    id: str = Field(description="Pass to read_doc for the full text")
    title: str
    snippet: str = Field(description="Matching passage")
    url: str = Field(description="Citation link for the answer")
    score: float = Field(description="BM25 relevance; higher is better")


class DocText(BaseModel):
    id: str
    title: str
    url: str = Field(description="Citation link for the answer")
    tags: list[str]
    text: str = Field(description="The document in Markdown")


def _unavailable(exc: Exception) -> ToolError:
    if isinstance(exc, DocsFolderMissing):
        log.error("kb docs folder is missing", extra={"docs_dir": str(exc)})
    else:
        log.error("kb query failed", extra={"error_type": type(exc).__name__})
    return ToolError("The knowledge base is unavailable right now; try again later or answer without it.")


def build_server(
    docs_dir: Path, *, tokens: TokenRegistry, name: str = "knowledge_base"
) -> tuple[ScopedMCPServer, KnowledgeBase]:
    """The server and the index it searches (tests use the index to watch rebuilds)."""
    kb = KnowledgeBase(docs_dir)
    server = ScopedMCPServer(
        name,
        title="Support knowledge base",
        instructions=INSTRUCTIONS,
        version="1.0.0",
        tool_scopes={"search_docs": SCOPE_DOCS_PUBLIC, "read_doc": SCOPE_DOCS_PUBLIC},
        **auth_kwargs(tokens, SERVER_SCOPE),
    )

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def search_docs(
        query: Annotated[str, Field(description="What to look for, in plain words")],
        limit: Annotated[int, Field(description=f"How many results (1-{MAX_LIMIT})")] = 5,
    ) -> list[DocHit]:
        """Search the knowledge base; returns the best-matching documents, best first, each
        with a snippet and the URL to cite. Use read_doc(id) for a document's full text."""
        principal = require_principal()
        limit = max(1, min(MAX_LIMIT, limit))
        try:
            hits = await anyio.to_thread.run_sync(
                functools.partial(
                    kb.search, query[:MAX_QUERY_CHARS], limit=limit,
                    include_internal=principal.has(SCOPE_DOCS_INTERNAL),
                )
            )
        except (DocsFolderMissing, sqlite3.Error, OSError) as exc:
            raise _unavailable(exc) from None
        return [DocHit(id=h.id, title=h.title, snippet=h.snippet, url=h.url, score=h.score) for h in hits]

    @server.tool(annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    async def read_doc(id: Annotated[str, Field(description="A document id from search_docs")]) -> DocText:
        """The full text of one knowledge-base document, with its title and citation URL."""
        principal = require_principal()
        try:
            doc = await anyio.to_thread.run_sync(
                functools.partial(kb.get, id[:500], include_internal=principal.has(SCOPE_DOCS_INTERNAL))
            )
        except (DocsFolderMissing, sqlite3.Error, OSError) as exc:
            raise _unavailable(exc) from None
        if doc is None:
            raise ToolError(f"Document not found: {id[:200]!r}. Use search_docs to find document ids.")
        return DocText(id=doc.id, title=doc.title, url=doc.url, tags=list(doc.tags), text=doc.body)

    server.check_scopes_cover_tools()
    return server, kb

