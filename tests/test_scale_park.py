"""Issue 14 item 3: only running sessions cost a connection.

A ticket whose session waits on an approval holds no SSE stream and no lease: the follower lets
go at `requires_action`, and Approve wakes the ticket (`app.jobs.wake`) so a worker follows it
again. The tool call then finishes in the card that asked for it and the answer arrives once,
whether the decision comes after the worker let go, or while it was letting go (its job is
dropped then, since the ticket is still held, and the wake-up mark brings it back).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.jobs.lease import ACTIVE, Lease, LeaseManager
from app.jobs.queue import STREAM
from app.jobs.wake import wake, wake_key, woken
from app.render.blocks import APPROVE_ACTION_ID
from app.runtime import Services, build_services
from app.sandbox.app_runner import ROOT
from app.sandbox.stack import Stack
from app.service import make_worker
from app.tickets.model import TicketState
from tests.support import eventually

SUPPORT, TEAM = "C0001", "T0001"
ALICE, BOB = "U0001", "U0002"
ANSWER = "Found it"
SCENARIO = {"rules": [{"match": "(?i)refund", "steps": [
    {"tool": "web_search", "input": {"query": "refund policy"}, "permission": "ask", "result": "refunds: 14 days"},
    {"message": ANSWER + ": {last_tool_result}", "deltas": 3},
]}]}


def bot_messages(stack: Stack, ts: str) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.thread(SUPPORT, ts) if m.get("bot_id") and m.get("ts") != ts]


def has_approve(message: dict[str, Any]) -> bool:
    return APPROVE_ACTION_ID in json.dumps(message.get("blocks") or [])


def card_state(message: dict[str, Any]) -> str:
    """What the tool call's card says of the call (its text is the task's title and status)."""
    return str(message.get("text") or "").rsplit(": ", 1)[-1]


def answers(stack: Stack, ts: str) -> list[str]:
    return [str(m.get("text") or "") for m in bot_messages(stack, ts) if ANSWER in str(m.get("text") or "")]


def session_of(stack: Stack, session_id: str) -> dict[str, Any]:
    return next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == session_id)


def confirmations(stack: Stack, session_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.agents.state.received_user_events(session_id) if e["type"] == "user.tool_confirmation"]


async def settled(stack: Stack, ts: str, count: int = 1) -> list[str]:
    """The answer(s) once every bot message of the thread finished streaming."""
    await eventually(lambda: len(answers(stack, ts)) >= count, timeout=20)
    await eventually(
        lambda: all(m.get("streaming_state") in (None, "completed") for m in bot_messages(stack, ts)), timeout=20
    )
    return answers(stack, ts)


def assert_same_card_and_one_answer(stack: Stack, ts: str, card_ts: str, session_id: str) -> None:
    [answer] = answers(stack, ts)
    assert answer.count(ANSWER) == 1 and "refunds: 14 days" in answer
    assert len(confirmations(stack, session_id)) == 1
    card = stack.slack.state.message(SUPPORT, card_ts)
    assert card is not None
    # The card that asked shows the call finished, and no other message shows the call.
    assert card_state(card) == "complete" and ":white_check_mark:" in json.dumps(card.get("blocks") or [])
    title = str(card.get("text") or "").rsplit(": ", 1)[0]
    others = [m for m in bot_messages(stack, ts) if m["ts"] != card_ts and title in json.dumps(m)]
    assert others == []
    assert f"Approved by <@{ALICE}>" in json.dumps(card.get("blocks") or [])


@pytest.fixture
def approving_stack(fresh_redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Both emulators, the shipped config with Alice an admin (admins may approve)."""
    text = (ROOT / "support-agent.yml").read_text()
    assert "\n  admins: []\n" in text
    config_path = tmp_path / "support-agent.yml"
    config_path.write_text(text.replace("\n  admins: []\n", f"\n  admins: [{ALICE}]\n", 1))
    with Stack(fresh_redis_url, data_dir=tmp_path, config_path=config_path) as stack:
        stack.agents.set_scenario(SCENARIO)
        yield stack


async def test_approve_after_the_worker_let_go_finishes_the_card_and_answers_once(approving_stack: Stack) -> None:
    stack = approving_stack
    app = stack.start_app()
    ts = await stack.slack.user_posts(SUPPORT, "<@UBOT> what is the refund policy?", user=BOB)
    card = await eventually(lambda: next((m for m in bot_messages(stack, ts) if has_approve(m)), None))
    ticket = await eventually(
        lambda: (t := app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, ts)))
        and t.state == TicketState.WAITING_APPROVAL and t
    )
    assert ticket.session_id
    redis = app.services.redis

    def let_go() -> bool:
        held = app.run_coroutine(redis.exists(f"sa:lease:{ticket.id}"))
        active = app.run_coroutine(redis.zscore(ACTIVE, ticket.id))
        return session_of(stack, ticket.session_id or "")["open_streams"] == 0 and not held and active is None

    # Waiting on the approval costs nothing: no stream, no lease, not among the active tickets.
    await eventually(let_go)
    assert session_of(stack, ticket.session_id)["status"] == "idle"

    await stack.slack.click(SUPPORT, card["ts"], APPROVE_ACTION_ID, user=ALICE)
    await settled(stack, ts)
    await eventually(lambda: "complete" == card_state(stack.slack.state.message(SUPPORT, card["ts"]) or {}))
    done = await eventually(
        lambda: (t := app.run_coroutine(app.services.store.get(ticket.id)))
        and t.state == TicketState.WAITING_REQUESTER and t
    )
    assert done.session_id == ticket.session_id
    # Answered, the ticket lets go again; the wake-up was consumed.
    await eventually(let_go)
    assert not app.run_coroutine(redis.exists(wake_key(ticket.id)))
    assert_same_card_and_one_answer(stack, ts, card["ts"], ticket.session_id)


class GatedLeases(LeaseManager):
    """The real lease manager, paused just before a follower gives its lease up after a turn."""

    def __init__(self, redis: Any, worker_id: str, ttl: float) -> None:
        super().__init__(redis, worker_id, ttl)
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()

    async def release(self, lease: Lease, done: bool, handoff: bool = False) -> bool:
        if done and not self.gate.is_set():
            self.reached.set()
            await self.gate.wait()
        return await super().release(lease, done, handoff)


@pytest.fixture
async def own_worker(approving_stack: Stack) -> AsyncIterator[tuple[Services, GatedLeases]]:
    """A worker in this test's event loop whose lease release the test holds back."""
    services = build_services(approving_stack.settings(), approving_stack.config)
    worker = make_worker(services)
    leases = GatedLeases(services.redis, services.worker_id, services.settings.lease_seconds)
    worker.leases = leases
    task = asyncio.create_task(worker.run())
    try:
        yield services, leases
    finally:
        leases.gate.set()
        worker.stop()
        await asyncio.wait_for(task, 30)
        await services.aclose()


async def test_approve_while_the_worker_lets_go_is_not_lost(
    approving_stack: Stack, own_worker: tuple[Services, GatedLeases]
) -> None:
    stack = approving_stack
    services, leases = own_worker
    stack.start_app(worker=False)
    ts = await stack.slack.user_posts(SUPPORT, "<@UBOT> refund please?", user=BOB)
    card = await eventually(lambda: next((m for m in bot_messages(stack, ts) if has_approve(m)), None))
    # The follower decided to let go (the session waits on a person) and still holds the lease.
    await asyncio.wait_for(leases.reached.wait(), 20)
    ticket = await services.store.by_thread(TEAM, SUPPORT, ts)
    assert ticket is not None and ticket.session_id
    assert await services.redis.exists(f"sa:lease:{ticket.id}")

    await stack.slack.click(SUPPORT, card["ts"], APPROVE_ACTION_ID, user=ALICE)
    await eventually(lambda: confirmations(stack, ticket.session_id or ""))
    # The job of the wake-up is taken and dropped (the ticket is still held); the mark stays.
    for _ in range(200):
        if await services.redis.xlen(STREAM) == 0:
            break
        await asyncio.sleep(0.05)
    assert await services.redis.xlen(STREAM) == 0
    assert await woken(services.redis, ticket.id)
    assert answers(stack, ts) == []

    leases.gate.set()  # the follower lets go now, finds the mark, and follows again
    await settled(stack, ts)
    await eventually(lambda: "complete" == card_state(stack.slack.state.message(SUPPORT, card["ts"]) or {}))
    await eventually(lambda: session_of(stack, ticket.session_id or "")["open_streams"] == 0)
    assert not await woken(services.redis, ticket.id)
    assert_same_card_and_one_answer(stack, ts, card["ts"], ticket.session_id)


async def test_a_lease_grant_consumes_the_wake_up(redis: Any) -> None:
    leases = LeaseManager(redis, "w1", 5.0)
    await wake(redis, "T-9", "approval")
    assert await woken(redis, "T-9")
    assert [f["ticket_id"] for _, f in await redis.xrange(STREAM)][-1:] == ["T-9"]
    lease = await leases.acquire("T-9")
    assert lease is not None and not await woken(redis, "T-9")
    # A wake-up while it is held stays for the holder to find when it lets go.
    await wake(redis, "T-9", "approval")
    assert await LeaseManager(redis, "w2", 5.0).acquire("T-9") is None
    assert await woken(redis, "T-9")
