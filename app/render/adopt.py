"""Pick up a turn that another process (or an earlier life of this one) was showing.

From the ticket's record (`app/render/records.py`) the new turn learns the messages Slack
shows for it and what each holds. A write whose outcome is unknown is taken as done when it
went to a known message (that message is rewritten with `chat.update` anyway, so it ends
showing exactly the record); a stream start or post whose outcome is unknown is looked for in
the thread. Streams the dead process left open are stopped (nothing appended) and carried on
in place with `chat.update`: the answer goes on in the message it started in, never again from
its first word in a new one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from app.render.delivery import Delivery, _error, _fixed
from app.render.layout import Part
from app.render.records import Intent, snapshot
from app.render.turn import STREAM, UPDATE, SlackMessage, Turn

log = logging.getLogger(__name__)


async def adopt(d: Delivery, turn: Turn, live: set[str]) -> bool:
    """Take over the ticket's recorded turn. False if there is none (or this process shows it)."""
    record = await d.records.load(turn.ticket.id)
    if record is None or (not record.messages and record.intent is None):
        return False
    messages = [m.message() for m in record.messages]
    if any(m.ts in live for m in messages):
        return False
    if record.intent is not None:
        await _settle_intent(d, turn, record.intent, messages)
    for msg in messages:
        if msg.closed or msg.mode != STREAM:
            continue
        await _stop_orphan(d, turn, msg)
    still_open = [m for m in messages if not m.closed]
    for msg in still_open[:-1]:
        msg.closed = True
    turn.messages = messages
    turn.controls_ts = record.controls_ts  # removed when this turn ends
    # Each adopted open message is rewritten once, so it shows exactly what the record says.
    turn.stale.update(m.ts for m in still_open)
    turn.layout.seed(_texts(messages), [t.task() for t in record.tasks])
    await d.records.save(turn.ticket.id, snapshot(turn))
    log.info("turn adopted", extra={"ticket": turn.ticket.id, "messages": len(messages)})
    return True


def _texts(messages: list[SlackMessage]) -> dict[str, str]:
    texts: dict[str, str] = {}
    for msg in messages:
        for part in msg.parts:
            if part.mid is not None and part.offset == len(texts.get(part.mid, "")):
                texts[part.mid] = texts.get(part.mid, "") + part.text
    return texts


async def _settle_intent(d: Delivery, turn: Turn, intent: Intent, messages: list[SlackMessage]) -> None:
    parts = [Part(*p) for p in intent.parts]
    if intent.ts is not None:
        target = next((m for m in messages if m.ts == intent.ts), None)
        if target is not None:
            _absorb(target, parts, intent.task_ids)
            if intent.method == "chat.stopStream":
                target.closed = True
        return
    if intent.method not in ("chat.startStream", "chat.postMessage"):
        return
    ts = await _find_unrecorded(d, turn, intent, {m.ts for m in messages})
    if ts is None:
        return  # it never reached Slack: its content is still to be shown
    mode = STREAM if intent.method == "chat.startStream" else UPDATE
    msg = SlackMessage(ts, mode, time.monotonic())
    _absorb(msg, parts, intent.task_ids)
    messages.append(msg)


def _absorb(msg: SlackMessage, parts: list[Part], task_ids: list[str]) -> None:
    have = {(p.mid, p.offset) for p in msg.parts}
    msg.parts.extend(p for p in parts if (p.mid, p.offset) not in have)
    msg.task_ids.extend(t for t in task_ids if t not in msg.task_ids)


async def _find_unrecorded(d: Delivery, turn: Turn, intent: Intent, known: set[str]) -> str | None:
    """The bot's message in the thread that the unrecorded write made, if it made one."""
    kwargs = {"channel": turn.ticket.channel_id, "ts": turn.ticket.thread_ts, "oldest": f"{intent.at - 5:.6f}"}
    try:
        done = await d.call(turn.ticket, "conversations.replies", _fixed({**kwargs, "limit": 50}))
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        extra = {"ticket": turn.ticket.id, "error": _error(exc)}
        log.warning("thread not read back; a message may show twice", extra=extra)
        return None
    if done is None:
        return None
    found: list[Any] = [
        m for m in (done[0].get("messages") or [])
        if m.get("bot_id") and m.get("ts") not in known and m.get("ts") != turn.ticket.thread_ts
    ]
    return str(found[-1]["ts"]) if found else None


async def _stop_orphan(d: Delivery, turn: Turn, msg: SlackMessage) -> None:
    try:
        await d.call(turn.ticket, "chat.stopStream", _fixed({"channel": turn.ticket.channel_id, "ts": msg.ts}))
    except SlackApiError as exc:  # already ended by Slack (or by the dead process)
        log.info("orphaned stream already gone", extra={"ticket": turn.ticket.id, "error": _error(exc)})
    else:
        d.stats.adopted += 1
        await d.stream_event(turn, "adopted", {"ts": msg.ts})
    msg.mode = UPDATE
