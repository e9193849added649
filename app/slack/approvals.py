"""Approve / Deny on a tool call the agent wants to make (`evaluated_permission == "ask"`).

The renderer posts the request with two buttons (`tool_approve`, `tool_deny`; value
`{"ticket_id", "tool_use_id"}`, see `app.render.blocks`). Pressing one sends the session a
`user.tool_confirmation` for that tool-use event: `result` allow or deny, with the approver's
reason as `deny_message`. A bridged MCP server's call (a custom tool, `app.sessions.bridge`) is
run by us on Approve and answered with its result, or with an error carrying the reason on
Deny. Deny opens a small modal for an optional reason; if Slack will not open it, the call is
denied without one.

Who may press: the environment's `approvers` (users and user groups), plus Slack staff and
admins. Nobody else, the requester included: everyone else gets an ephemeral refusal and
nothing is sent. With no approvers configured only staff and admins can approve.

Each tool call is decided once: the first decision is kept in Redis
(`sa:ticket:<id>:approvals`, field = tool-use event id), later presses are told who decided.
The buttons are then replaced by a line saying who approved or denied, when the message's
blocks are the whole message (a posted message). A streamed message is never rewritten: what
it shows was streamed as chunks, and `chat.stopStream`'s blocks are only "rendered at the
bottom of the finalized message" (Slack's method reference), so the `blocks` of a click
payload need not hold the answer or the task cards, and a `chat.update` with them could wipe
both (issue 15 item 5). There the decision is posted as a reply in the thread instead; a
later press is told who decided. Ticket state stays `waiting on approval` until the session
runs again; the follower moves it from there.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import anthropic
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from app.jobs.wake import wake
from app.render.blocks import APPROVE_ACTION_ID, DENY_ACTION_ID, context_block, parse_approval_value
from app.render.slack_text import escape, neutralise_mentions
from app.runtime import Services
from app.sessions.custom_tools import CustomToolRunner
from app.slack.permissions import may_approve
from app.slack.threads import find_message
from app.tickets.model import Ticket

__all__ = ["DENY_MODAL_CALLBACK", "Approvals", "blocks_hold_whole_message", "register"]

log = logging.getLogger(__name__)

DENY_MODAL_CALLBACK = "tool_deny_reason"
REASON_BLOCK = "reason"
REASON_ACTION = "reason"
REASON_MAX_CHARS = 1000
DECISION_TTL_SECONDS = 30 * 24 * 3600


def decisions_key(ticket_id: str) -> str:
    return f"sa:ticket:{ticket_id}:approvals"


@dataclass
class Outcome:
    ok: bool
    text: str


class Approvals:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self.redis = services.redis
        self.slack = services.slack
        self.client = services.anthropic
        self.runner = CustomToolRunner(services)

    # -- who may press -------------------------------------------------------------------

    def refusal_text(self, ticket: Ticket) -> str:
        env = self.services.config.environments.get(ticket.environment)
        who = []
        if env is not None:
            who += [f"<@{u}>" for u in env.approvers.users]
            who += [f"<!subteam^{g}>" for g in env.approvers.usergroups]
        named = f" ({', '.join(who)})" if who else ""
        return (
            f"Only the approvers for ticket {ticket.ref}{named}, support staff and admins can approve "
            "or deny the agent's tool calls. Nothing was sent."
        )

    async def decision(self, ticket_id: str, tool_use_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(decisions_key(ticket_id), tool_use_id)
        return json.loads(raw) if raw else None

    # -- deciding --------------------------------------------------------------------------

    async def check(self, ticket: Ticket, tool_use_id: str, user_id: str) -> Outcome | None:
        """Why this user cannot decide this call now (None: they can)."""
        if not await may_approve(self.slack, self.redis, self.services.config, ticket, user_id):
            log.info("tool confirmation refused", extra={"ticket": ticket.id, "user": user_id})
            return Outcome(False, self.refusal_text(ticket))
        earlier = await self.decision(ticket.id, tool_use_id)
        if earlier is not None:
            return Outcome(False, f"This tool call was already {_past(earlier['result'])} by <@{earlier['user']}>.")
        if not ticket.session_id:
            return Outcome(False, f"Ticket {ticket.ref} has no agent session; nothing is waiting for approval.")
        return None

    async def decide(
        self, ticket: Ticket, tool_use_id: str, user_id: str, allow: bool, reason: str | None = None
    ) -> Outcome:
        refused = await self.check(ticket, tool_use_id, user_id)
        if refused is not None:
            return refused
        assert ticket.session_id
        result = "allow" if allow else "deny"
        reason = (reason or "").strip()[:REASON_MAX_CHARS] or None
        record: dict[str, Any] = {"user": user_id, "result": result, "reason": reason, "at": time.time()}
        key = decisions_key(ticket.id)
        if not await self.redis.hsetnx(key, tool_use_id, json.dumps(record)):
            earlier = await self.decision(ticket.id, tool_use_id) or record
            return Outcome(False, f"This tool call was already {_past(earlier['result'])} by <@{earlier['user']}>.")
        await self.redis.expire(key, DECISION_TTL_SECONDS)
        # A specialist's (subagent's) request is answered the same way: the server routes the
        # confirmation by `tool_use_id` to the thread that asked; the params carry no thread id
        # (SDK beta_managed_agents_agent_mcp_tool_use_event.py, `session_thread_id` docstring).
        event: dict[str, Any] = {"type": "user.tool_confirmation", "tool_use_id": tool_use_id, "result": result}
        if not allow:
            event["deny_message"] = _deny_message(reason)
        try:
            # A bridged MCP call waiting for approval is a custom tool call: we run it ourselves.
            bridged = await self.runner.resolve(ticket, tool_use_id, allow, event.get("deny_message"))
            if bridged is None:
                await self.client.beta.sessions.events.send(ticket.session_id, events=[event])  # type: ignore[list-item]
        except (anthropic.BadRequestError, anthropic.NotFoundError, anthropic.ConflictError) as exc:
            await self.redis.hdel(key, tool_use_id)
            log.info("tool confirmation not accepted", extra={"ticket": ticket.id, "error": type(exc).__name__})
            return Outcome(False, "This tool call is no longer waiting for approval (the agent has moved on).")
        except anthropic.APIError as exc:
            await self.redis.hdel(key, tool_use_id)
            log.warning("tool confirmation failed", extra={"ticket": ticket.id, "error": type(exc).__name__})
            return Outcome(False, "I could not reach the agent service. Please press the button again.")
        log.info(
            "tool confirmation sent",
            extra={"ticket": ticket.id, "session": ticket.session_id, "user": user_id, "result": result},
        )
        await self._wake(ticket)
        return Outcome(True, _decided_line(user_id, allow, reason))

    async def _wake(self, ticket: Ticket) -> None:
        """The follower let the ticket go while it waited on this decision: a worker follows it
        again (after the confirmation is in the session, so it reads it there)."""
        try:
            await wake(self.redis, ticket.id, "approval")
        except Exception:  # the session's idle webhook wakes it too, where one is configured
            log.warning("ticket not woken after the decision", extra={"ticket": ticket.id}, exc_info=True)

    # -- Slack -----------------------------------------------------------------------------

    async def mark_message(self, channel: str, ts: str, tool_use_id: str, line: str,
                           message: dict[str, Any] | None = None, thread_ts: str | None = None) -> None:
        """Replace the decided call's buttons on the request message with who decided; on a
        streamed message, post who decided as a reply in the thread instead."""
        if message is None:
            message = await self._message(channel, ts, thread_ts)
            if message is None:
                return
        blocks, text = message.get("blocks") or [], message.get("text")
        if not blocks_hold_whole_message(message):
            await self._reply(channel, thread_ts or message.get("thread_ts") or ts, line)
            return
        changed = False
        out: list[dict[str, Any]] = []
        for block in blocks:
            if block.get("type") == "actions" and _approval_id(block) == tool_use_id:
                out.append(context_block(line))
                changed = True
            else:
                out.append(block)
        if not changed:
            return
        try:
            await self.slack.chat_update(channel=channel, ts=ts, text=text or "Approval needed.", blocks=out)
        except SlackApiError as exc:
            log.info("approval message not updated", extra={"channel": channel, "error": exc.response.get("error")})

    async def _reply(self, channel: str, thread_ts: str, line: str) -> None:
        try:
            await self.slack.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=line, blocks=[context_block(line)]
            )
        except SlackApiError as exc:
            log.info("approval reply not posted", extra={"channel": channel, "error": exc.response.get("error")})

    async def _message(self, channel: str, ts: str, thread_ts: str | None) -> dict[str, Any] | None:
        try:
            return await find_message(self.slack, channel, thread_ts or ts, ts)
        except SlackApiError:
            return None

    async def explain(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        try:
            await self.slack.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except SlackApiError as exc:
            log.info("ephemeral not posted", extra={"channel": channel, "error": exc.response.get("error")})

    async def open_deny_modal(self, trigger_id: str, ticket: Ticket, tool_use_id: str, channel: str,
                              message_ts: str | None) -> bool:
        metadata = json.dumps({"ticket_id": ticket.id, "tool_use_id": tool_use_id, "channel": channel,
                               "message_ts": message_ts})
        view = {
            "type": "modal",
            "callback_id": DENY_MODAL_CALLBACK,
            "private_metadata": metadata,
            "title": {"type": "plain_text", "text": "Deny tool call"},
            "submit": {"type": "plain_text", "text": "Deny"},
            "close": {"type": "plain_text", "text": "Cancel"},
            "blocks": [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"Deny the agent's tool call on ticket {escape(ticket.ref)}?"},
                },
                {
                    "type": "input",
                    "block_id": REASON_BLOCK,
                    "optional": True,
                    "label": {"type": "plain_text", "text": "Reason (the agent sees it)"},
                    "element": {
                        "type": "plain_text_input",
                        "action_id": REASON_ACTION,
                        "multiline": True,
                        "max_length": REASON_MAX_CHARS,
                    },
                },
            ],
        }
        try:
            await self.slack.views_open(trigger_id=trigger_id, view=view)
        except SlackApiError as exc:
            log.info("deny modal not opened", extra={"ticket": ticket.id, "error": exc.response.get("error")})
            return False
        return True


# Fallback texts the renderer gives a posted message that has no answer text of its own.
_FALLBACK_TEXTS = frozenset({"", "Approval needed.", "Done."})
_MARKUP = re.compile(r":[a-z0-9_+-]+:|[*_~`>]")


def blocks_hold_whole_message(message: dict[str, Any]) -> bool:
    """Whether a `chat.update` with this message's (edited) blocks keeps everything it shows.

    Not for a streamed message: Slack marks one with `streaming_state` (the `message` of
    `chat.stopStream`'s response, as typed by Slack's node SDK `ChatStopStreamResponseMessage`),
    and its streamed text and task cards are chunks, not blocks. A message whose text is
    found in none of its blocks (markup aside) is treated the same way, whatever it carries."""
    if message.get("streaming_state") is not None:
        return False
    text = _plain(str(message.get("text") or ""))
    if text in _FALLBACK_TEXTS:
        return True
    return any(text in _plain(json_text(block)) for block in message.get("blocks") or [])


def _plain(text: str) -> str:
    return " ".join(_MARKUP.sub("", text).split())


def json_text(block: dict[str, Any]) -> str:
    """Every string inside a block, joined (where a message's text would be found)."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(block)
    return "\n".join(out)


def _approval_id(block: dict[str, Any]) -> str | None:
    for element in block.get("elements") or []:
        if element.get("action_id") in (APPROVE_ACTION_ID, DENY_ACTION_ID):
            parsed = parse_approval_value(str(element.get("value") or ""))
            if parsed:
                return parsed[1]
    return None


async def decided_lines(redis: Any, ticket_id: str, tool_use_ids: list[str]) -> list[str]:
    """Who decided each of these calls, one line each, for a message rewritten after the turn
    that asked (the renderer's records do not keep a message's own blocks)."""
    if not tool_use_ids:
        return []
    raws = await redis.hmget(decisions_key(ticket_id), tool_use_ids)
    lines = []
    for raw in raws:
        if raw:
            record = json.loads(raw)
            lines.append(_decided_line(str(record["user"]), record["result"] == "allow", record.get("reason")))
    return lines


def _past(result: str) -> str:
    return "approved" if result == "allow" else "denied"


def _deny_message(reason: str | None) -> str:
    if reason:
        return f"A human approver denied this tool call. Their reason: {reason}"
    return "A human approver denied this tool call."


def _decided_line(user_id: str, allow: bool, reason: str | None) -> str:
    if allow:
        return f":white_check_mark: Approved by <@{user_id}>"
    line = f":no_entry_sign: Denied by <@{user_id}>"
    if reason:
        line += f": {neutralise_mentions(escape(reason))}"
    return line


# -- Bolt wiring ------------------------------------------------------------------------------


async def _ack(ack: AsyncAck) -> None:
    await ack()


def _click(body: dict[str, Any]) -> tuple[str, str, str, str | None, str | None]:
    """(value, user, channel, thread_ts, message_ts) of a block_actions payload."""
    action = (body.get("actions") or [{}])[0]
    container = body.get("container") or {}
    message = body.get("message") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id") or ""
    message_ts = container.get("message_ts") or message.get("ts")
    thread_ts = container.get("thread_ts") or message.get("thread_ts") or message_ts
    user = (body.get("user") or {}).get("id") or ""
    return str(action.get("value") or ""), user, channel, thread_ts, message_ts


async def _ticket(services: Services, ticket_id: str, channel: str) -> Ticket | None:
    ticket = await services.store.get(ticket_id)
    if ticket is None or ticket.channel_id != channel:
        return None  # a button copied to another channel acts on nothing
    return ticket


def register(bolt: AsyncApp, services: Services) -> None:
    approvals = Approvals(services)

    async def on_click(body: dict[str, Any]) -> None:
        action_id = ((body.get("actions") or [{}])[0]).get("action_id", "")
        value, user, channel, thread_ts, message_ts = _click(body)
        try:
            parsed = parse_approval_value(value)
            ticket = await _ticket(services, parsed[0], channel) if parsed else None
            if parsed is None or ticket is None:
                await approvals.explain(channel, user, "I could not find the tool call for this button.", thread_ts)
                return
            tool_use_id = parsed[1]
            if action_id == DENY_ACTION_ID:
                refused = await approvals.check(ticket, tool_use_id, user)
                if refused is not None:
                    await approvals.explain(channel, user, refused.text, ticket.thread_ts)
                    return
                trigger = str(body.get("trigger_id") or "")
                if trigger and await approvals.open_deny_modal(trigger, ticket, tool_use_id, channel, message_ts):
                    return  # the modal's submission denies
            outcome = await approvals.decide(ticket, tool_use_id, user, allow=action_id == APPROVE_ACTION_ID)
            if not outcome.ok:
                await approvals.explain(channel, user, outcome.text, ticket.thread_ts)
                return
            if message_ts:
                await approvals.mark_message(
                    channel, message_ts, tool_use_id, outcome.text,
                    message=body.get("message") or None, thread_ts=thread_ts,
                )
        except Exception:
            log.exception("approval failed", extra={"channel": channel})
            await approvals.explain(channel, user, "Something went wrong handling that button; please try again.",
                                    thread_ts)

    async def on_deny_submit(body: dict[str, Any]) -> None:
        view = body.get("view") or {}
        user = (body.get("user") or {}).get("id") or ""
        try:
            meta = json.loads(view.get("private_metadata") or "{}")
        except ValueError:
            return
        channel = str(meta.get("channel") or "")
        values = (view.get("state") or {}).get("values") or {}
        reason = ((values.get(REASON_BLOCK) or {}).get(REASON_ACTION) or {}).get("value")
        try:
            ticket = await _ticket(services, str(meta.get("ticket_id") or ""), channel)
            if ticket is None:
                return
            tool_use_id = str(meta.get("tool_use_id") or "")
            outcome = await approvals.decide(ticket, tool_use_id, user, allow=False, reason=reason)
            if not outcome.ok:
                await approvals.explain(channel, user, outcome.text, ticket.thread_ts)
                return
            if meta.get("message_ts"):
                await approvals.mark_message(
                    channel, str(meta["message_ts"]), tool_use_id, outcome.text, thread_ts=ticket.thread_ts
                )
        except Exception:
            log.exception("deny failed", extra={"channel": channel})

    for action_id in (APPROVE_ACTION_ID, DENY_ACTION_ID):
        bolt.action(action_id)(ack=_ack, lazy=[on_click])
    bolt.view(DENY_MODAL_CALLBACK)(ack=_ack, lazy=[on_deny_submit])
