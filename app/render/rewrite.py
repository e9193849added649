"""Rewriting a message whole with `chat.update`: corrected text, tasks that moved on, adoption."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from app.render import blocks as bk
from app.render.calls import _fixed
from app.render.content import Part
from app.render.records import snapshot
from app.render.slack_text import split_text
from app.render.turn import SlackMessage, Turn

if TYPE_CHECKING:
    from app.render.delivery import Delivery

log = logging.getLogger(__name__)


async def rewrite(d: Delivery, turn: Turn, msg: SlackMessage, parts: list[Part] | None = None) -> None:
    """Make a message show its parts (corrected, or as they are) and its tasks' current status."""
    if parts is not None:
        msg.parts = parts
    text = msg.text
    pieces = split_text(text, turn.layout.cap) if text else [""]
    final = msg.final_blocks
    if final == [] and d.o.decisions is not None:  # an earlier turn's end: who decided what
        try:
            final = [bk.context_block(line) for line in await d.o.decisions(turn.ticket, msg.task_ids)]
        except Exception:
            log.warning("approval decisions unavailable", extra={"ticket": turn.ticket.id}, exc_info=True)
    update = d.content(
        turn, pieces[0], turn.layout.views(msg.task_ids), final,
        {"channel": turn.ticket.channel_id, "ts": msg.ts},
    )
    if msg.final_blocks is None:
        update.pop("metadata", None)
    try:
        await d.call(turn.ticket, "chat.update", _fixed(update), turn=turn, msg=msg)
    except SlackApiError as exc:
        if not await d.edit_failed(turn, msg, exc):
            raise
        if msg.ts in turn.stale and not msg.closed:
            return  # the next step tries again, the way the error asked for
    turn.stale.discard(msg.ts)
    for extra in pieces[1:]:
        post: dict[str, Any] = {"channel": turn.ticket.channel_id, "thread_ts": turn.ticket.thread_ts}
        if turn.plain:
            post["markdown_text"] = extra
        else:
            post.update(text=extra, blocks=bk.message_blocks(extra, []))
        await d.call(turn.ticket, "chat.postMessage", _fixed(post))
    await d.records.save(turn.ticket.id, snapshot(turn))
