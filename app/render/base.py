"""What the follower asks of a renderer: show agent events for one ticket in its thread."""

from __future__ import annotations

from typing import Any, Protocol

from app.tickets.model import Ticket


class Renderer(Protocol):
    async def event(self, ticket: Ticket, event: Any, *, replay: bool) -> None:
        """Show one agent event. `replay` is true for events found while catching up."""

    async def delta(self, ticket: Ticket, event: Any) -> None:
        """A live preview (`event_start` / `event_delta`); never replayed, may be ignored."""

    async def turn_ended(self, ticket: Ticket, stop_reason: str | None) -> None:
        """The agent stopped working on the current turn (idle or terminated)."""

    async def notice(self, ticket: Ticket, text: str) -> None:
        """A message from the bot itself (errors, state changes), always shown."""


def message_text(event: Any) -> str:
    """The text of an `agent.message` event (redacted blocks are skipped)."""
    parts = []
    for block in getattr(event, "content", None) or []:
        if getattr(block, "type", None) == "text":
            parts.append(block.text)
    return "".join(parts)
