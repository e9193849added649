"""The App Home tab: costs for admins, open and recent tickets for staff, a word for everyone else.

On `app_home_opened` (the Home tab) the view is published with `views.publish`:

- admins (`slack.admins`): `cost_home_view` (today, this month, by channel and environment,
  most expensive tickets) followed by the open and recently closed tickets;
- staff: the open and recently closed tickets;
- anyone else: how to ask for help.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from app.cost.ledger import CostLedger
from app.cost.model import format_duration
from app.cost.slack import MAX_VIEW_BLOCKS, cost_home_view, home_summary
from app.render.slack_text import neutralise_mentions
from app.runtime import Services
from app.slack.blocks import section
from app.slack.permissions import is_admin, is_staff
from app.tickets.model import ACTIVE_STATES, Ticket

log = logging.getLogger(__name__)

RECENT_LIMIT = 200
LIST_LIMIT = 20
LINES_PER_SECTION = 10

GUEST_TEXT = (
    ":wave: *Hi! I'm the support bot.*\n"
    "Ask a question by mentioning me in a support channel, or with `/support <your question>`. "
    "I answer in the message's thread; reply there to add details.\n"
    "Ticket lists and cost reports here are for support staff."
)


def ticket_line(ticket: Ticket, now: float) -> str:
    title = neutralise_mentions(ticket.title[:80]).replace("\n", " ")
    age = format_duration(max(now - ticket.created_at, 0.0))
    return (
        f"*{ticket.ref}* {title} · {ticket.state.label} · <#{ticket.channel_id}> · {age} old"
        f" · <@{ticket.requester_id}>"
    )


def _sections(title: str, lines: list[str], empty: str) -> list[dict[str, Any]]:
    if not lines:
        return [section(f"*{title}*\n{empty}")]
    out = []
    for i in range(0, len(lines), LINES_PER_SECTION):
        chunk = "\n".join(lines[i : i + LINES_PER_SECTION])
        out.append(section(f"*{title}*\n{chunk}" if i == 0 else chunk))
    return out


def ticket_blocks(tickets: list[Ticket], now: float | None = None) -> list[dict[str, Any]]:
    """Open tickets, then recently closed ones, newest first, at most LIST_LIMIT of each."""
    now = now or time.time()
    open_tickets = [t for t in tickets if t.state in ACTIVE_STATES]
    closed = [t for t in tickets if t.state not in ACTIVE_STATES]
    open_lines = [ticket_line(t, now) for t in open_tickets[:LIST_LIMIT]]
    if len(open_tickets) > LIST_LIMIT:
        open_lines.append(f"…and {len(open_tickets) - LIST_LIMIT} more")
    closed_lines = [ticket_line(t, now) for t in closed[:LIST_LIMIT]]
    n = len(open_tickets)
    return [
        {"type": "header", "text": {"type": "plain_text", "text": "Tickets"}},
        *_sections(f"Open ({n})", open_lines, "_No open tickets._"),
        {"type": "divider"},
        *_sections("Recently closed", closed_lines, "_None yet._"),
    ]


def staff_view(tickets: list[Ticket], now: float | None = None) -> dict[str, Any]:
    return {"type": "home", "blocks": ticket_blocks(tickets, now)[:MAX_VIEW_BLOCKS]}


def guest_view() -> dict[str, Any]:
    return {"type": "home", "blocks": [section(GUEST_TEXT)]}


async def build_home(services: Services, user_id: str) -> dict[str, Any]:
    config = services.config
    admin = is_admin(config, user_id)
    if not admin and not await is_staff(services.slack, services.redis, config, user_id):
        return guest_view()
    tickets = await services.store.recent(limit=RECENT_LIMIT)
    if not admin:
        return staff_view(tickets)
    summary = await home_summary(CostLedger(services.redis, config.pricing))
    return cost_home_view(summary, [{"type": "divider"}, *ticket_blocks(tickets)])


async def publish_home(services: Services, user_id: str) -> None:
    view = await build_home(services, user_id)
    await services.slack.views_publish(user_id=user_id, view=view)


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register(bolt: AsyncApp, services: Services) -> None:
    async def on_home_opened(event: dict[str, Any]) -> None:
        user = str(event.get("user") or "")
        if not user or event.get("tab", "home") != "home":
            return
        try:
            await publish_home(services, user)
        except SlackApiError as exc:
            log.warning("home not published", extra={"user": user, "error": exc.response.get("error")})
        except Exception:
            log.exception("home not published", extra={"user": user})

    bolt.event("app_home_opened")(ack=_ack, lazy=[on_home_opened])
