"""`update_ticket`: the agent sets the ticket's title, priority or category."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, model_validator

from tools.base import CustomTool, ToolContext, ToolFailure, ToolInput, ToolResult

log = logging.getLogger(__name__)

Priority = Literal["low", "normal", "high", "urgent"]


class UpdateTicketInput(ToolInput):
    title: str | None = Field(default=None, min_length=1, max_length=150, description="A short, specific title.")
    priority: Priority | None = Field(default=None, description="low, normal, high or urgent.")
    category: str | None = Field(
        default=None, min_length=1, max_length=50, description="One or two words, e.g. billing, login, bug."
    )

    @model_validator(mode="after")
    def _something(self) -> UpdateTicketInput:
        if self.title is None and self.priority is None and self.category is None:
            raise ValueError("give at least one of title, priority, category")
        return self


class UpdateTicket(CustomTool):
    name = "update_ticket"
    description = (
        "Set this ticket's title, priority or category (only the fields you give change), "
        "to keep the support queue accurate."
    )
    Input = UpdateTicketInput

    async def run(self, ctx: ToolContext, args: UpdateTicketInput) -> ToolResult:  # type: ignore[override]
        store = ctx.services.store
        ticket = await store.get(ctx.ticket.id)
        if ticket is None:
            raise ToolFailure("This ticket no longer exists; nothing was changed.")
        changed: list[str] = []
        if args.title is not None and args.title != ticket.title:
            ticket.title = args.title.replace("\n", " ")
            changed.append(f"title={ticket.title!r}")
        if args.priority is not None and args.priority != ticket.priority:
            ticket.priority = args.priority
            changed.append(f"priority={args.priority}")
        if args.category is not None and args.category.lower() != (ticket.category or ""):
            ticket.category = args.category.lower()
            changed.append(f"category={ticket.category}")
        if not changed:
            return ToolResult(f"Ticket {ticket.ref} already had those values; nothing changed.")
        await store.save(ticket)
        fields = [c.split("=")[0] for c in changed]
        log.info("ticket updated by the agent", extra={"ticket": ticket.id, "fields": fields})
        return ToolResult(f"Updated ticket {ticket.ref}: {', '.join(changed)}.")
