"""Issue 17 item 3 (the part outside the renderer): a stale Stop tells the person who pressed
it, in the thread and only them, and the stale button on our own note goes away. Through the
Slack emulator (signed block_actions to the real Bolt app) and the Managed Agents emulator."""

from __future__ import annotations

from typing import Any

from app.sandbox.stack import Stack
from app.slack.blocks import control_blocks
from app.slack.controls import TicketControls
from app.tickets.model import TicketState
from tests.support import eventually

SUPPORT = "C0001"
TEAM = "T0001"


def action_ids(message: dict[str, Any]) -> list[str]:
    return [e.get("action_id", "") for b in message.get("blocks") or [] for e in b.get("elements") or []]


def refreshed(stack: Stack, thread_ts: str, ts: str) -> dict[str, Any] | None:
    """The message `ts` once it no longer carries Stop."""
    return next((m for m in stack.slack.state.thread(SUPPORT, thread_ts)
                 if m["ts"] == ts and "ticket_stop" not in action_ids(m)), None)


async def test_a_stale_stop_answers_the_presser_in_the_thread_and_goes_away(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [{"message": "Done.", "deltas": 1}]}]})
    app = stack.start_app()
    store = app.services.store
    # `/support <question>`: the question's message carries the ticket's controls, Stop included.
    await stack.slack.send_command("/support", "first question", user="U0002", user_name="bob")
    ticket = await eventually(lambda: (t := app.run_coroutine(store.recent(limit=1))) and t[0].state
                              == TicketState.WAITING_REQUESTER and t[0])
    ts = ticket.thread_ts
    root = await eventually(lambda: next((m for m in stack.slack.state.thread(SUPPORT, ts)
                                          if m["ts"] == ts and "ticket_stop" in action_ids(m)), None))
    # A note the controls posted while the agent was working carries Stop too; both are stale now.
    working = ticket.model_copy(update={"state": TicketState.WORKING})
    app.run_coroutine(TicketControls(app.services)._post(working, "earlier note", control_blocks(working)))
    note = next(m for m in stack.slack.state.thread(SUPPORT, ts) if m.get("text") == "earlier note")
    assert "ticket_stop" in action_ids(note)

    for pressed in (root, note):
        delivery = await stack.slack.click(SUPPORT, pressed["ts"], "ticket_stop", user="U0002")
        assert delivery.status == 200
        # The Stop button is gone from that message; its other blocks and Resolve stay.
        updated = await eventually(lambda: refreshed(stack, ts, pressed["ts"]))  # noqa: B023
        assert "ticket_resolve" in action_ids(updated)
        assert [b["type"] for b in updated["blocks"]] == [b["type"] for b in pressed["blocks"]]
        assert updated["text"] == pressed["text"]

    # Each time the presser was told, ephemerally, in the thread: visible to them, to nobody else.
    told = [e for e in stack.slack.state.snapshot_list("ephemerals") if "Nothing to stop" in e.get("text", "")]
    assert [(e["user"], e["channel"], e.get("thread_ts")) for e in told] == [("U0002", SUPPORT, ts)] * 2
    assert "out of date" in told[0]["text"] and ticket.ref in told[0]["text"]
    # Nothing was stopped.
    fresh = app.run_coroutine(store.get(ticket.id))
    assert fresh is not None and fresh.state == TicketState.WAITING_REQUESTER
    assert "user.interrupt" not in [e["type"] for e in stack.agents.state.received_user_events(ticket.session_id)]
