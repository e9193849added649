"""The trace in Slack: the "Trace" button and `/support trace #N`, staff only, as a paged modal.

Real HTTP: the Slack emulator delivers signed commands and block_actions to the app (real
slack_bolt), the app reads the session from the Managed Agents emulator and opens/updates the
modal with views.open / views.update, which the emulator checks against Slack's limits.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.stack import Stack
from app.slack.blocks import control_blocks
from app.slack.trace import SECTION_CHARS, build_view, paginate, sections
from app.tickets.model import Ticket, TicketState
from app.trace.model import Trace, TraceEntry
from tests.support import eventually

SUPPORT, TEAM = "C0001", "T0001"
STAFF, OTHER = "U0001", "U0002"  # alice is in @support-team (S0001), bob is not


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    text = (ROOT / "support-agent.yml").read_text()
    head, _, _ = text.partition("\nslack:\n")
    config = tmp_path / "support-agent.yml"
    config.write_text(head + "\nslack:\n  staff:\n    usergroups: [S0001]\n  max_question_chars: 4000\n")
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config) as s:
        yield s




def views(stack: Stack) -> list[dict[str, Any]]:
    return list(stack.slack.state.views.values())


def view_text(view: dict[str, Any]) -> str:
    out = []
    for block in view.get("blocks", []):
        if block.get("type") == "section":
            out.append(block["text"]["text"])
        elif block.get("type") == "context":
            out.extend(e.get("text", "") for e in block["elements"])
    return "\n".join(out)


def responses(stack: Stack) -> list[dict[str, Any]]:
    return [r["body"] for r in stack.slack.state.snapshot_list("responses")]


def ephemerals(stack: Stack) -> list[dict[str, Any]]:
    return stack.slack.state.snapshot_list("ephemerals")


async def answered_ticket(stack: Stack, app: InProcessApp, text: str) -> Ticket:
    ts = await stack.slack.user_posts(SUPPORT, text, user=OTHER)
    ticket: Ticket = await eventually(
        lambda: (t := app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, ts)))
        and t.state == TicketState.WAITING_REQUESTER and t
    )
    return ticket


async def test_support_trace_opens_the_modal_for_staff_and_refuses_others(stack: Stack) -> None:
    app = stack.start_app()
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"tool": "web_search", "input": {"query": "reset password"}, "result": "Use the reset link."},
        {"message": "Use the reset link on the sign-in page."},
    ]}]})
    ticket = await answered_ticket(stack, app, "how do I reset my password?")

    # Not staff (the requester himself): refused, no modal.
    delivery = await stack.slack.send_command("/support", "trace #1", user=OTHER)
    assert delivery.status == 200 and delivery.elapsed < 1.0
    refusal = await eventually(lambda: responses(stack))
    assert refusal[0]["response_type"] == "ephemeral" and "staff only" in refusal[0]["text"]
    await asyncio.sleep(0.3)
    assert views(stack) == []

    # Staff: the modal opens (loading, then the timeline in place).
    await stack.slack.send_command("/support", "trace #1", user=STAFF)
    view = await eventually(lambda: next((v for v in views(stack) if "Ticket #1" in view_text(v)), None))
    assert view["title"]["text"] == "Trace #1"
    text = view_text(view)
    assert "how do I reset my password?" in text and "Use the reset link on the sign-in page." in text
    assert "web_search (built-in) · ok" in text and "turn 1 ended (end_turn)" in text
    buttons = [e for b in view["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons[0]["url"] == f"https://platform.claude.com/workspaces/default/sessions/{ticket.session_id}"
    assert len(views(stack)) == 1

    # Unknown ticket: said so.
    await stack.slack.send_command("/support", "trace #9", user=STAFF)
    await eventually(lambda: any("No such ticket" in r.get("text", "") for r in responses(stack)))


async def test_trace_button_is_for_staff_and_pages_long_timelines(stack: Stack) -> None:
    app = stack.start_app()
    steps: list[dict[str, Any]] = [
        {"tool": "bash", "input": {"command": f"grep -rn 'error {i}' /var/log/app/ --include='*.log'"},
         "result": f"line {i}: " + "x" * 160}
        for i in range(140)
    ]
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [*steps, {"message": "Found it."}]}]})
    ticket = await answered_ticket(stack, app, "why do the logs say error?")
    controls = app.run_coroutine(app.services.slack.chat_postMessage(
        channel=SUPPORT, thread_ts=ticket.thread_ts, text="controls", blocks=control_blocks(ticket)))
    ts = str(controls["ts"])

    await stack.slack.click(SUPPORT, ts, "ticket_trace", user=OTHER)
    refused = await eventually(lambda: ephemerals(stack))
    assert refused[0]["user"] == OTHER and "staff only" in refused[0]["text"]
    await asyncio.sleep(0.3)
    assert views(stack) == []

    await stack.slack.click(SUPPORT, ts, "ticket_trace", user=STAFF)
    view = await eventually(lambda: next((v for v in views(stack) if "Ticket #1" in view_text(v)), None))
    meta = json.loads(view["private_metadata"])
    assert meta["ticket_id"] == ticket.id and meta["page"] >= 1  # opens on the latest page
    assert "Found it." in view_text(view) and len(view["blocks"]) <= 100
    assert all(len(b["text"]["text"]) <= 3000 for b in view["blocks"] if b["type"] == "section")
    nav = next(b for b in view["blocks"] if b["type"] == "actions")
    earlier = next(e for e in nav["elements"] if e["action_id"] == "ticket_trace_page_prev")

    # "Earlier" pages back, in the same modal.
    await stack.slack.events.send_block_actions(
        user=STAFF, channel=SUPPORT, message=None, actions=[earlier], view=view)
    first = await eventually(
        lambda: (v := stack.slack.state.views[view["id"]]) and json.loads(v["private_metadata"])["page"]
        == meta["page"] - 1 and v
    )
    assert "Found it." not in view_text(first) and "bash (built-in) · ok" in view_text(first)
    assert len(views(stack)) == 1


def test_pages_stay_within_slack_modal_limits() -> None:
    entries = [
        TraceEntry(seq=i, at="2026-11-21T10:00:00.000Z", kind="tool_call", turn=1,
                   summary=f"bash (built-in) · ok · 0.10s {'<&>' * 200}",
                   detail={"input": {"command": "y" * 1000}, "status": "ok", "result": "z" * 1000})
        for i in range(1, 600)
    ]
    trace = Trace(ticket={"id": "T1-1", "ref": "#1", "state": "working", "requester_id": "U1"}, entries=entries)
    texts = sections(trace)
    assert all(len(t) <= SECTION_CHARS for t in texts)
    pages = paginate(texts)
    assert len(pages) > 1
    for n in range(len(pages)):
        view = build_view("T1-1", "header", {"ref": "#1", "console_url": "https://x", "entries": 599}, pages, n)
        assert len(view["blocks"]) <= 100
        assert all(len(b["text"]["text"]) <= 3000 for b in view["blocks"] if b["type"] == "section")
        assert len(view["title"]["text"]) <= 24 and len(view["private_metadata"]) <= 3000
    # Mentions and markup in the trace are shown, never acted on.
    assert "<&>" not in "".join(texts) and "&lt;&amp;&gt;" in texts[0]
