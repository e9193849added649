"""The App Home tab through the Slack emulator: costs for admins, tickets for staff, a word for others."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cost.ledger import CostLedger
from app.cost.model import format_usd
from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT
from app.sandbox.stack import Stack
from app.slack.home import (
    ACTION_ALL_CHANNELS,
    ACTION_CHANNEL,
    ACTION_REFRESH,
    ACTION_STATUS,
    GUEST_TEXT,
    LIST_LIMIT,
    HomeFilter,
    chosen_from_action,
    staff_view,
    ticket_blocks,
)
from app.tickets.model import Ticket, TicketState
from tests.support import eventually

SUPPORT = "C0001"
ADMIN, GUEST, STAFF = "U0001", "U0002", "U0003"


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    data["slack"]["admins"] = [ADMIN]
    data["slack"]["staff"] = {"users": [STAFF], "usergroups": []}
    config = tmp_path / "support-agent.yml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config) as s:
        s.slack.state.add_user(STAFF, "carol", real_name="Carol Example")
        yield s




def home_of(stack: Stack, user: str) -> dict[str, Any] | None:
    with stack.slack.state.lock:
        return next(
            (dict(v) for v in stack.slack.state.views.values() if v.get("type") == "home" and v.get("user_id") == user),
            None,
        )


async def open_home(stack: Stack, user: str) -> str:
    delivery = await stack.slack.send_event(
        {"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": "home",
         "event_ts": f"{time.time():.6f}"}
    )
    assert delivery.status == 200
    view = await eventually(lambda: home_of(stack, user))
    return str(view["blocks"])


async def test_home_by_role(stack: Stack) -> None:
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"message": "Here is the answer."},
        {"usage": {"input_tokens": 10_000, "output_tokens": 1000, "active_seconds": 90}},
    ]}]})
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "why is the build red?", user=GUEST)

    def answered() -> Ticket | None:
        t: Ticket | None = app.run_coroutine(app.services.store.by_thread("T0001", SUPPORT, ts))
        return t if t is not None and t.state == TicketState.WAITING_REQUESTER else None

    ticket = await eventually(answered)
    ledger = CostLedger(app.services.redis, app.services.config.pricing)
    total = await eventually(lambda: app.run_coroutine(ledger.ticket_total(ticket.id)).total_usd)

    admin = await open_home(stack, ADMIN)
    assert "Support costs" in admin and "By channel" in admin and "By environment" in admin
    assert format_usd(total) in admin and "<#C0001>" in admin and "*internal*" in admin
    assert "why is the build red?" in admin and "Open (1)" in admin

    staff = await open_home(stack, STAFF)
    link = f"https://emulated.slack.com/archives/{SUPPORT}/p{ts.replace('.', '')}"
    assert "Open (1)" in staff and f"*<{link}|{ticket.ref}>* why is the build red?" in staff
    assert "Support costs" not in staff  # the workspace's figures are for admins
    # Each ticket: status, environment, requester, channel, age and its own cost.
    assert f"Waiting on requester · internal · <@{GUEST}> · <#{SUPPORT}> · " in staff
    assert format_usd(total) in staff and "'action_id': 'ticket_trace'" in staff

    guest = await open_home(stack, GUEST)
    assert "I'm the support bot" in guest and "why is the build red?" not in guest

    # The Messages tab is not the Home tab: nothing is published for it.
    await stack.slack.send_event({"type": "app_home_opened", "user": "U0009", "tab": "messages"})
    await asyncio.sleep(0.3)
    assert home_of(stack, "U0009") is None
    app.stop()


def test_ticket_lists_split_open_and_closed_and_stay_within_limits() -> None:
    now = time.time()
    tickets = [
        Ticket(id=f"T-{i}", number=i, team_id="T", channel_id="C1", thread_ts=f"{i}.0", requester_id="U1",
               environment="internal", title=f"question {i}", created_at=now - 60,
               state=TicketState.RESOLVED if i % 3 == 0 else TicketState.WORKING)
        for i in range(1, 200)
    ]
    view = staff_view(tickets, now=now)
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    text = str(view["blocks"])
    assert "Open (133)" in text and f"…and {133 - LIST_LIMIT} more" in text and "Recently closed" in text
    assert text.count("'action_id': 'ticket_trace'") == 2 * LIST_LIMIT
    assert all(len(b["text"]["text"]) <= 3000 for b in view["blocks"] if b["type"] == "section")
    # With the admin's cost blocks in front, the lists shrink to fit the 100 blocks.
    assert len(ticket_blocks(tickets, HomeFilter(), now=now, room=60)) <= 60
    empty = str(ticket_blocks([], HomeFilter(), now=now))
    assert "Open (0)" in empty and "_No open tickets._" in empty
    one_state = str(ticket_blocks(tickets, HomeFilter(status="resolved"), now=now))
    assert "Resolved (66)" in one_state and "Open (133)" not in one_state
    assert "support channel" in GUEST_TEXT


def test_filter_changes_come_from_the_menus() -> None:
    current = HomeFilter(status="working", channel="C1")
    pick = {"action_id": ACTION_STATUS, "selected_option": {"value": "failed"}}
    assert chosen_from_action(current, pick) == HomeFilter(status="failed", channel="C1")
    assert chosen_from_action(current, {"action_id": ACTION_STATUS, "selected_option": {"value": "nonsense"}}) \
        == HomeFilter(status="all", channel="C1")
    assert chosen_from_action(current, {"action_id": ACTION_CHANNEL, "selected_conversation": "C2"}) \
        == HomeFilter(status="working", channel="C2")
    assert chosen_from_action(current, {"action_id": ACTION_ALL_CHANNELS}) == HomeFilter(status="working")
    assert chosen_from_action(current, {"action_id": ACTION_REFRESH}) == current


def home_view_id(stack: Stack, user: str) -> str:
    view = home_of(stack, user)
    assert view is not None
    return str(view["id"])


def seed_ticket(app: Any, stack: Stack, channel: str, title: str, state: TicketState) -> Ticket:
    """A ticket with its thread's first message in the emulator, without running the agent."""
    ts = stack.slack.state.new_ts()
    stack.slack.state.store_message(channel, {"type": "message", "user": GUEST, "text": title, "ts": ts})
    store = app.services.store
    ticket, _ = app.run_coroutine(store.open_ticket(
        team_id="T0001", channel_id=channel, thread_ts=ts, requester_id=GUEST, environment="internal", title=title,
    ))
    if state != ticket.state:
        ticket = app.run_coroutine(store.transition(ticket, state, "test"))
    return ticket  # type: ignore[no-any-return]


async def republished(stack: Stack, user: str, before: str, action: Any) -> str:
    """Do something on the home and wait for the view published in answer."""
    old = home_of(stack, user)
    assert old is not None
    delivery = await action()
    assert delivery.status == 200

    def changed() -> str | None:
        view = home_of(stack, user)
        return str(view["blocks"]) if view is not None and view.get("hash") != old.get("hash") else None

    return await eventually(changed)


async def test_staff_filter_the_home_by_status_and_channel(stack: Stack) -> None:
    stack.slack.state.add_channel("C0005", "billing-help", members=[GUEST, STAFF], bot_member=True)
    app = stack.start_app(worker=False)
    working = seed_ticket(app, stack, SUPPORT, "printer on fire", TicketState.WORKING)
    resolved = seed_ticket(app, stack, SUPPORT, "password reset", TicketState.RESOLVED)
    billing = seed_ticket(app, stack, "C0005", "invoice twice", TicketState.WAITING_REQUESTER)

    home = await open_home(stack, STAFF)
    assert "Open (2)" in home and all(t in home for t in ("printer on fire", "password reset", "invoice twice"))
    view_id = home_view_id(stack, STAFF)

    # Status: only resolved tickets.
    home = await republished(stack, STAFF, home, lambda: stack.slack.act_on_view(
        view_id, ACTION_STATUS, STAFF, selected_option="resolved"))
    assert "Resolved (1)" in home and "password reset" in home
    assert "printer on fire" not in home and "invoice twice" not in home

    # Channel on top: open tickets of #billing-help only.
    home = await republished(stack, STAFF, home, lambda: stack.slack.act_on_view(
        view_id, ACTION_STATUS, STAFF, selected_option="open_any"))
    home = await republished(stack, STAFF, home, lambda: stack.slack.act_on_view(
        view_id, ACTION_CHANNEL, STAFF, selected_conversation="C0005"))
    assert "All open (1)" in home and "invoice twice" in home and "printer on fire" not in home
    assert "'initial_conversation': 'C0005'" in home and "All channels" in home

    # The choice is kept: opening the tab again shows the same filter.
    home = await republished(stack, STAFF, home, lambda: stack.slack.send_event(
        {"type": "app_home_opened", "user": STAFF, "channel": f"D{STAFF}", "tab": "home"}))
    assert "invoice twice" in home and "printer on fire" not in home

    # "All channels" drops the channel and keeps the status.
    home = await republished(stack, STAFF, home, lambda: stack.slack.act_on_view(
        view_id, ACTION_ALL_CHANNELS, STAFF))
    assert "All open (2)" in home and "printer on fire" in home and "password reset" not in home

    # Each ticket links to its thread, and its Trace button opens the trace modal.
    link = f"https://emulated.slack.com/archives/C0005/p{billing.thread_ts.replace('.', '')}"
    assert f"*<{link}|{billing.ref}>* invoice twice" in home
    await stack.slack.act_on_view(view_id, "ticket_trace", STAFF, block_id=f"ticket:{working.id}")
    modal = await eventually(lambda: next((v for v in stack.slack.state.views.values()
                                           if v.get("type") == "modal" and "Trace #1" in str(v["title"])), None))
    assert modal is not None and resolved.ref == "#2" and working.ref == "#1"

    # Thread links are asked of Slack once per ticket, however often the home is published.
    assert len(stack.slack.state.calls("chat.getPermalink")) == 3

    # Another user's filter is their own, and a guest choosing a filter still gets the guest view.
    other = await open_home(stack, ADMIN)
    assert "printer on fire" in other and "password reset" in other
    await open_home(stack, GUEST)
    forged = {"action_id": ACTION_STATUS, "type": "static_select", "selected_option": {"value": "all"}}
    guest = await republished(stack, GUEST, "", lambda: stack.slack.events.send_block_actions(
        user=GUEST, channel="", message=None, actions=[forged], view=home_of(stack, GUEST)))
    assert "I'm the support bot" in guest and "invoice twice" not in guest
    app.stop()
