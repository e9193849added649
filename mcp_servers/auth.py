"""Bearer tokens for our MCP servers: each token is one environment with a set of scopes.

What a tool can reach is decided here, by the credential, never by the prompt:

- `TokenRegistry` holds the configured tokens (from `MCP_TOKEN_*` environment variables, or a
  dict in tests). Tokens are kept as SHA-256 digests next to a `SecretStr`; a presented token
  is compared against every digest with `hmac.compare_digest` (no early exit), and no code
  path here logs or returns a raw token.
- `BearerGate` is the HTTP edge of a server: 401 without a known token, 403 when the token
  lacks the server's scope. Its error bodies are JSON-RPC errors, so the `mcp` client raises
  an `MCPError` carrying the message instead of a generic "Server returned an error response".
- `ScopedMCPServer` is an `MCPServer` whose tools each need a scope: tools outside the
  token's scopes are left out of `tools/list` and refused on `tools/call` with an `is_error`
  result starting `Forbidden (403)`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.context import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, InputRequiredResult, Tool
from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

SCOPE_DOCS_PUBLIC = "docs:public"
SCOPE_DOCS_INTERNAL = "docs:internal"
SCOPE_TICKETS_READ = "tickets:read"
SCOPE_TICKETS_WRITE = "tickets:write"
KNOWN_SCOPES = frozenset({SCOPE_DOCS_PUBLIC, SCOPE_DOCS_INTERNAL, SCOPE_TICKETS_READ, SCOPE_TICKETS_WRITE})

INTERNAL_SCOPES = frozenset(KNOWN_SCOPES)
CUSTOMER_SCOPES = frozenset({SCOPE_DOCS_PUBLIC})

# Minted tokens carry this prefix so log scrubbers and secret scanners recognise them.
TOKEN_PREFIX = "sbk_mcp_"
MIN_TOKEN_LENGTH = 16


def mint_token() -> str:
    """A fresh random token for an `MCP_TOKEN_*` variable."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _parse_scopes(value: object) -> frozenset[str]:
    if isinstance(value, str):
        items: Iterable[object] = value.replace(",", " ").split()
    elif isinstance(value, Iterable):
        items = value
    else:
        raise ValueError("scopes must be a list or a space-separated string")
    scopes = frozenset(str(item).strip() for item in items if str(item).strip())
    unknown = sorted(scopes - KNOWN_SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN_SCOPES))}")
    return scopes


class TokenSpec(BaseModel):
    """What the token held in one environment variable grants."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: str = Field(min_length=1)
    scopes: frozenset[str]

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> frozenset[str]:
        return _parse_scopes(value)


# Environment variable -> the environment and scopes its token carries.
DEFAULT_TOKEN_SPECS: Mapping[str, TokenSpec] = {
    "MCP_TOKEN_INTERNAL": TokenSpec(environment="internal", scopes=INTERNAL_SCOPES),
    "MCP_TOKEN_CUSTOMERS": TokenSpec(environment="customers", scopes=CUSTOMER_SCOPES),
}


class Principal(BaseModel):
    """Who is calling: the environment a verified token belongs to, and what it may do."""

    model_config = ConfigDict(frozen=True)

    environment: str
    scopes: frozenset[str]
    source: str = Field(description="Where the token was configured (env var name), never the token")

    def has(self, scope: str) -> bool:
        return scope in self.scopes


class TokenGrant(BaseModel):
    """One configured token. The value is a `SecretStr`: repr, str and dumps show stars."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: SecretStr
    environment: str = Field(min_length=1)
    scopes: frozenset[str]
    source: str = "config"

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes(cls, value: object) -> frozenset[str]:
        return _parse_scopes(value)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if len(raw) < MIN_TOKEN_LENGTH:
            raise ValueError(f"token is too short (at least {MIN_TOKEN_LENGTH} characters)")
        if raw != raw.strip() or any(ch.isspace() for ch in raw):
            raise ValueError("token must not contain whitespace")
        return value

    @property
    def principal(self) -> Principal:
        return Principal(environment=self.environment, scopes=self.scopes, source=self.source)


class TokenRegistry(BaseModel):
    """The tokens our MCP servers accept. Build with `from_env()` or `from_dict()`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grants: tuple[TokenGrant, ...] = ()
    _digests: tuple[tuple[bytes, Principal], ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _distinct(self) -> TokenRegistry:
        seen: dict[bytes, str] = {}
        for grant in self.grants:
            digest = _digest(grant.token.get_secret_value())
            if digest in seen:
                # Names the sources only: the shared value stays out of the message.
                raise ValueError(
                    f"{seen[digest]} and {grant.source} hold the same token; "
                    "each environment needs its own token"
                )
            seen[digest] = grant.source
        return self

    def model_post_init(self, __context: Any) -> None:
        self._digests = tuple((_digest(g.token.get_secret_value()), g.principal) for g in self.grants)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        specs: Mapping[str, TokenSpec] = DEFAULT_TOKEN_SPECS,
    ) -> TokenRegistry:
        """Tokens from `MCP_TOKEN_INTERNAL` / `MCP_TOKEN_CUSTOMERS` (unset or empty: skipped)."""
        env = os.environ if environ is None else environ
        grants = []
        for var, spec in specs.items():
            value = (env.get(var) or "").strip()
            if not value:
                continue
            try:
                grants.append(TokenGrant(token=SecretStr(value), environment=spec.environment,
                                         scopes=spec.scopes, source=var))
            except ValueError as exc:
                raise ValueError(f"{var}: {_first_error(exc)}") from None
        return cls(grants=tuple(grants))

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> TokenRegistry:
        """`{token: {"environment": "internal", "scopes": ["docs:public", ...]}}` (tests, tools)."""
        grants = []
        for n, (token, spec) in enumerate(data.items()):
            grants.append(TokenGrant(token=SecretStr(token), source=spec.get("source", f"token#{n}"),
                                     environment=spec["environment"], scopes=spec["scopes"]))
        return cls(grants=tuple(grants))

    def verify(self, token: str | None) -> Principal | None:
        """The principal a presented token belongs to, or None. Constant time in the match."""
        if not token:
            return None
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._digests:
            if hmac.compare_digest(presented, digest):  # every entry compared; no early exit
                found = principal
        return found

    def secrets(self) -> list[SecretStr]:
        """The token values, for registering with the log/Sentry scrubber."""
        return [grant.token for grant in self.grants]

    @property
    def environments(self) -> list[str]:
        return sorted({grant.environment for grant in self.grants})

    def __len__(self) -> int:
        return len(self.grants)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            return str(items[0].get("msg", exc))
    return str(exc)


class RegistryTokenVerifier(TokenVerifier):
    """The SDK-side verifier: fills `get_access_token()` inside tools with the principal.

    `AccessToken.token` holds a short fingerprint, not the token, so nothing downstream can log
    the credential by logging the access token object.
    """

    def __init__(self, registry: TokenRegistry) -> None:
        self.registry = registry

    async def verify_token(self, token: str) -> AccessToken | None:
        principal = self.registry.verify(token)
        if principal is None:
            return None
        return AccessToken(
            token="sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12],
            client_id=f"env:{principal.environment}",
            scopes=sorted(principal.scopes),
            claims={"environment": principal.environment, "source": principal.source},
        )


def auth_kwargs(tokens: TokenRegistry, required_scope: str) -> dict[str, Any]:
    """`MCPServer(...)` keyword arguments that make the SDK verify bearers against `tokens`.

    No OAuth endpoints and no protected-resource metadata: static bearer tokens only. The
    issuer URL is required by `AuthSettings` but unused without an authorization server.
    """
    return {
        "token_verifier": RegistryTokenVerifier(tokens),
        "auth": AuthSettings(
            issuer_url=AnyHttpUrl("http://127.0.0.1"),
            resource_server_url=None,
            required_scopes=[required_scope],
        ),
    }


def current_principal() -> Principal | None:
    """The caller of the tool being run (None outside an authenticated HTTP request)."""
    access = get_access_token()
    if access is None:
        return None
    claims = access.claims or {}
    return Principal(
        environment=str(claims.get("environment", "")),
        scopes=frozenset(access.scopes),
        source=str(claims.get("source", "")),
    )


def require_principal() -> Principal:
    principal = current_principal()
    if principal is None:
        raise ToolError("Unauthorized (401): this tool needs a bearer token.")
    return principal


# ---------------------------------------------------------------------------------------------
# HTTP edge


def _error_response_body(message: str) -> bytes:
    # A JSON-RPC error with a null id: the mcp client surfaces its message as an MCPError.
    return json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": message}}).encode()


class BearerGate:
    """ASGI middleware in front of one MCP server: 401 / 403 before any MCP processing.

    The SDK's own bearer middleware still runs behind it (it puts the principal in the context
    tools read); this gate decides the status codes and the messages clients see.
    """

    def __init__(self, app: ASGIApp, registry: TokenRegistry, required_scope: str, realm: str) -> None:
        self.app = app
        self.registry = registry
        self.required_scope = required_scope
        self.realm = realm

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization")
        if not header:
            await self._deny(send, 401, f'Bearer realm="{self.realm}"',
                             "Unauthorized (401): send an `Authorization: Bearer <token>` header.")
            return
        token = header[7:] if header.lower().startswith("bearer ") else ""
        principal = self.registry.verify(token)
        if principal is None:
            await self._deny(
                send, 401,
                f'Bearer realm="{self.realm}", error="invalid_token", '
                'error_description="The bearer token is not recognised"',
                "Unauthorized (401): the bearer token is not recognised.",
            )
            return
        if not principal.has(self.required_scope):
            await self._deny(
                send, 403,
                f'Bearer realm="{self.realm}", error="insufficient_scope", scope="{self.required_scope}"',
                f"Forbidden (403): the {principal.environment!r} environment's credential may not use "
                f"{self.realm} (needs scope {self.required_scope}).",
            )
            return
        await self.app(scope, receive, send)

    @staticmethod
    async def _deny(send: Send, status: int, www_authenticate: str, message: str) -> None:
        body = _error_response_body(message)
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", www_authenticate.encode()),
                (b"cache-control", b"no-store"),
            ],
        })
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# Tool-level scopes


class ScopedMCPServer(MCPServer[Any]):
    """An `MCPServer` whose every tool needs a scope, checked against the caller's token.

    Tools the caller may not use are absent from `tools/list`; calling one anyway returns an
    `is_error` result "Forbidden (403): ...". A tool registered without a scope is refused to
    everyone (fail closed). Without an authenticated caller (no HTTP auth) nothing is allowed.
    """

    def __init__(self, *args: Any, tool_scopes: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tool_scopes: dict[str, str] = dict(tool_scopes)

    def _allowed(self, name: str, principal: Principal | None) -> bool:
        needed = self.tool_scopes.get(name)
        return principal is not None and needed is not None and principal.has(needed)

    async def list_tools(self) -> list[Tool]:
        principal = current_principal()
        return [tool for tool in await super().list_tools() if self._allowed(tool.name, principal)]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        principal = current_principal()
        if principal is None:
            raise ToolError("Unauthorized (401): this tool needs a bearer token.")
        if name in self.tool_scopes and not self._allowed(name, principal):
            raise ToolError(
                f"Forbidden (403): the {principal.environment!r} environment's credential may not "
                f"call {name} (needs scope {self.tool_scopes[name]}). Do not retry; ask a human "
                "with access if this is needed."
            )
        if name not in self.tool_scopes:
            raise ToolError(f"Unknown tool: {name}")
        return await super().call_tool(name, arguments, context)

    def check_scopes_cover_tools(self) -> None:
        """Every registered tool has a scope (call after registering tools)."""
        names = {tool.name for tool in self._tool_manager.list_tools()}
        missing = sorted(names - set(self.tool_scopes))
        if missing:
            raise RuntimeError(f"tools without a scope: {', '.join(missing)}")

