"""The end of a turn: what is left is shown, the last message gets its stop's blocks."""

from __future__ import annotations

import inspect
import logging
from typing import Any

from app.render import thread_status
from app.render.delivery import Delivery
from app.render.describe import stop_note
from app.render.rewrite import rewrite
from app.render.turn import STREAM, Turn
from app.tickets.model import Ticket

log = logging.getLogger(__name__)


async def finish(d: Delivery, turn: Turn) -> None:
    """Show the rest of the turn and end it: the stop, its final blocks, fix-ups, no status."""
    while turn.outbox and not turn.layout.covers_all(d.take(turn, turn.current)):
        await d.deliver(turn)
    final = await final_blocks(d, turn)
    msg = turn.current
    if msg is None and turn.outbox and any(p.kind == "task" or p.mid for p in turn.outbox):
        msg = await d.open_message(turn, final)
    if msg is not None and msg.final_blocks is not None:
        pass  # posted together with the final blocks
    elif msg is not None and not msg.closed:
        if msg.mode == STREAM:
            await d.stop(turn, msg, final)
        else:
            await d.update(turn, msg, final)
    elif final and (turn.layout.approvals or turn.layout.has_text or stop_note(turn.stop_reason)):
        last = turn.messages[-1] if turn.messages else None
        if last is not None and last.final_blocks is None and not last.full:
            last.final_blocks = final  # closed by a rotation just now: it ends the turn
            await rewrite(d, turn, last)
        else:
            await d.post(turn, final)
    turn.outbox.clear()
    if turn.stop_reason != "shutdown":
        await thread_status.hide_working_controls(d, turn)  # the next holder's turn removes it after a hand-off
    await fix_up(d, turn)
    if turn.status_dirty:
        await thread_status.clear_status(d, turn)


async def final_blocks(d: Delivery, turn: Turn) -> list[dict[str, Any]]:
    ticket = turn.ticket
    controls = d.o.controls(ticket) if d.o.controls is not None and turn.stop_reason != "shutdown" else []
    footer = await _footer(d, ticket) if turn.stop_reason not in ("requires_action", "shutdown") else None
    return turn.layout.final_blocks(
        ticket.id, turn.stop_reason, feedback=d.o.feedback, controls=controls, footer=footer
    )


async def _footer(d: Delivery, ticket: Ticket) -> str | None:
    footer = d.o.footer
    if footer is None or isinstance(footer, str):
        return footer
    try:
        value = footer(ticket)
        if inspect.isawaitable(value):
            value = await value
    except Exception:
        log.exception("cost footer failed", extra={"ticket": ticket.id})
        return None
    return value


async def fix_up(d: Delivery, turn: Turn) -> None:
    """Rewrite messages whose live text diverged from the buffered agent messages, and
    closed messages whose tasks moved on since they were closed."""
    for msg in turn.messages:
        parts = turn.layout.corrected(msg.parts)
        if parts is not None:
            d.stats.fixups += 1
            await rewrite(d, turn, msg, parts)
        elif msg.ts in turn.stale:
            await rewrite(d, turn, msg)
