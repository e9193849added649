"""Bridged MCP servers: servers the cloud cannot reach (`bridged: true` in the config).

Their tools are offered to the agent as custom tools named `<server>__<tool>` (schema and
description from the server's own `tools/list`); when the agent calls one, the worker calls
the server over streamable HTTP with the environment's token (`token_env`) and answers with
`user.custom_tool_result`. The server's `default_policy` / per-tool `tools` policies apply as
for cloud MCP servers: `always_allow` runs at once, `always_ask` (and `auto`, which only the
cloud can judge) waits for an approver's Approve / Deny in the thread.

Errors never carry the token or the server's internals: the model hears which server failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.config.model import AppConfig, McpServer

log = logging.getLogger(__name__)

SEP = "__"
LIST_TIMEOUT_SECONDS = 20.0
CALL_TIMEOUT_SECONDS = 120.0
DESCRIPTION_LIMIT = 1000
RESULT_LIMIT = 100_000


class BridgeError(Exception):
    """A bridged server could not be used; the message is safe to show (no token, no internals)."""


@dataclass(frozen=True)
class BridgedCall:
    server_name: str
    server: McpServer
    tool: str

    @property
    def policy(self) -> str:
        return self.server.tools.get(self.tool, self.server.default_policy)

    @property
    def needs_approval(self) -> bool:
        return self.policy != "always_allow"


def bridged_servers(config: AppConfig, env_name: str) -> dict[str, McpServer]:
    env = config.environments.get(env_name)
    if env is None:
        return {}
    return {name: server for name, server in env.mcp_servers.items() if server.bridged}


def custom_name(server_name: str, tool: str) -> str:
    return f"{server_name}{SEP}{tool}"[:128]


def resolve(config: AppConfig, env_name: str, name: str) -> BridgedCall | None:
    """The bridged server and tool a custom tool name stands for, in this environment."""
    for server_name, server in bridged_servers(config, env_name).items():
        prefix = f"{server_name}{SEP}"
        if name.startswith(prefix) and len(name) > len(prefix):
            return BridgedCall(server_name, server, name[len(prefix):])
    return None


def _url(server_name: str, server: McpServer) -> str:
    if not server.url:
        raise BridgeError(f"bridged MCP server {server_name!r} needs a `url`")
    return server.url


def _token(server_name: str, server: McpServer, environ: Mapping[str, str] | None) -> str | None:
    if not server.token_env:
        return None
    token = ((environ if environ is not None else os.environ).get(server.token_env) or "").strip()
    if not token:
        raise BridgeError(f"{server.token_env} is not set, so the {server_name} server cannot be called")
    return token


async def _with_session(url: str, token: str | None, timeout: float, work: Any) -> Any:
    from mcp.client.session import ClientSession
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = {"Authorization": f"Bearer {token}"} if token else None

    async def run() -> Any:
        async with (
            create_mcp_http_client(headers=headers) as http,
            streamable_http_client(url, http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as session,
        ):
            await session.initialize()
            return await work(session)

    return await asyncio.wait_for(run(), timeout)


async def count_tools(url: str, token: str | None, timeout: float = 5.0) -> int:
    """How many tools the MCP server at `url` lists (it answered, and took the token)."""

    async def work(session: Any) -> int:
        return len((await session.list_tools()).tools)

    return int(await _with_session(url, token, timeout, work))


async def list_tools(
    server_name: str, server: McpServer, environ: Mapping[str, str] | None = None
) -> list[Any]:
    url, token = _url(server_name, server), _token(server_name, server, environ)

    async def work(session: Any) -> list[Any]:
        tools: list[Any] = []
        cursor: str | None = None
        for _ in range(20):
            if cursor is None:
                page = await session.list_tools()
            else:
                from mcp.types import PaginatedRequestParams

                page = await session.list_tools(params=PaginatedRequestParams(cursor=cursor))
            tools += list(page.tools)
            cursor = getattr(page, "next_cursor", None)
            if not cursor:
                break
        return tools

    try:
        result: list[Any] = await _with_session(url, token, LIST_TIMEOUT_SECONDS, work)
        return result
    except BridgeError:
        raise
    except Exception as exc:
        log.warning("bridged server tools/list failed", extra={"server": server_name, "error": type(exc).__name__})
        raise BridgeError(f"the {server_name} MCP server could not be reached to list its tools") from None


async def definitions(
    config: AppConfig, env_name: str, environ: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Custom tool definitions for every tool of the environment's bridged servers."""
    out: list[dict[str, Any]] = []
    for server_name, server in bridged_servers(config, env_name).items():
        for tool in await list_tools(server_name, server, environ):
            schema = getattr(tool, "input_schema", None) or {}
            description = (getattr(tool, "description", None) or getattr(tool, "title", None) or tool.name).strip()
            out.append({
                "type": "custom",
                "name": custom_name(server_name, tool.name),
                "description": f"[{server_name}] {description}"[:DESCRIPTION_LIMIT],
                "input_schema": {
                    "type": "object",
                    "properties": schema.get("properties") or {},
                    "required": list(schema.get("required") or []),
                },
            })
    return out


async def call(bridged: BridgedCall, arguments: Any, environ: Mapping[str, str] | None = None) -> tuple[str, bool]:
    """Call the tool; returns (text for the model, is_error). Never raises for the model's sake."""
    try:
        url, token = _url(bridged.server_name, bridged.server), _token(bridged.server_name, bridged.server, environ)
    except BridgeError as exc:
        return f"{exc}. Tell the requester this tool is unavailable right now.", True
    args = arguments if isinstance(arguments, dict) else {}

    async def work(session: Any) -> Any:
        return await session.call_tool(bridged.tool, args)

    try:
        result = await _with_session(url, token, CALL_TIMEOUT_SECONDS, work)
    except TimeoutError:
        return f"The {bridged.server_name} server did not answer in time. Try again later or escalate.", True
    except Exception as exc:
        log.warning(
            "bridged tool call failed",
            extra={"server": bridged.server_name, "tool": bridged.tool, "error": type(exc).__name__},
        )
        return f"The {bridged.server_name} server could not run {bridged.tool}. Try again later or escalate.", True
    blocks = getattr(result, "content", None) or []
    texts = [str(getattr(b, "text", "")) for b in blocks if getattr(b, "type", "") == "text"]
    text = "\n".join(texts)
    structured = getattr(result, "structured_content", None)
    if not text and structured is not None:
        text = json.dumps(structured, ensure_ascii=False, default=str)
    return text[:RESULT_LIMIT], bool(getattr(result, "is_error", False))
