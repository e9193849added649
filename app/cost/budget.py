"""Per-ticket budgets: the session budget parameter and the "budget reached" message.

An environment's `budget_usd` becomes the session's `budget` at creation. When the session
stops with `budget_reached`, the thread says so and offers approvers "Raise budget" (which
updates the session budget; the session then resumes on its own) and "Escalate".
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import BaseModel

from app.config.model import Environment
from app.cost.model import format_usd

RAISE_BUDGET_ACTION = "cost_raise_budget"
ESCALATE_ACTION = "cost_escalate"
BUDGET_BLOCK_ID = "cost_budget_reached"


def usd_to_cents(usd: Decimal) -> int:
    """Whole US cents (half up), at least one."""
    return max(1, int((usd * 100).to_integral_value(ROUND_HALF_UP)))


def budget_param_cents(cents: int) -> dict[str, Any]:
    """The `budget` value for `sessions.create` / `sessions.update`: amount in integer cents."""
    if cents <= 0:
        raise ValueError("a session budget must be at least one cent")
    return {"type": "limit", "max_list_cost": {"amount": str(int(cents)), "currency": "USD"}}


def budget_param(env: Environment) -> dict[str, Any] | None:
    """The session budget for a ticket in `env`, or None when the environment sets none."""
    if env.budget_usd is None:
        return None
    return budget_param_cents(usd_to_cents(env.budget_usd))


def budget_cents_of(budget: Any) -> int | None:
    """The cap in cents of an SDK budget object or dict (`session.budget`, `session.usage.budget`)."""
    if budget is None:
        return None
    limit = budget.get("max_list_cost") if isinstance(budget, dict) else getattr(budget, "max_list_cost", None)
    if limit is None:
        return None
    amount = limit.get("amount") if isinstance(limit, dict) else getattr(limit, "amount", None)
    return int(Decimal(str(amount))) if amount is not None else None


def suggested_raise_cents(current_cents: int, env: Environment | None = None) -> int:
    """The raise offered on the button: the environment's budget again on top, or double."""
    step = usd_to_cents(env.budget_usd) if env is not None and env.budget_usd is not None else current_cents
    return current_cents + max(step, 100)


class BudgetAction(BaseModel):
    """What a "Raise budget" / "Escalate" button carries in its `value`."""

    ticket_id: str
    budget_cents: int | None = None

    def encode(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def decode(cls, value: str) -> BudgetAction:
        return cls.model_validate(json.loads(value))


def budget_reached_message(
    *,
    ticket_id: str,
    ticket_ref: str,
    budget_cents: int,
    spent_usd: Decimal | None = None,
    new_budget_cents: int | None = None,
    approver_mentions: str = "",
    show_amounts: bool = True,
) -> dict[str, Any]:
    """`text` + `blocks` for the thread when a ticket's session stops at its budget.

    `show_amounts=False` keeps money out of customer-facing threads (the buttons still work;
    approvers see the amounts when they act).
    """
    new_budget_cents = new_budget_cents or suggested_raise_cents(budget_cents)
    budget = format_usd(Decimal(budget_cents) / 100)
    new_budget = format_usd(Decimal(new_budget_cents) / 100)
    if show_amounts:
        spent = f" It has used {format_usd(spent_usd)} so far." if spent_usd is not None else ""
        body = (
            f":double_vertical_bar: Ticket {ticket_ref} has reached its spending limit of {budget}, "
            f"so I have paused work on it.{spent} An approver can raise the limit to let me "
            "continue, or escalate the ticket to a person."
        )
    else:
        body = (
            f":double_vertical_bar: Work on ticket {ticket_ref} is paused while a teammate "
            "reviews it. Nothing is needed from you for now."
        )
    if approver_mentions:
        body += f"\n{approver_mentions}"
    raise_label = f"Raise budget to {new_budget}" if show_amounts else "Raise budget"
    confirm_text = (
        f"Ticket {ticket_ref}: raise the limit from {budget} to {new_budget} and let the agent continue."
        if show_amounts
        else f"Ticket {ticket_ref}: raise the spending limit and let the agent continue."
    )
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": body[:3000]}},
        {
            "type": "actions",
            "block_id": BUDGET_BLOCK_ID,
            "elements": [
                {
                    "type": "button",
                    "action_id": RAISE_BUDGET_ACTION,
                    "text": {"type": "plain_text", "text": raise_label[:75]},
                    "style": "primary",
                    "value": BudgetAction(ticket_id=ticket_id, budget_cents=new_budget_cents).encode(),
                    "confirm": {
                        "title": {"type": "plain_text", "text": "Raise the budget?"},
                        "text": {"type": "mrkdwn", "text": confirm_text},
                        "confirm": {"type": "plain_text", "text": "Raise"},
                        "deny": {"type": "plain_text", "text": "Cancel"},
                    },
                },
                {
                    "type": "button",
                    "action_id": ESCALATE_ACTION,
                    "text": {"type": "plain_text", "text": "Escalate"},
                    "value": BudgetAction(ticket_id=ticket_id).encode(),
                },
            ],
        },
    ]
    text = f"Ticket {ticket_ref} reached its spending limit and is paused."
    if not show_amounts:
        text = f"Work on ticket {ticket_ref} is paused."
    return {"text": text, "blocks": blocks}


def budget_raised_message(ticket_ref: str, new_budget_cents: int, actor_id: str) -> dict[str, Any]:
    """The update posted after an approver raised the budget (replaces the buttons)."""
    new_budget = format_usd(Decimal(new_budget_cents) / 100)
    text = f":arrow_forward: <@{actor_id}> raised the limit for ticket {ticket_ref} to {new_budget}; work resumes."
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}
