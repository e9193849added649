"""The App Home tab: tickets for staff (with costs for admins), a word for everyone else.

On `app_home_opened` (the Home tab) the view is published with `views.publish`:

- admins (`slack.admins`): `cost_home_blocks` (today, this month, by channel and environment,
  most expensive tickets) followed by the ticket list;
- staff: the ticket list;
- anyone else: how to ask for help.

The ticket list shows each ticket's status, environment, requester, channel, age and cost,
its number linked to the thread and a Trace button (the staff-only trace modal). A status
menu and a channel menu filter it; the choice is kept per user in Redis, so the tab opens
the way it was left, and each change republishes the view. Open tickets come from the store's
index of active tickets, so an old ticket still waiting is listed however many came after.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from app.cost import verified
from app.cost.ledger import CostLedger, Totals
from app.cost.model import format_duration, format_usd
from app.cost.slack import MAX_VIEW_BLOCKS, cost_home_blocks, home_summary
from app.render.slack_text import escape, neutralise_mentions
from app.runtime import Services
from app.slack.blocks import ACTION_TRACE, section
from app.slack.memory import home_blocks as memory_home_blocks
from app.slack.permalinks import permalinks
from app.slack.permissions import is_admin, is_staff
from app.tickets.model import ACTIVE_STATES, Ticket, TicketState
from app.tickets.store import TicketStore

log = logging.getLogger(__name__)

ACTION_STATUS = "home_filter_status"
ACTION_CHANNEL = "home_filter_channel"
ACTION_ALL_CHANNELS = "home_filter_all_channels"
ACTION_REFRESH = "home_refresh"
FILTERS_BLOCK_ID = "home_filters"

RECENT_LIMIT = 200
ACTIVE_LIMIT = 500
LIST_LIMIT = 25
HEADER_BLOCKS = 3  # header, filters, context
FILTER_TTL_SECONDS = 90 * 24 * 3600

# The status menu: groups first, then each state on its own.
ALL, OPEN, CLOSED = "all", "open_any", "closed_any"
STATE_LABELS: dict[TicketState, str] = {
    TicketState.OPEN: "New",
    TicketState.WORKING: "Working",
    TicketState.WAITING_REQUESTER: "Waiting on requester",
    TicketState.WAITING_APPROVAL: "Waiting on approval",
    TicketState.RESOLVED: "Resolved",
    TicketState.ESCALATED: "Escalated",
    TicketState.FAILED: "Failed",
}
STATUS_CHOICES: dict[str, str] = {
    ALL: "Open and recently closed",
    OPEN: "All open",
    CLOSED: "All closed",
    **{state.value: label for state, label in STATE_LABELS.items()},
}

GUEST_TEXT = (
    ":wave: *Hi! I'm the support bot.*\n"
    "Ask a question by mentioning me in a support channel, or with `/support <your question>`. "
    "I answer in the message's thread; reply there to add details.\n"
    "Ticket lists and cost reports here are for support staff."
)


class HomeFilter(BaseModel):
    """What a staff member chose to see; unknown statuses read as the default."""

    status: str = ALL
    channel: str | None = None

    def normalised(self) -> HomeFilter:
        return HomeFilter(status=self.status if self.status in STATUS_CHOICES else ALL, channel=self.channel or None)


@dataclass
class TicketRow:
    """What one line of the list needs beyond the ticket itself."""

    ticket: Ticket
    link: str | None = None
    cost: Totals | None = None


# -- the filter, kept per user ----------------------------------------------------------------


def _filter_key(user_id: str) -> str:
    return f"sa:home:filter:{user_id}"


async def load_filter(services: Services, user_id: str) -> HomeFilter:
    raw = await services.redis.get(_filter_key(user_id))
    if not raw:
        return HomeFilter()
    try:
        return HomeFilter.model_validate_json(raw).normalised()
    except ValidationError:
        return HomeFilter()


async def save_filter(services: Services, user_id: str, chosen: HomeFilter) -> None:
    await services.redis.set(_filter_key(user_id), chosen.normalised().model_dump_json(), ex=FILTER_TTL_SECONDS)


# -- choosing the tickets -------------------------------------------------------------------


def matches(ticket: Ticket, status: str) -> bool:
    if status == ALL:
        return True
    if status == OPEN:
        return ticket.state in ACTIVE_STATES
    if status == CLOSED:
        return ticket.state not in ACTIVE_STATES
    return ticket.state.value == status


async def candidate_tickets(store: TicketStore, chosen: HomeFilter, team_id: str | None) -> list[Ticket]:
    """Every active ticket plus the most recent ones, of the chosen channel if any, newest first."""
    active = await store.active(limit=ACTIVE_LIMIT)
    if chosen.channel and team_id:
        recent = await store.channel_tickets(team_id, chosen.channel, limit=RECENT_LIMIT)
    else:
        recent = await store.recent(limit=RECENT_LIMIT)
    tickets = list({t.id: t for t in (*active, *recent)}.values())
    if chosen.channel:
        tickets = [t for t in tickets if t.channel_id == chosen.channel]
    return sorted(tickets, key=lambda t: t.created_at, reverse=True)


@dataclass
class TicketList:
    title: str
    shown: list[Ticket]
    more: int
    empty: str


def layout(tickets: list[Ticket], status: str, room: int) -> list[TicketList]:
    """The lists the status shows, each cut so that all of them fit in `room` blocks."""
    tickets = [t for t in tickets if matches(t, status)]
    if status == ALL:
        open_tickets = [t for t in tickets if t.state in ACTIVE_STATES]
        closed = sorted((t for t in tickets if t.state not in ACTIVE_STATES), key=lambda t: t.updated_at, reverse=True)
        parts = [
            (f"Open ({len(open_tickets)})", open_tickets, "_No open tickets._"),
            ("Recently closed", closed, "_None yet._"),
        ]
    else:
        parts = [(f"{STATUS_CHOICES[status]} ({len(tickets)})", tickets, "_No tickets match._")]
    # Each list also takes a title, an overflow note and a divider.
    per_list = max(1, min(LIST_LIMIT, (room - HEADER_BLOCKS) // len(parts) - 3))
    return [TicketList(title, ts[:per_list], max(0, len(ts) - per_list), empty) for title, ts, empty in parts]


# -- blocks -----------------------------------------------------------------------------------


def ticket_block(row: TicketRow, now: float) -> dict[str, Any]:
    t = row.ticket
    title = neutralise_mentions(escape(" ".join(t.title.split())[:80])) or "_(no text)_"
    ref = f"<{row.link}|{t.ref}>" if row.link else t.ref
    age = format_duration(max(now - t.created_at, 0.0))
    facts = [
        STATE_LABELS.get(t.state, t.state.value),
        escape(t.environment),
        f"<@{t.requester_id}>",
        f"<#{t.channel_id}>",
        f"{age} old",
        format_usd(row.cost.total_usd) if row.cost is not None else "no cost yet",
    ]
    return {
        "type": "section",
        "block_id": f"ticket:{t.id}"[:255],
        "text": {"type": "mrkdwn", "text": f"*{ref}* {title}\n{' · '.join(facts)}"},
        "accessory": {
            "type": "button",
            "action_id": ACTION_TRACE,
            "text": {"type": "plain_text", "text": "Trace"},
            "value": t.id,
        },
    }


def _option(value: str, label: str) -> dict[str, Any]:
    return {"text": {"type": "plain_text", "text": label}, "value": value}


def filter_block(chosen: HomeFilter) -> dict[str, Any]:
    status_menu: dict[str, Any] = {
        "type": "static_select",
        "action_id": ACTION_STATUS,
        "placeholder": {"type": "plain_text", "text": "Status"},
        "options": [_option(v, label) for v, label in STATUS_CHOICES.items()],
        "initial_option": _option(chosen.status, STATUS_CHOICES[chosen.status]),
    }
    channel_menu: dict[str, Any] = {
        "type": "conversations_select",
        "action_id": ACTION_CHANNEL,
        "placeholder": {"type": "plain_text", "text": "Any channel"},
        "filter": {"include": ["public", "private"], "exclude_bot_users": True},
    }
    if chosen.channel:
        channel_menu["initial_conversation"] = chosen.channel
    elements = [status_menu, channel_menu]
    if chosen.channel:
        elements.append(_button(ACTION_ALL_CHANNELS, "All channels"))
    elements.append(_button(ACTION_REFRESH, "Refresh"))
    return {"type": "actions", "block_id": FILTERS_BLOCK_ID, "elements": elements}


def _button(action_id: str, label: str) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "text": {"type": "plain_text", "text": label}, "value": label}


def ticket_blocks(
    tickets: list[Ticket],
    chosen: HomeFilter,
    rows: dict[str, TicketRow] | None = None,
    now: float | None = None,
    room: int = MAX_VIEW_BLOCKS,
) -> list[dict[str, Any]]:
    """The ticket part of the home within `room` blocks: header, filters, then one block per ticket."""
    now = now or time.time()
    chosen = chosen.normalised()
    rows = rows or {}
    where = f" in <#{chosen.channel}>" if chosen.channel else ""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Tickets"}},
        filter_block(chosen),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"{STATUS_CHOICES[chosen.status]}{where} · newest first · "
            f"updated {time.strftime('%H:%M UTC', time.gmtime(now))}"
        )}]},
    ]
    for i, part in enumerate(layout(tickets, chosen.status, room)):
        if i:
            blocks.append({"type": "divider"})
        blocks.append(section(f"*{part.title}*" if part.shown else f"*{part.title}*\n{part.empty}"))
        blocks.extend(ticket_block(rows.get(t.id) or TicketRow(t), now) for t in part.shown)
        if part.more:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
                f"…and {part.more} more. Narrow the list with the status and channel menus."
            )}]})
    return blocks


def staff_view(tickets: list[Ticket], chosen: HomeFilter | None = None, now: float | None = None) -> dict[str, Any]:
    return {"type": "home", "blocks": ticket_blocks(tickets, chosen or HomeFilter(), now=now)}


def guest_view() -> dict[str, Any]:
    return {"type": "home", "blocks": [section(GUEST_TEXT)]}


# -- building and publishing ----------------------------------------------------------------


async def ticket_rows(services: Services, tickets: list[Ticket]) -> dict[str, TicketRow]:
    """Each ticket with its thread link and its cost so far."""
    costs = await CostLedger(services.redis, services.config.pricing).ticket_totals(t.id for t in tickets)
    links = await permalinks(services.slack, services.redis, tickets)
    return {t.id: TicketRow(t, links.get(t.id), costs.get(t.id)) for t in tickets}


async def build_home(services: Services, user_id: str, team_id: str | None = None) -> dict[str, Any]:
    config = services.config
    admin = is_admin(config, user_id)
    if not admin and not await is_staff(services.slack, services.redis, config, user_id):
        return guest_view()
    chosen = await load_filter(services, user_id)
    prefix: list[dict[str, Any]] = []
    if admin:
        summary = await home_summary(CostLedger(services.redis, config.pricing))
        prefix = [*cost_home_blocks(summary), *await verified.slack_blocks(services.redis, config), {"type": "divider"}]
    memory = await memory_home_blocks(services, user_id)  # what the agent remembers (issue 19)
    room = MAX_VIEW_BLOCKS - len(prefix) - len(memory)
    tickets = await candidate_tickets(services.store, chosen, team_id)
    shown = [t for part in layout(tickets, chosen.status, room) for t in part.shown]
    rows = await ticket_rows(services, shown)
    return {"type": "home", "blocks": prefix + ticket_blocks(tickets, chosen, rows, room=room) + memory}


async def publish_home(services: Services, user_id: str, team_id: str | None = None) -> None:
    view = await build_home(services, user_id, team_id)
    await services.slack.views_publish(user_id=user_id, view=view)


# -- Bolt wiring ------------------------------------------------------------------------------


async def _ack(ack: AsyncAck) -> None:
    await ack()


def chosen_from_action(current: HomeFilter, action: dict[str, Any]) -> HomeFilter:
    """The filter after one change in the menus."""
    action_id = action.get("action_id")
    if action_id == ACTION_STATUS:
        value = str((action.get("selected_option") or {}).get("value") or ALL)
        return HomeFilter(status=value, channel=current.channel).normalised()
    if action_id == ACTION_CHANNEL:
        return HomeFilter(status=current.status, channel=action.get("selected_conversation") or None).normalised()
    if action_id == ACTION_ALL_CHANNELS:
        return HomeFilter(status=current.status).normalised()
    return current


def register(bolt: AsyncApp, services: Services) -> None:
    async def republish(user: str, team_id: str | None) -> None:
        try:
            await publish_home(services, user, team_id)
        except SlackApiError as exc:
            log.warning("home not published", extra={"user": user, "error": exc.response.get("error")})
        except Exception:
            log.exception("home not published", extra={"user": user})

    async def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        user = str(event.get("user") or "")
        if not user or event.get("tab", "home") != "home":
            return
        await republish(user, body.get("team_id"))

    async def on_filter(body: dict[str, Any]) -> None:
        user = str((body.get("user") or {}).get("id") or "")
        if not user:
            return
        action = (body.get("actions") or [{}])[0]
        current = await load_filter(services, user)
        chosen = chosen_from_action(current, action)
        if chosen != current:
            await save_filter(services, user, chosen)
            log.info("home filtered", extra={"user": user, "filter": json.loads(chosen.model_dump_json())})
        team = (body.get("team") or {}).get("id") or (body.get("user") or {}).get("team_id")
        await republish(user, team)

    bolt.event("app_home_opened")(ack=_ack, lazy=[on_home_opened])
    for action_id in (ACTION_STATUS, ACTION_CHANNEL, ACTION_ALL_CHANNELS, ACTION_REFRESH):
        bolt.action(action_id)(ack=_ack, lazy=[on_filter])
