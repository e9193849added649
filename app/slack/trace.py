"""A ticket's trace in Slack, for staff: the "Trace" button and `/support trace #42`.

Both open a modal (views.open) at once with a "loading" view, so the trigger id is used
within Slack's 3 seconds; the timeline is then built (every page of the session's events)
and the modal updated in place (views.update). Long timelines are paged within Slack's
modal limits: at most 100 blocks per view, 3000 characters per section. The pages are kept in
Redis for a few minutes so "Older"/"Newer" only re-render. A button opens the session in the
Claude Console.

Only staff and admins may see a trace (it shows what the agent did with tools and data);
anyone else gets an ephemeral refusal and no modal.
"""

from __future__ import annotations

import json
import logging
import time
from decimal import Decimal
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from app.cost.model import format_duration, format_usd
from app.names import Names
from app.render.slack_text import escape
from app.runtime import Services
from app.slack.blocks import ACTION_TRACE
from app.slack.permissions import is_staff
from app.tickets.model import Ticket
from app.trace import model as k
from app.trace.build import build_trace
from app.trace.lookup import TicketNotFound, find_ticket
from app.trace.model import Trace, TraceEntry

log = logging.getLogger(__name__)

ACTION_PAGE = "ticket_trace_page"
ACTION_CONSOLE = "ticket_trace_console"
VIEW_CALLBACK = "ticket_trace_view"

MAX_VIEW_BLOCKS = 100
SECTION_CHARS = 2900  # under Slack's 3000 per section, with room for escaping slack
SECTIONS_PER_PAGE = 12  # keeps a page well under 100 blocks and a readable size
CACHE_SECONDS = 600
REFUSAL = "Traces are for support staff only. Ask someone on the support team if you need one."

KIND_ICONS = {
    k.TICKET: ":ticket:",
    k.USER_MESSAGE: ":bust_in_silhouette:",
    k.AGENT_MESSAGE: ":robot_face:",
    k.TOOL_CALL: ":hammer_and_wrench:",
    k.APPROVAL: ":raised_hand:",
    k.STATUS: ":small_blue_diamond:",
    k.ERROR: ":warning:",
    k.TURN: ":checkered_flag:",
    k.COST: ":moneybag:",
    k.INTERRUPT: ":octagonal_sign:",
    k.WORKER: ":gear:",
    k.TAKEOVER: ":arrows_counterclockwise:",
    k.WEBHOOK: ":incoming_envelope:",
    k.STREAM: ":speech_balloon:",
    k.SESSION: ":small_orange_diamond:",
}


def entry_line(entry: TraceEntry) -> str:
    at = (entry.at or "queued")[11:19] if entry.at else "queued"
    turn = f" t{entry.turn}" if entry.turn is not None else ""
    icon = KIND_ICONS.get(entry.kind, "•")
    line = f"`{at}{turn}` {icon} {escape(entry.summary)}"
    d = entry.detail
    if entry.kind == k.TOOL_CALL and d.get("input") not in (None, {}):
        line += f"\n      input `{escape(json.dumps(d['input'], ensure_ascii=False)[:200])}`"
    if entry.kind == k.TOOL_CALL and d.get("status") == "ok" and d.get("result"):
        line += f"\n      → {escape(' '.join(str(d['result']).split())[:200])}"
    return line[:SECTION_CHARS]


def sections(trace: Trace) -> list[str]:
    """The timeline as section texts of at most SECTION_CHARS each."""
    out: list[str] = []
    current = ""
    for entry in trace.entries:
        line = entry_line(entry)
        if current and len(current) + 1 + len(line) > SECTION_CHARS:
            out.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        out.append(current)
    return out or ["_Nothing recorded yet._"]


def paginate(texts: list[str], per_page: int = SECTIONS_PER_PAGE) -> list[list[str]]:
    return [texts[i:i + per_page] for i in range(0, len(texts), per_page)] or [[]]


def header_text(trace: Trace, now: float | None = None) -> str:
    t = trace.ticket
    title = escape(str(t.get("title") or ""))[:200]
    state = t.get("state_label") or t["state"]
    parts = [f"*Ticket {t['ref']}* · {state} · {t.get('environment') or '-'} · <@{t['requester_id']}>"]
    created = t.get("created_at")
    if created:
        from datetime import datetime

        opened = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        parts.append(f"{format_duration(max((now or time.time()) - opened, 0.0))} old")
    cost = trace.totals.get("cost_usd")
    if cost is not None:
        parts.append(f"cost {format_usd(Decimal(str(cost)))}")
    text = " · ".join(parts)
    if title:
        text += f"\n>{title}"
    for warning in trace.warnings:
        text += f"\n:warning: {escape(warning)}"
    return text[:SECTION_CHARS]


def build_view(ticket_id: str, header: str, meta: dict[str, Any], pages: list[list[str]], page: int) -> dict[str, Any]:
    page = max(0, min(page, len(pages) - 1))
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": header}}]
    context = f"Session `{meta.get('session_id') or '-'}` · {meta.get('entries', 0)} entries"
    if len(pages) > 1:
        context += f" · page {page + 1} of {len(pages)}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]})
    buttons: list[dict[str, Any]] = []
    if meta.get("console_url"):
        buttons.append({
            "type": "button", "action_id": ACTION_CONSOLE, "url": meta["console_url"],
            "text": {"type": "plain_text", "text": "Open in Claude Console"},
        })
    for label, target in (("◀ Earlier", page - 1), ("Later ▶", page + 1)):
        if 0 <= target < len(pages):
            buttons.append({
                "type": "button", "action_id": f"{ACTION_PAGE}_{'prev' if target < page else 'next'}",
                "text": {"type": "plain_text", "text": label},
                "value": json.dumps({"ticket_id": ticket_id, "page": target}),
            })
    if buttons:
        blocks.append({"type": "actions", "block_id": "trace_nav", "elements": buttons})
    blocks.append({"type": "divider"})
    for text in pages[page]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    assert len(blocks) <= MAX_VIEW_BLOCKS
    return {
        "type": "modal",
        "callback_id": VIEW_CALLBACK,
        "title": {"type": "plain_text", "text": f"Trace {meta.get('ref', '')}"[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "private_metadata": json.dumps({"ticket_id": ticket_id, "page": page}),
        "blocks": blocks,
    }


def loading_view(ticket: Ticket) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": VIEW_CALLBACK,
        "title": {"type": "plain_text", "text": f"Trace {ticket.ref}"[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "private_metadata": json.dumps({"ticket_id": ticket.id, "page": 0}),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f":hourglass: Reading ticket {ticket.ref}…"}}
        ],
    }


class TraceModal:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def may_see(self, user_id: str) -> bool:
        s = self.services
        return await is_staff(s.slack, s.redis, s.config, user_id)

    def _cache_key(self, ticket_id: str) -> str:
        return f"sa:trace:view:{ticket_id}"

    async def rendered(self, ticket: Ticket, *, fresh: bool) -> dict[str, Any]:
        """Header, meta and pages of the ticket's trace (cached briefly for paging)."""
        key = self._cache_key(ticket.id)
        if not fresh:
            raw = await self.services.redis.get(key)
            if raw:
                cached: dict[str, Any] = json.loads(raw)
                return cached
        s = self.services
        trace = await build_trace(s.anthropic, s.store, ticket, s.scrubber, s.settings.anthropic_console_workspace,
                                  Names(s.redis, s.slack))
        out = {
            "header": header_text(trace),
            "meta": {
                "session_id": ticket.session_id,
                "console_url": trace.console_url,
                "entries": len(trace.entries),
                "ref": ticket.ref,
            },
            "pages": paginate(sections(trace)),
        }
        await self.services.redis.set(key, json.dumps(out), ex=CACHE_SECONDS)
        return out

    async def open(self, trigger_id: str, ticket: Ticket) -> str | None:
        """Open the modal on the newest page; returns the view id (None if Slack refused)."""
        slack = self.services.slack
        try:
            opened = await slack.views_open(trigger_id=trigger_id, view=loading_view(ticket))
        except SlackApiError as exc:
            log.warning("trace modal not opened", extra={"ticket": ticket.id, "error": exc.response.get("error")})
            return None
        view_id = str(opened["view"]["id"])
        try:
            data = await self.rendered(ticket, fresh=True)
            pages = data["pages"]
            view = build_view(ticket.id, data["header"], data["meta"], pages, len(pages) - 1)
        except Exception:
            log.exception("trace not built", extra={"ticket": ticket.id})
            view = loading_view(ticket)
            view["blocks"] = [{"type": "section", "text": {"type": "mrkdwn", "text": (
                f":warning: I could not read the trace of ticket {ticket.ref}. Try again in a moment, "
                "or run `support-agent trace` on the server."
            )}}]
        await slack.views_update(view_id=view_id, view=view)
        log.info("trace shown", extra={"ticket": ticket.id, "session": ticket.session_id})
        return view_id

    async def page(self, view_id: str, ticket: Ticket, page: int) -> None:
        data = await self.rendered(ticket, fresh=False)
        view = build_view(ticket.id, data["header"], data["meta"], data["pages"], page)
        await self.services.slack.views_update(view_id=view_id, view=view)


# -- Bolt wiring ------------------------------------------------------------------------------


async def _ack(ack: AsyncAck) -> None:
    await ack()


async def trace_command(
    services: Services, command: dict[str, Any], ref: str, respond: AsyncRespond
) -> None:
    """`/support trace <ticket>`: staff only; opens the modal from anywhere."""
    modal = TraceModal(services)
    user = command.get("user_id") or ""
    if not await modal.may_see(user):
        await respond(text=REFUSAL, response_type="ephemeral")
        return
    try:
        ticket = await find_ticket(services.store, ref, team_id=command.get("team_id") or None)
    except TicketNotFound as exc:
        await respond(text=f"No such ticket: {exc}.", response_type="ephemeral")
        return
    if await modal.open(str(command.get("trigger_id") or ""), ticket) is None:
        await respond(text=f"I could not open the trace of ticket {ticket.ref}; please try again.",
                      response_type="ephemeral")


def register(bolt: AsyncApp, services: Services) -> None:
    modal = TraceModal(services)

    async def explain(body: dict[str, Any], text: str) -> None:
        user = (body.get("user") or {}).get("id") or ""
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if not channel:
            return
        container = body.get("container") or {}
        thread_ts = container.get("thread_ts") or (body.get("message") or {}).get("thread_ts")
        try:
            await services.slack.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as exc:
            log.info("ephemeral not posted", extra={"channel": channel, "error": exc.response.get("error")})

    async def on_trace(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        user = (body.get("user") or {}).get("id") or ""
        try:
            if not await modal.may_see(user):
                log.info("trace refused", extra={"user": user})
                await explain(body, REFUSAL)
                return
            ticket = await services.store.get(str(action.get("value") or ""))
            if ticket is None:
                await explain(body, "I could not find the ticket for this button.")
                return
            if await modal.open(str(body.get("trigger_id") or ""), ticket) is None:
                await explain(body, f"I could not open the trace of ticket {ticket.ref}; please try again.")
        except Exception:
            log.exception("trace button failed")
            await explain(body, "Something went wrong opening the trace; please try again.")

    async def on_page(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        user = (body.get("user") or {}).get("id") or ""
        view_id = str((body.get("view") or {}).get("id") or "")
        try:
            target = json.loads(action.get("value") or "{}")
            if not view_id or not await modal.may_see(user):
                return
            ticket = await services.store.get(str(target.get("ticket_id") or ""))
            if ticket is not None:
                await modal.page(view_id, ticket, int(target.get("page") or 0))
        except Exception:
            log.exception("trace paging failed")

    bolt.action(ACTION_TRACE)(ack=_ack, lazy=[on_trace])
    bolt.action(f"{ACTION_PAGE}_prev")(ack=_ack, lazy=[on_page])
    bolt.action(f"{ACTION_PAGE}_next")(ack=_ack, lazy=[on_page])
    bolt.action(ACTION_CONSOLE)(_ack)  # a link button: Slack still tells us; nothing to do
