"""Custom tools the worker runs for the agent (they need Slack context or our records).

- `tools.base`: `CustomTool` (name, typed `Input`, async `run`), `ToolContext`, `ToolResult`.
- `tools.escalate.EscalateToHuman` (`escalate_to_human`) and
  `tools.update_ticket.UpdateTicket` (`update_ticket`).

`custom_tools()` is what every environment's agent is given (provision adds their definitions);
`app.sessions.custom_tools.CustomToolRunner` answers the agent's calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.base import CustomTool


def custom_tools() -> dict[str, CustomTool]:
    from tools.escalate import EscalateToHuman
    from tools.update_ticket import UpdateTicket

    tools: list[CustomTool] = [EscalateToHuman(), UpdateTicket()]
    return {tool.name: tool for tool in tools}
