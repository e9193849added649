"""The knowledge base: an FTS5 index over a docs folder (`.index`) and its MCP server (`.server`)."""
