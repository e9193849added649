"""Past resolved tickets: the store the bot writes (`record_resolved_ticket`) and the MCP server.

Importing this package does not import the MCP SDK; the server is in `.server`.
"""

from mcp_servers.ticket_history.store import HistoryRecord, TicketHistory, record_resolved_ticket

__all__ = ["HistoryRecord", "TicketHistory", "record_resolved_ticket"]
