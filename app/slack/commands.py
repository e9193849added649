"""`/support`: open a ticket from a question, list this channel's open tickets, costs, help.

Slack wants the command acknowledged within 3 seconds. Answers that need nothing but the text
(help, empty or oversized input, unknown subcommands) go back in the acknowledgement itself;
everything else is acknowledged at once and done in a Bolt lazy listener, answering through
the command's `response_url` (ephemeral) or by posting in the channel.

`/support <question>`: the bot posts the question as a new channel message; its thread is the
ticket (requester: whoever ran the command), and the question goes to the ticket's inbox for a
worker to send to a new session, exactly like a mention.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk.errors import SlackApiError

from app.cost import verified
from app.cost.ledger import CostLedger
from app.cost.model import format_duration
from app.cost.slack import channel_cost_message, channel_report, should_show_cost
from app.render.slack_text import neutralise_mentions
from app.runtime import Services
from app.slack.blocks import context, control_blocks, section
from app.slack.channels import resolve_environment
from app.slack.controls import note_section
from app.slack.permissions import is_staff
from app.tickets.commit import MessageCommit
from app.tickets.model import ACTIVE_STATES, InboxMessage, Ticket

log = logging.getLogger(__name__)

COMMAND = "/support"
STATUS_LIMIT = 25

HELP_TEXT = (
    "*Support bot*\n"
    "• `/support <your question>` opens a ticket: I post your question here and answer in its thread.\n"
    "• `/support status` lists the open tickets in this channel.\n"
    "• `/support cost` shows what support tickets in this channel cost today and this month.\n"
    "• `/support help` shows this help.\n"
    "• Staff: `/support trace #42` opens a ticket's timeline; `/support memory #42` shows what it read "
    "and wrote in the customer's memory (with `forget` / `correct` for a memory version).\n"
    "You can also mention me in a channel to open a ticket. Inside a ticket's thread, reply to add "
    "details; use the *Stop*, *Resolve* and *Reopen* buttons (or react with :x: to stop the agent)."
)

SLACK_POST_ERRORS = {
    "not_in_channel": "I'm not in this channel yet. Invite me with `/invite @support-agent` and try again.",
    "channel_not_found": "I can't post in this conversation. Try a channel I'm a member of.",
    "is_archived": "This channel is archived, so I can't open a ticket here.",
    "restricted_action": "I'm not allowed to post in this channel.",
}


@dataclass(frozen=True)
class Parsed:
    kind: str  # question | status | cost | trace | help | empty | too_long | unknown
    text: str = ""


_SUBCOMMANDS = {"status", "cost", "help"}
_RESERVED = re.compile(r"^(trace|status|cost|help)\s+#?\d+$", re.IGNORECASE)
_TRACE = re.compile(r"^trace\s+(\S+)$", re.IGNORECASE)
# Staff (app/slack/memory.py): `memory`, `memory <ticket>`, `memory forget|correct memver_...`; any
# other text starting with "memory" is a question ("memory leak after upgrade").
_MEMORY = re.compile(
    r"^memory(?:\s+(#?\d+|[A-Z][A-Z0-9]*[#-]\d+|sesn_\S+|<?https?://\S+|forget\s+memver_\S+"
    r"|correct\s+memver_\S+\s+.+))?$",
    re.IGNORECASE | re.DOTALL,
)


def parse(text: str, max_chars: int) -> Parsed:
    text = (text or "").strip()
    if not text:
        return Parsed("empty")
    word = text.lower()
    if word in _SUBCOMMANDS:
        return Parsed(word)
    if trace := _TRACE.match(text):
        return Parsed("trace", trace.group(1))
    if memory := _MEMORY.match(text):
        return Parsed("memory", memory.group(1) or "")
    if word == "trace" or _RESERVED.match(text):
        return Parsed("unknown", text.split()[0])
    if len(text) > max_chars:
        return Parsed("too_long", text)
    return Parsed("question", text)


def immediate_answer(parsed: Parsed, max_chars: int) -> str | None:
    """The ephemeral answer that goes back with the acknowledgement, if the input needs one."""
    if parsed.kind in ("help", "empty"):
        prefix = "Tell me what you need help with, e.g. `/support how do I reset my password?`\n\n" if (
            parsed.kind == "empty"
        ) else ""
        return prefix + HELP_TEXT
    if parsed.kind == "too_long":
        return (
            f":warning: Your question is {len(parsed.text):,} characters long; the limit is "
            f"{max_chars:,}. Please shorten it (put logs or long details in a reply in the ticket's "
            "thread once it is open)."
        )
    if parsed.kind == "unknown":
        return f"Unknown subcommand `{parsed.text}`.\n\n{HELP_TEXT}"
    return None


def quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in neutralise_mentions(text).splitlines())


def age(seconds: float) -> str:
    return format_duration(max(seconds, 0.0))


def status_lines(tickets: list[Ticket], now: float | None = None) -> list[str]:
    now = now or time.time()
    lines = []
    for t in tickets:
        title = neutralise_mentions(t.title[:80]).replace("\n", " ")
        lines.append(
            f"*{t.ref}* {title} · {t.state.label} · {age(now - t.created_at)} old · <@{t.requester_id}>"
        )
    return lines


# Slack's signature is good for five minutes, so a captured command can be replayed that long;
# Slack itself may deliver a command again (X-Slack-Retry-Num, Socket Mode's retry_attempt).
COMMAND_SEEN_SECONDS = 10 * 60


def command_delivery_key(command: dict[str, Any]) -> str:
    """What identifies one run of a command: Slack issues a fresh `trigger_id` for every
    invocation, so a retry or a replay carries the same one, while a person asking the same
    question twice gets two. Team, channel, user and text are in the key too, so a replayed
    trigger id cannot suppress a different command."""
    parts = [str(command.get(k) or "") for k in ("team_id", "channel_id", "user_id", "command", "text", "trigger_id")]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()
    return f"sa:command:seen:{digest}"


async def claim_command(redis: aioredis.Redis, command: dict[str, Any]) -> bool:
    """True for the first delivery of a command, False for a retry or a replay."""
    return bool(await redis.set(command_delivery_key(command), "1", nx=True, ex=COMMAND_SEEN_SECONDS))


class SupportCommand:
    def __init__(self, services: Services) -> None:
        self.services = services

    @property
    def max_chars(self) -> int:
        return self.services.config.slack.max_question_chars

    async def ack(self, ack: AsyncAck, command: dict[str, Any]) -> None:
        parsed = parse(command.get("text") or "", self.max_chars)
        answer = immediate_answer(parsed, self.max_chars)
        if answer is not None:
            await ack(text=answer, response_type="ephemeral")
        else:
            await ack()

    async def work(self, command: dict[str, Any], respond: AsyncRespond) -> None:
        parsed = parse(command.get("text") or "", self.max_chars)
        try:
            if parsed.kind == "question":
                if not await claim_command(self.services.redis, command):
                    log.info("/support delivery already handled", extra={"channel": command.get("channel_id")})
                    return
                await self.open_ticket(command, parsed.text, respond)
            elif parsed.kind == "status":
                await self.status(command, respond)
            elif parsed.kind == "cost":
                await self.cost(command, respond)
            elif parsed.kind == "trace":
                from app.slack.trace import trace_command

                await trace_command(self.services, command, parsed.text, respond)
            elif parsed.kind == "memory":
                from app.slack.memory import memory_command

                await memory_command(self.services, command, parsed.text, respond)
        except Exception:
            if parsed.kind == "question":  # not handled after all: a retry must be able to redo it
                with contextlib.suppress(Exception):
                    await self.services.redis.delete(command_delivery_key(command))
            log.exception("/support failed", extra={"kind": parsed.kind, "channel": command.get("channel_id")})
            await respond(text="Something went wrong handling that command; please try again.",
                          response_type="ephemeral")

    # -- /support <question> ----------------------------------------------------------------

    async def open_ticket(self, command: dict[str, Any], question: str, respond: AsyncRespond) -> Ticket | None:
        s = self.services
        team_id, channel, user = command.get("team_id") or "", command["channel_id"], command["user_id"]
        environment = await resolve_environment(s.slack, s.redis, s.config, channel, team_id or None)
        if environment is None:
            await respond(
                text=":no_entry: This channel is not set up for support tickets. An admin can add it to "
                "an environment in support-agent.yml.",
                response_type="ephemeral",
            )
            return None
        header = f":speech_balloon: *Question from <@{user}>*"
        try:
            posted = await s.slack.chat_postMessage(
                channel=channel,
                text=f"Question from <@{user}>: {neutralise_mentions(question)[:200]}",
                blocks=[section(header), section(quote(question))],
                unfurl_links=False,
                unfurl_media=False,
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            log.warning("/support could not post", extra={"channel": channel, "error": error})
            await respond(text=SLACK_POST_ERRORS.get(error, f"I could not post in this channel ({error})."),
                          response_type="ephemeral")
            return None
        ts = str(posted["ts"])
        store = s.store
        # One atomic step, as intake does: the message claim (the echo of our own post is never a
        # second question), the ticket, its inbox message and the job, or nothing at all.
        committed = await MessageCommit(s.redis)(
            event_id=None,
            team_id=team_id,
            channel_id=channel,
            thread_ts=ts,
            message=InboxMessage(ts=ts, user_id=user, text=question),
            may_open=True,
            environment=environment,
            title=question[:120],
        )
        ticket = await store.get(committed.ticket_id)
        if ticket is None:
            raise RuntimeError(f"/support ticket not committed ({committed.status})")
        log.info("ticket opened by /support", extra={"ticket": ticket.id, "channel": channel, "slack_ts": ts})
        try:
            await s.slack.chat_update(
                channel=channel,
                ts=ts,
                text=f"Ticket {ticket.ref}: question from <@{user}>: {neutralise_mentions(question)[:200]}",
                blocks=[
                    note_section(f":speech_balloon: *Ticket {ticket.ref}* · question from <@{user}>", ticket),
                    section(quote(question)),
                    context("I'll answer in this thread. Reply there to add details."),
                    *control_blocks(ticket),
                ],
            )
        except SlackApiError as exc:  # decoration only: the ticket is open either way
            log.info("root message not updated", extra={"ticket": ticket.id, "error": exc.response.get("error")})
        return ticket

    # -- /support status ---------------------------------------------------------------------

    async def status(self, command: dict[str, Any], respond: AsyncRespond) -> None:
        channel = command["channel_id"]
        tickets = await self.services.store.channel_tickets(command.get("team_id") or "", channel, limit=200)
        open_tickets = [t for t in tickets if t.state in ACTIVE_STATES]
        if not open_tickets:
            await respond(text=f"No open tickets in <#{channel}>.", response_type="ephemeral")
            return
        lines = status_lines(open_tickets[:STATUS_LIMIT])
        more = len(open_tickets) - STATUS_LIMIT
        if more > 0:
            lines.append(f"…and {more} more")
        n = len(open_tickets)
        heading = f"*{n} open ticket{'s' if n != 1 else ''} in <#{channel}>*"
        body = "\n".join(lines)
        await respond(
            text=f"{heading}\n{body}",
            blocks=[section(heading), section(body)],
            response_type="ephemeral",
        )

    # -- /support cost -----------------------------------------------------------------------

    async def cost(self, command: dict[str, Any], respond: AsyncRespond) -> None:
        s = self.services
        channel, user = command["channel_id"], command["user_id"]
        env_name = await resolve_environment(s.slack, s.redis, s.config, channel)
        env = s.config.environments.get(env_name) if env_name else None
        allowed = (env is not None and should_show_cost(env)) or await is_staff(s.slack, s.redis, s.config, user)
        if not allowed:
            await respond(text="Support costs for this channel are shown to support staff only.",
                          response_type="ephemeral")
            return
        report = await channel_report(CostLedger(s.redis, s.config.pricing), channel)
        message = channel_cost_message(report)
        # Verified resolutions and their cost, this month (issue 18).
        message["blocks"] = [*message["blocks"], *await verified.slack_blocks(s.redis, s.config, channel=channel)][:50]
        await respond(**message, response_type="ephemeral")


def register(bolt: AsyncApp, services: Services) -> None:
    handler = SupportCommand(services)

    async def ack_support(ack: AsyncAck, command: dict[str, Any]) -> None:
        await handler.ack(ack, command)

    async def run_support(command: dict[str, Any], respond: AsyncRespond) -> None:
        await handler.work(command, respond)

    bolt.command(COMMAND)(ack=ack_support, lazy=[run_support])
    from app.slack.memory import register as register_memory

    register_memory(bolt, services)  # Forget / Correct on App Home (issue 19)
