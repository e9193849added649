"""MCP servers the agent reaches: `knowledge_base` (docs search) and `ticket_history`.

- `mcp_servers.auth`: `TokenRegistry` (bearer token -> environment + scopes, from
  `MCP_TOKEN_INTERNAL` / `MCP_TOKEN_CUSTOMERS`), the HTTP gate (401/403), `ScopedMCPServer`.
- `mcp_servers.asgi`: `build_mcp_asgi(name, ...)` (one server, standalone at `/mcp`) and
  `mcp_mounts(...)` (routes at `/mcp/<name>` plus the lifespan the host app must enter).
- `mcp_servers.ticket_history.record_resolved_ticket(...)`: what the bot calls on resolve.
- `mcp_servers.cli`: `support-agent mcp serve NAME` and `support-agent mcp new-token`.

Kept import-light: nothing here imports the MCP SDK until a submodule is used.
"""
