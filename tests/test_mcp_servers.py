"""Our MCP servers over real HTTP with the real `mcp` client.

The servers run under uvicorn on 127.0.0.1 (ServerThread), mounted in a Starlette host app the
way the web process mounts them (`mcp_mounts`), or standalone (`build_mcp_asgi`, and the
`support-agent mcp serve` subprocess). Redis is the real embedded one.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis.asyncio as aioredis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult
from starlette.applications import Starlette

from app.redis_conn import EmbeddedRedis, connect
from app.sandbox.server import ServerThread
from mcp_servers.asgi import build_mcp_asgi, mcp_mounts
from mcp_servers.auth import TokenRegistry
from mcp_servers.knowledge_base.index import KnowledgeBase
from mcp_servers.ticket_history import record_resolved_ticket
from mcp_servers.ticket_history.store import notes_key

ROOT = Path(__file__).resolve().parents[1]
KB_DIR = ROOT / "docs" / "kb"

INTERNAL = "sbk_mcp_internal-test-token-0001"
INTERNAL_READONLY = "sbk_mcp_internal-readonly-token-02"
CUSTOMERS = "sbk_mcp_customers-test-token-0003"
TOKENS = TokenRegistry.from_dict({
    INTERNAL: {"environment": "internal",
               "scopes": "docs:public docs:internal tickets:read tickets:write"},
    INTERNAL_READONLY: {"environment": "internal", "scopes": ["docs:public", "docs:internal", "tickets:read"]},
    CUSTOMERS: {"environment": "customers", "scopes": ["docs:public"]},
})
PUBLIC_HOST = "support.example.com"
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "raw", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


# -- helpers ------------------------------------------------------------------------------


@asynccontextmanager
async def mcp_client(url: str, token: str | None, mode: str = "legacy") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=10) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,  # type: ignore[arg-type]
    ):
        yield client


def leaves(exc: BaseException) -> list[BaseException]:
    """The real errors inside the client's task-group exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def connect_error(url: str, token: str | None) -> MCPError:
    with pytest.raises(BaseException) as info:  # the client wraps the MCPError in groups
        async with mcp_client(url, token):
            pass
    errors = [e for e in leaves(info.value) if isinstance(e, MCPError)]
    assert errors, f"expected an MCPError, got {info.value!r}"
    return errors[0]


def text_of(result: CallToolResult) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content)


def results(result: CallToolResult) -> list[dict[str, Any]]:
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    items: list[dict[str, Any]] = result.structured_content["result"]
    return items


async def search(url: str, token: str, query: str, limit: int = 5) -> list[dict[str, Any]]:
    async with mcp_client(url, token) as client:
        return results(await client.call_tool("search_docs", {"query": query, "limit": limit}))


def raw_post(url: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **(headers or {})}, timeout=10)


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web(redis_server: EmbeddedRedis) -> Iterator[str]:
    """Both servers mounted in a host Starlette app, as the web process does."""
    routes, lifespan = mcp_mounts(tokens=TOKENS, docs_dir=KB_DIR, redis_url=redis_server.url,
                                  allowed_hosts=[f"https://{PUBLIC_HOST}"])
    with ServerThread(Starlette(routes=routes, lifespan=lifespan)) as server:
        yield server.url


@pytest.fixture
def kb_url(web: str) -> str:
    return f"{web}/mcp/knowledge_base"


@pytest.fixture
def history_url(web: str) -> str:
    return f"{web}/mcp/ticket_history"


async def seed_history(redis: aioredis.Redis) -> None:
    await record_resolved_ticket(
        redis, ticket_id="T01-42", ref="#42", question="Our CSV export has been stuck in progress for two days",
        summary="The export worker had died; requeued the export job and it finished within an hour.",
        tags=["export", "jobs"], channel_id="C0HELP", environment="customers", resolved_at=1_760_000_000,
    )
    await record_resolved_ticket(
        redis, ticket_id="T01-43", ref="#43", question="How do I get a refund on an annual plan?",
        summary="Explained the 30-day refund window and issued the refund.", tags=["billing", "refunds"],
        channel_id="C0HELP", environment="customers", resolved_at=1_760_100_000,
    )
    await record_resolved_ticket(
        redis, ticket_id="T01-44", ref="#44", question="SSO login fails with SAML_CLOCK_SKEW",
        summary="Customer's IdP clock was off; their IT fixed NTP. Export of audit log not needed.",
        tags=["sso"], channel_id="C0STAFF", environment="internal", resolved_at=1_760_200_000,
    )


# -- knowledge_base -------------------------------------------------------------------------


async def test_internal_token_lists_tools_and_gets_ranked_cited_results(kb_url: str) -> None:
    async with mcp_client(kb_url, INTERNAL) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"search_docs", "read_doc"}
        assert tools["search_docs"].annotations and tools["search_docs"].annotations.read_only_hint

        hits = results(await client.call_tool("search_docs", {"query": "refund for an annual plan", "limit": 3}))
        assert hits[0]["id"] == "faq/refunds-and-cancellations"
        assert hits[0]["url"] == "https://help.example.com/billing/refunds"
        assert hits[0]["title"] == "Refunds and cancellations"
        assert "refund" in hits[0]["snippet"].lower()
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True) and scores[0] > 0
        # Staff see internal runbooks too.
        assert "runbooks/refund-exceptions" in {h["id"] for h in hits}

        doc = await client.call_tool("read_doc", {"id": hits[0]["id"]})
        assert not doc.is_error
        assert doc.structured_content is not None
        assert doc.structured_content["url"] == "https://help.example.com/billing/refunds"
        assert "30 days" in doc.structured_content["text"]
        assert "visibility:" not in doc.structured_content["text"]  # front matter stripped


async def test_customers_token_never_sees_internal_docs(kb_url: str) -> None:
    hits = await search(kb_url, CUSTOMERS, "refund exceptions approvals finance", limit=20)
    assert hits, "public refund docs should still match"
    assert all(not h["id"].startswith("runbooks/") for h in hits)
    assert all("wiki.example.com" not in h["url"] for h in hits)
    # Words that only internal runbooks contain find nothing at all.
    assert await search(kb_url, CUSTOMERS, "exportctl requeue heartbeat") == []
    assert await search(kb_url, INTERNAL, "exportctl requeue heartbeat")

    async with mcp_client(kb_url, CUSTOMERS) as client:
        hidden = await client.call_tool("read_doc", {"id": "runbooks/stuck-export-jobs"})
        missing = await client.call_tool("read_doc", {"id": "runbooks/no-such-doc"})
    assert hidden.is_error and missing.is_error
    # Same answer as for a doc that does not exist: existence is not leaked.
    assert text_of(hidden).replace("stuck-export-jobs", "X") == text_of(missing).replace("no-such-doc", "X")
    assert "not found" in text_of(hidden).lower() and "forbidden" not in text_of(hidden).lower()


@pytest.mark.parametrize(
    "query", ['refund "policy', "AND OR", "NEAR(refund", "title:refund*", '"', "^-+()*", "refund OR", ""]
)
async def test_search_syntax_in_user_text_never_errors(kb_url: str, query: str) -> None:
    async with mcp_client(kb_url, CUSTOMERS) as client:
        result = await client.call_tool("search_docs", {"query": query})
    assert not result.is_error, text_of(result)


async def test_index_rebuilds_when_a_doc_changes(tmp_path: Path) -> None:
    docs = tmp_path / "kb"
    shutil.copytree(KB_DIR, docs)
    app = build_mcp_asgi("knowledge_base", tokens=TOKENS, docs_dir=docs)  # standalone, at /mcp
    kb: KnowledgeBase = app.extras["kb"]
    with ServerThread(app) as server:
        url = f"{server.url}/mcp"
        assert await search(url, CUSTOMERS, "zeppelin mooring") == []
        builds = kb.builds
        assert await search(url, CUSTOMERS, "refund") and kb.builds == builds  # unchanged: no rebuild

        new = docs / "faq" / "zeppelins.md"
        new.write_text("---\ntitle: Zeppelin mooring\nvisibility: public\nurl: https://help.example.com/z\n---\n"
                       "Moor the zeppelin at mast 3.\n")
        hits = await search(url, CUSTOMERS, "zeppelin mooring")
        assert [h["id"] for h in hits] == ["faq/zeppelins"] and kb.builds == builds + 1

        new.write_text(new.read_text().replace("visibility: public", "visibility: internal"))
        assert await search(url, CUSTOMERS, "zeppelin") == []
        assert [h["id"] for h in await search(url, INTERNAL, "zeppelin")] == ["faq/zeppelins"]

        new.unlink()
        assert await search(url, INTERNAL, "zeppelin") == []


# -- auth and transport ---------------------------------------------------------------------


async def test_no_token_or_unknown_token_is_401(kb_url: str, history_url: str) -> None:
    for url in (kb_url, history_url):
        response = raw_post(url)
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer ")
        unknown = raw_post(url, {"Authorization": "Bearer sbk_mcp_not-a-real-token-at-all"})
        assert unknown.status_code == 401
        assert 'error="invalid_token"' in unknown.headers["www-authenticate"]
        assert "not-a-real-token" not in unknown.text + unknown.headers["www-authenticate"]
        basic = raw_post(url, {"Authorization": f"Basic {INTERNAL}"})
        assert basic.status_code == 401

    error = await connect_error(kb_url, None)
    assert "Unauthorized (401)" in str(error)
    error = await connect_error(kb_url, "sbk_mcp_wrong-token-000000000")
    assert "not recognised" in str(error)


async def test_customers_token_cannot_reach_ticket_history(history_url: str) -> None:
    response = raw_post(history_url, {"Authorization": f"Bearer {CUSTOMERS}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    error = await connect_error(history_url, CUSTOMERS)
    assert "Forbidden (403)" in str(error) and "tickets:read" in str(error)


async def test_only_allowed_hosts_are_served(kb_url: str) -> None:
    auth = {"Authorization": f"Bearer {CUSTOMERS}"}
    assert raw_post(kb_url, {**auth, "Host": "evil.example.net"}).status_code == 421
    assert raw_post(kb_url, {**auth, "Host": PUBLIC_HOST}).status_code == 200
    assert raw_post(kb_url, {**auth, "Host": "localhost:1234"}).status_code == 200


# -- ticket_history -------------------------------------------------------------------------


async def test_ticket_history_search_and_read(history_url: str, redis: aioredis.Redis) -> None:
    await seed_history(redis)
    async with mcp_client(history_url, INTERNAL, mode="auto") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"search_tickets", "read_ticket", "add_note"}

        hits = results(await client.call_tool("search_tickets", {"query": "export stuck for days", "limit": 5}))
        assert hits[0]["ticket_ref"] == "#42"
        assert "requeued" in hits[0]["summary"]
        assert set(hits[0]["matched_terms"]) >= {"export", "stuck"}
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

        ticket = await client.call_tool("read_ticket", {"ticket_ref": "#43"})
        assert not ticket.is_error
        assert ticket.structured_content is not None
        assert ticket.structured_content["question"] == "How do I get a refund on an annual plan?"
        assert ticket.structured_content["tags"] == ["billing", "refunds"]
        assert ticket.structured_content["resolved_at"].startswith("2025-10-")

        missing = await client.call_tool("read_ticket", {"ticket_ref": "#999"})
        assert missing.is_error and "No resolved ticket" in text_of(missing)


async def test_write_tool_refused_for_read_only_token(history_url: str, redis: aioredis.Redis) -> None:
    await seed_history(redis)
    async with mcp_client(history_url, INTERNAL_READONLY) as client:
        assert {t.name for t in (await client.list_tools()).tools} == {"search_tickets", "read_ticket"}
        refused = await client.call_tool("add_note", {"ticket_ref": "#42", "note": "workaround outdated"})
        assert results(await client.call_tool("search_tickets", {"query": "refund"}))  # reads still work
    assert refused.is_error
    assert "Forbidden (403)" in text_of(refused) and "tickets:write" in text_of(refused)
    assert await redis.llen(notes_key("T01-42")) == 0

    async with mcp_client(history_url, INTERNAL) as client:
        added = await client.call_tool("add_note", {"ticket_ref": "#42", "note": "workaround outdated"})
        assert not added.is_error, text_of(added)
        ticket = await client.call_tool("read_ticket", {"ticket_ref": "T01-42"})
    assert ticket.structured_content is not None
    assert [n["text"] for n in ticket.structured_content["notes"]] == ["workaround outdated"]
    assert ticket.structured_content["notes"][0]["environment"] == "internal"


async def test_redis_failure_gives_a_useful_error_without_internals(tmp_path: Path) -> None:
    dead = tmp_path / "no-redis-here.sock"
    routes, lifespan = mcp_mounts(tokens=TOKENS, names=["ticket_history"],
                                  redis_factory=lambda: connect(f"unix://{dead}"))
    with ServerThread(Starlette(routes=routes, lifespan=lifespan)) as server:
        async with mcp_client(f"{server.url}/mcp/ticket_history", INTERNAL) as client:
            result = await client.call_tool("search_tickets", {"query": "export"})
    assert result.is_error
    message = text_of(result)
    assert "temporarily unavailable" in message
    for leak in ("no-redis-here", str(tmp_path), "Traceback", "ConnectionError", "unix://"):
        assert leak not in message


# -- the CLI ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_cli_serves_knowledge_base(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_TOKEN_", "REDIS_URL", "SENTRY"))}
    env.update(MCP_TOKEN_CUSTOMERS=CUSTOMERS, LOG_LEVEL="INFO")
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "mcp", "serve", "knowledge_base", "--port", str(port),
             "--docs", str(KB_DIR)],
            cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )
        try:
            url = f"http://127.0.0.1:{port}/mcp"
            deadline = time.monotonic() + 15
            while True:
                try:
                    if raw_post(url).status_code == 401:
                        break
                except httpx2.TransportError:
                    pass
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
            hits = asyncio.run(search(url, CUSTOMERS, "reset my password"))
            assert hits[0]["url"] == "https://help.example.com/account/sign-in"
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    output = log_path.read_text()
    assert CUSTOMERS not in output  # the token is never logged
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(line.get("msg") == "mcp server listening" for line in lines)
