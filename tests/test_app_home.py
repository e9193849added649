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
from app.slack.home import GUEST_TEXT, staff_view, ticket_blocks
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
    assert "Open (1)" in staff and f"*{ticket.ref}* why is the build red?" in staff
    assert "Support costs" not in staff and format_usd(total) not in staff

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
    view = staff_view(tickets, now)
    assert view["type"] == "home" and len(view["blocks"]) <= 100
    text = str(ticket_blocks(tickets, now))
    assert "Open (133)" in text and "…and 113 more" in text and "Recently closed" in text
    assert all(len(b["text"]["text"]) <= 3000 for b in view["blocks"] if b["type"] == "section")
    assert "Open (0)" in str(ticket_blocks([], now)) and "_No open tickets._" in str(ticket_blocks([], now))
    assert "support channel" in GUEST_TEXT
