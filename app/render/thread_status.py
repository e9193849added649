"""Around a turn's messages: the thread's "working" status, and Stop while the agent works."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError

from app.render import blocks as bk
from app.render.calls import Built, _error, _fixed
from app.render.records import snapshot
from app.render.turn import Turn

if TYPE_CHECKING:
    from app.render.delivery import Delivery

log = logging.getLogger(__name__)


async def show_status(d: Delivery, turn: Turn) -> None:
    def build() -> Built:
        kwargs: dict[str, Any] = {
            "channel_id": turn.ticket.channel_id,
            "thread_ts": turn.ticket.thread_ts,
            "status": d.o.status_text,
        }
        if d.o.loading_messages:
            kwargs["loading_messages"] = d.o.loading_messages
        return kwargs, None

    turn.status_retry_at = time.monotonic() + max(d.o.flush_interval, 1.0)
    try:
        done = await d.call(turn.ticket, "assistant.threads.setStatus", build, max_wait=0)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.debug("setStatus failed", extra={"ticket": turn.ticket.id, "error": _error(exc)})
        turn.status_wanted = False
        return
    if done is not None:
        turn.status_wanted = False
        turn.status_set_at = time.monotonic()
        turn.status_dirty = True

async def clear_status(d: Delivery, turn: Turn) -> None:
    try:
        clear = {"channel_id": turn.ticket.channel_id, "thread_ts": turn.ticket.thread_ts, "status": ""}
        await d.call(turn.ticket, "assistant.threads.setStatus", _fixed(clear), max_wait=0)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.debug("clearing the status failed", extra={"ticket": turn.ticket.id, "error": _error(exc)})
    turn.status_dirty = False

async def show_working_controls(d: Delivery, turn: Turn) -> None:
    if d.o.working_controls is None or turn.controls_ts is not None:
        return
    blocks = d.o.working_controls(turn.ticket)
    if not blocks:
        return
    note = {
        "channel": turn.ticket.channel_id, "thread_ts": turn.ticket.thread_ts,
        "text": "The agent is working on it.", "blocks": [bk.context_block("The agent is working on it."), *blocks],
    }
    turn.controls_ts = ""  # asked for: not again, whatever comes of it
    try:
        done = await d.call(turn.ticket, "chat.postMessage", _fixed(note), max_wait=0)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.info("working controls not shown", extra={"ticket": turn.ticket.id, "error": _error(exc)})
        return
    if done is not None:
        turn.controls_ts = str(done[0]["ts"])
        await d.records.save(turn.ticket.id, snapshot(turn))

async def hide_working_controls(d: Delivery, turn: Turn) -> None:
    ts, turn.controls_ts = turn.controls_ts, None
    if not ts:
        return
    try:
        await d.call(turn.ticket, "chat.delete", _fixed({"channel": turn.ticket.channel_id, "ts": ts}))
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        log.info("working controls not removed", extra={"ticket": turn.ticket.id, "error": _error(exc)})
    await d.records.save(turn.ticket.id, snapshot(turn))
