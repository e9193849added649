"""Pieces of the MCP servers without HTTP: token registry, query sanitising, doc parsing,
host allowlist, and the ticket history store against real Redis."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
import redis.asyncio as aioredis

from mcp_servers.asgi import McpConfigError, build_mcp_asgi, transport_security
from mcp_servers.auth import (
    CUSTOMER_SCOPES,
    INTERNAL_SCOPES,
    TOKEN_PREFIX,
    TokenRegistry,
    mint_token,
)
from mcp_servers.knowledge_base.index import fts_query, parse_doc
from mcp_servers.ticket_history import record_resolved_ticket
from mcp_servers.ticket_history.store import AmbiguousRef, TicketHistory, terms

SECRET = "sbk_mcp_unit-test-secret-value-123"
OTHER = "sbk_mcp_another-secret-value-456"


def test_registry_from_env_maps_variables_to_environments_and_scopes() -> None:
    registry = TokenRegistry.from_env({"MCP_TOKEN_INTERNAL": SECRET, "MCP_TOKEN_CUSTOMERS": OTHER, "OTHER": "x"})
    internal = registry.verify(SECRET)
    customers = registry.verify(OTHER)
    assert internal is not None and internal.environment == "internal" and internal.scopes == INTERNAL_SCOPES
    assert internal.source == "MCP_TOKEN_INTERNAL"
    assert customers is not None and customers.environment == "customers" and customers.scopes == CUSTOMER_SCOPES
    assert registry.verify("sbk_mcp_unknown-token-value-0000") is None
    assert registry.verify("") is None and registry.verify(None) is None
    assert registry.verify(SECRET + " ") is None  # exact match only


def test_registry_skips_unset_and_refuses_bad_tokens_without_echoing_them() -> None:
    assert len(TokenRegistry.from_env({"MCP_TOKEN_INTERNAL": "  "})) == 0
    with pytest.raises(ValueError, match=r"MCP_TOKEN_CUSTOMERS: .*too short") as short:
        TokenRegistry.from_env({"MCP_TOKEN_CUSTOMERS": "short-secret"})
    assert "short-secret" not in str(short.value)
    with pytest.raises(ValueError, match="same token") as dup:
        TokenRegistry.from_env({"MCP_TOKEN_INTERNAL": SECRET, "MCP_TOKEN_CUSTOMERS": SECRET})
    assert SECRET not in str(dup.value)
    with pytest.raises(ValueError, match="unknown scope"):
        TokenRegistry.from_dict({SECRET: {"environment": "internal", "scopes": ["docs:everything"]}})


def test_registry_never_shows_token_values() -> None:
    registry = TokenRegistry.from_dict({SECRET: {"environment": "internal", "scopes": "docs:public"}})
    for rendering in (repr(registry), str(registry), registry.model_dump_json(), str(registry.model_dump())):
        assert SECRET not in rendering
    assert [s.get_secret_value() for s in registry.secrets()] == [SECRET]


def test_minted_tokens_are_prefixed_and_distinct() -> None:
    a, b = mint_token(), mint_token()
    assert a.startswith(TOKEN_PREFIX) and a != b and len(a) > 40


@pytest.mark.parametrize(
    "text", ['refund "policy', "AND OR NOT", "NEAR(a b, 2)", "title:x*", "^start", "a-b+c", "((x", "é ü ß 日本"]
)
def test_fts_query_is_always_valid_fts5(text: str) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE VIRTUAL TABLE t USING fts5(body)")
    conn.execute("INSERT INTO t VALUES ('refund policy and more')")
    expression = fts_query(text)
    assert expression is not None
    conn.execute("SELECT * FROM t WHERE t MATCH ?", (expression,)).fetchall()


def test_fts_query_drops_stopwords_and_empty_input() -> None:
    assert fts_query("how do I get a refund") == '"get" OR "refund"'
    assert fts_query("   ") is None and fts_query("!!!") is None


def test_docs_are_internal_unless_they_say_public() -> None:
    assert parse_doc("a", "# Title\nbody").visibility == "internal"
    assert parse_doc("a", "---\nvisibility: Public\n---\nbody").visibility == "public"
    assert parse_doc("a", "---\nvisibility: secret\n---\nbody").visibility == "internal"
    broken = parse_doc("a", "---\nvisibility: public\ntitle: [unclosed\n---\nbody")
    assert broken.visibility == "internal"
    doc = parse_doc("faq/x", "---\ntags: billing, refunds\n---\n# Heading title\ntext")
    assert doc.title == "Heading title" and doc.url == "kb://faq/x" and doc.tags == ("billing", "refunds")
    assert doc.body.startswith("# Heading title")


def test_transport_security_allows_loopback_and_configured_hosts() -> None:
    settings = transport_security(["https://support.example.com/", "mcp.example.org:8443"])
    assert {"127.0.0.1:*", "localhost", "support.example.com", "support.example.com:*",
            "mcp.example.org:8443"} <= set(settings.allowed_hosts)
    assert "mcp.example.org:*" not in settings.allowed_hosts
    assert settings.enable_dns_rebinding_protection


def test_build_refuses_without_tokens_or_docs(tmp_path: object) -> None:
    with pytest.raises(McpConfigError, match="no MCP tokens"):
        build_mcp_asgi("knowledge_base", tokens=TokenRegistry())
    tokens = TokenRegistry.from_dict({SECRET: {"environment": "internal", "scopes": "docs:public"}})
    with pytest.raises(McpConfigError, match="does not exist"):
        build_mcp_asgi("knowledge_base", tokens=tokens, docs_dir=tmp_path / "missing")  # type: ignore[operator]
    with pytest.raises(McpConfigError, match="unknown MCP server"):
        build_mcp_asgi("nope", tokens=tokens)


async def test_re_recording_a_ticket_replaces_its_index_entries(redis: aioredis.Redis) -> None:
    common: dict[str, Any] = {"ref": "#7", "tags": ["Billing"], "channel_id": "C1", "environment": "internal"}
    await record_resolved_ticket(redis, ticket_id="T1-7", question="invoice VAT number wrong",
                                 summary="issued credit note", resolved_at="2025-01-01T00:00:00Z", **common)
    history = TicketHistory(redis)
    assert [h.record.ticket_id for h in await history.search("credit notes")] == ["T1-7"]
    await record_resolved_ticket(redis, ticket_id="T1-7", question="invoice VAT number wrong",
                                 summary="corrected the invoice", resolved_at=1_735_700_000, **common)
    assert await history.search("credit") == []
    record = await history.get("#7")
    assert record is not None and record.tags == ["billing"] and record.summary == "corrected the invoice"
    assert await history.get("7") == record and await history.get("T1-7") == record

    # The same ref in another workspace makes the ref ambiguous; the ticket id still works.
    await record_resolved_ticket(redis, ticket_id="T2-7", question="other", summary="other",
                                 resolved_at=1_735_800_000, **common)
    with pytest.raises(AmbiguousRef):
        await history.get("#7")
    assert (await history.get("T2-7")) is not None


def test_terms_fold_plurals_and_skip_stopwords() -> None:
    assert terms("How do I export the Exports? Policies!") == ["export", "policy"]
