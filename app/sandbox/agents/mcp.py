"""The emulated agent's real MCP calls: streamable HTTP with the vault's bearer token."""

from __future__ import annotations

from typing import Any


async def http_mcp_call(
    server_url: str, tool: str, tool_input: dict[str, Any], bearer_token: str | None
) -> tuple[str, bool]:
    """Call `tool` on the MCP server at `server_url`; returns (text, is_error)."""
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {bearer_token}"} if bearer_token else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(server_url, http_client=http) as streams,
        ClientSession(streams[0], streams[1]) as session,
    ):
        await session.initialize()
        result = await session.call_tool(tool, tool_input)
    content = getattr(result, "content", None) or []
    texts = [str(getattr(block, "text", "")) for block in content if getattr(block, "type", "") == "text"]
    return "\n".join(texts), bool(getattr(result, "is_error", False))
