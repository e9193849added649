"""Our MCP servers as ASGI apps: streamable HTTP, bearer auth, host allowlist.

Two ways to serve them:

- standalone (`support-agent mcp serve NAME`): `build_mcp_asgi(name, ...)` at path `/mcp`; the
  returned app runs its own lifespan (the SDK's session manager) under uvicorn.
- inside the web process: `routes, lifespan = mcp_mounts(...)`; add the routes to the web app
  (each answers at exactly `/mcp/<name>`) and enter `lifespan(app)` inside the web app's own
  lifespan. A mounted sub-app's lifespan never runs by itself, and without it every request
  fails with "Task group is not initialized".

Servers run stateless with JSON responses: no `Mcp-Session-Id`, every POST stands alone, so
any number of web processes can serve them behind a load balancer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_servers.auth import BearerGate, ScopedMCPServer, TokenRegistry
from mcp_servers.ticket_history.server import RedisFactory

log = logging.getLogger(__name__)

SERVER_NAMES: tuple[str, ...] = ("knowledge_base", "ticket_history")
DEFAULT_DOCS_DIR = Path("docs/kb")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


class McpConfigError(ValueError):
    """The servers cannot be built as configured; the message is for the operator."""


def docs_dir_from_env(default: Path = DEFAULT_DOCS_DIR) -> Path:
    """`KB_DOCS_DIR` when set; else `docs/kb` in the working directory, or the example folder
    shipped next to this package when the working directory has none."""
    value = os.environ.get("KB_DOCS_DIR", "").strip()
    if value:
        return Path(value)
    if default.is_dir() or default.is_absolute():
        return default
    shipped = Path(__file__).resolve().parents[1] / default
    return shipped if shipped.is_dir() else default


def allowed_hosts_from_env() -> list[str]:
    """`MCP_ALLOWED_HOSTS`: comma-separated host names or URLs the servers answer to."""
    return [h.strip() for h in os.environ.get("MCP_ALLOWED_HOSTS", "").split(",") if h.strip()]


def _host_of(entry: str) -> str:
    entry = entry.strip()
    if "://" in entry:
        parts = urlsplit(entry)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{host}:{parts.port}" if parts.port else host
    return entry.rstrip("/")


def transport_security(allowed_hosts: Iterable[str] = ()) -> TransportSecuritySettings:
    """DNS-rebinding protection with an explicit Host allowlist: loopback names on any port,
    plus each configured public host (a bare name allows any port; `host:port` only that port;
    a URL is reduced to its host). Requests for any other Host get 421."""
    hosts: list[str] = []
    origins: list[str] = []
    for host in LOOPBACK_HOSTS:
        hosts += [host, f"{host}:*"]
        origins += [f"http://{host}", f"http://{host}:*"]
    for entry in allowed_hosts:
        host = _host_of(entry)
        if not host:
            continue
        if host.rsplit("]", 1)[-1].count(":") == 0:  # no explicit port
            hosts += [host, f"{host}:*"]
            origins += [f"https://{host}", f"http://{host}", f"https://{host}:*", f"http://{host}:*"]
        else:
            hosts.append(host)
            origins += [f"https://{host}", f"http://{host}"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=list(dict.fromkeys(hosts)),
        allowed_origins=list(dict.fromkeys(origins)),
    )


class JsonRpcShape:
    """Refuses a POST whose body is not a JSON-RPC 2.0 message with 400, before the SDK sees it.

    The SDK answers most malformed messages itself, but a `tools/call` whose `params` or
    `arguments` is not an object raised inside its dispatcher and was logged as an error (with
    a Sentry event) for every such request. Checked: a JSON object (or a batch of them) with
    `jsonrpc: "2.0"`, a string `method` for requests, an object `params` when present, and an
    object `arguments` in `tools/call`. The body is already bounded (app.http_limits)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = jsonrpc_problem(body)
        if problem is not None:
            log.warning("mcp request refused", extra={"path": scope.get("path"), "reason": problem})
            error = {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": f"Invalid request: {problem}"}}
            await JSONResponse(error, status_code=400)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def jsonrpc_problem(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return "not JSON"
    messages = value if isinstance(value, list) else [value]
    if not messages:
        return "empty batch"
    for message in messages:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return "not a JSON-RPC 2.0 message"
        if "method" in message and not isinstance(message["method"], str):
            return "method is not a string"
        params = message.get("params")
        if params is not None and not isinstance(params, dict):
            return "params is not an object"
        if message.get("method") == "tools/call":
            if not isinstance((params or {}).get("name"), str):
                return "tools/call needs a tool name"
            arguments = (params or {}).get("arguments")
            if arguments is not None and not isinstance(arguments, dict):
                return "tools/call arguments is not an object"
    return None


class McpAsgiApp:
    """One MCP server's ASGI app: the bearer gate in front of the SDK's streamable HTTP app.

    `path` is where it answers (`/mcp` standalone, `/mcp/<name>` mounted). Lifespan messages
    go to the SDK app, so uvicorn can serve this directly; a host app enters `lifespan()`.
    """

    def __init__(self, name: str, server: ScopedMCPServer, inner: Starlette, gate: BearerGate, path: str,
                 extras: dict[str, Any]) -> None:
        self.name = name
        self.server = server
        self.path = path
        self._inner = inner
        self._gate = gate
        self.extras = extras  # e.g. {"kb": KnowledgeBase} for tests and metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._inner(scope, receive, send)
        else:
            await self._gate(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Runs the server's session manager (and its Redis client); enter once per process."""
        async with self._inner.router.lifespan_context(self._inner):
            yield


def build_mcp_server(
    name: str,
    *,
    tokens: TokenRegistry,
    docs_dir: Path | None = None,
    redis_url: str | None = None,
    redis_factory: RedisFactory | None = None,
) -> tuple[ScopedMCPServer, str, dict[str, Any]]:
    """The server, the scope a token needs to reach it at all, and extras (the KB index)."""
    if name == "knowledge_base":
        from mcp_servers.knowledge_base.server import SERVER_SCOPE as KB_SCOPE
        from mcp_servers.knowledge_base.server import build_server as build_kb

        folder = Path(docs_dir) if docs_dir is not None else docs_dir_from_env()
        if not folder.is_dir():
            raise McpConfigError(f"knowledge_base: docs folder {str(folder)!r} does not exist")
        server, kb = build_kb(folder, tokens=tokens, name=name)
        return server, KB_SCOPE, {"kb": kb}
    if name == "ticket_history":
        from mcp_servers.ticket_history.server import SERVER_SCOPE as HISTORY_SCOPE
        from mcp_servers.ticket_history.server import build_server as build_history

        if redis_url is None and redis_factory is None:
            raise McpConfigError("ticket_history: needs redis_url or redis_factory")
        history = build_history(tokens=tokens, redis_url=redis_url, redis_factory=redis_factory, name=name)
        return history, HISTORY_SCOPE, {}
    raise McpConfigError(f"unknown MCP server {name!r}; known: {', '.join(SERVER_NAMES)}")


def build_mcp_asgi(
    name: str,
    *,
    tokens: TokenRegistry,
    docs_dir: Path | None = None,
    redis_url: str | None = None,
    redis_factory: RedisFactory | None = None,
    allowed_hosts: Sequence[str] = (),
    path: str = "/mcp",
) -> McpAsgiApp:
    """One of our MCP servers (`knowledge_base`, `ticket_history`) as an ASGI app at `path`.

    `knowledge_base` reads `docs_dir` (default: `KB_DOCS_DIR` or `docs/kb`); `ticket_history`
    needs `redis_url` or `redis_factory`. With no tokens at all it refuses to build: a server
    nobody can call is a misconfiguration, and there is no unauthenticated mode.
    """
    if len(tokens) == 0:
        raise McpConfigError(
            "no MCP tokens configured: set MCP_TOKEN_INTERNAL and/or MCP_TOKEN_CUSTOMERS "
            "(generate one with `support-agent mcp new-token`)"
        )
    server, required_scope, extras = build_mcp_server(
        name, tokens=tokens, docs_dir=docs_dir, redis_url=redis_url, redis_factory=redis_factory
    )
    inner = server.streamable_http_app(
        streamable_http_path=path,
        stateless_http=True,
        json_response=True,
        transport_security=transport_security(allowed_hosts),
    )
    # Authenticated first (the gate), then the JSON-RPC shape, then the SDK.
    gate = BearerGate(JsonRpcShape(inner), tokens, required_scope=required_scope, realm=name)
    return McpAsgiApp(name, server, inner, gate, path, extras)


def mcp_mounts(
    *,
    tokens: TokenRegistry,
    names: Sequence[str] = SERVER_NAMES,
    prefix: str = "/mcp",
    docs_dir: Path | None = None,
    redis_url: str | None = None,
    redis_factory: RedisFactory | None = None,
    allowed_hosts: Sequence[str] = (),
) -> tuple[list[BaseRoute], Lifespan]:
    """Routes for the web app (`<prefix>/<name>` each) and the lifespan that runs them.

    Usage in the web app:

        routes, mcp_lifespan = mcp_mounts(tokens=TokenRegistry.from_env(), redis_factory=lambda: services.redis,
                                          allowed_hosts=[config.public_base_url or ""])
        async def lifespan(app):
            async with mcp_lifespan(app):
                yield
        Starlette(routes=[..., *routes], lifespan=lifespan)

    Each route is an exact-path `Route` (not a `Mount`): a `Mount("/mcp/x")` would only match
    `/mcp/x/...` and answer `/mcp/x` with a redirect, while the URL registered with Managed
    Agents is `/mcp/x`. With no tokens configured this logs a warning and returns no routes.
    `redis_factory` is called inside the lifespan, on the serving loop; the client it returns
    is not closed by us. A `redis_url` makes a client the lifespan closes.
    """
    if len(tokens) == 0:
        log.warning("MCP servers not mounted: no MCP_TOKEN_* variables set")
        return [], _no_lifespan
    prefix = "/" + prefix.strip("/")
    apps = [
        build_mcp_asgi(
            name, tokens=tokens, docs_dir=docs_dir, redis_url=redis_url, redis_factory=redis_factory,
            allowed_hosts=allowed_hosts, path=f"{prefix}/{name}",
        )
        for name in names
    ]
    routes: list[BaseRoute] = [Route(app.path, endpoint=app, name=f"mcp-{app.name}") for app in apps]

    @asynccontextmanager
    async def lifespan(_: Any = None) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for app in apps:
                await stack.enter_async_context(app.lifespan())
            log.info("mcp servers running", extra={"servers": [a.path for a in apps]})
            yield

    return routes, lifespan


@asynccontextmanager
async def _no_lifespan(_: Any = None) -> AsyncIterator[None]:
    yield
