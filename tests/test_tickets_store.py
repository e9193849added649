"""The ticket store: one thread is one ticket, numbers per workspace, dedupe, inbox, leases."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from app.jobs.lease import LeaseManager
from app.jobs.queue import JobQueue
from app.sessions.cursor import Cursor, StaleLease
from app.tickets.inbox_signal import InboxSignals
from app.tickets.model import InboxMessage, TicketState
from app.tickets.store import TicketStore


async def open_ticket(store: TicketStore, thread_ts: str = "100.1", team: str = "T1"):  # type: ignore[no-untyped-def]
    return await store.open_ticket(
        team_id=team, channel_id="C1", thread_ts=thread_ts, requester_id="U1", environment="internal", title="help"
    )


async def test_one_thread_is_one_ticket_even_when_racing(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    results = await asyncio.gather(*(open_ticket(store) for _ in range(10)))
    ids = {ticket.id for ticket, _ in results}
    assert len(ids) == 1
    assert sum(created for _, created in results) == 1


async def test_ticket_numbers_count_per_workspace(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    a, _ = await open_ticket(store, "1.1", "T1")
    b, _ = await open_ticket(store, "1.2", "T1")
    c, _ = await open_ticket(store, "1.1", "T2")
    assert (a.number, b.number, c.number) == (1, 2, 1)
    assert a.ref == "#1"
    assert (await store.by_number("T1", 2)).id == b.id  # type: ignore[union-attr]


async def test_mapping_survives_a_new_connection(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    ticket, _ = await open_ticket(store)
    ticket.session_id = "sesn_1"
    await store.save(ticket)
    fresh = TicketStore(redis)
    assert (await fresh.by_thread("T1", "C1", "100.1")).session_id == "sesn_1"  # type: ignore[union-attr]
    assert (await fresh.by_session("sesn_1")).id == ticket.id  # type: ignore[union-attr]


async def test_transitions_are_recorded_with_cause(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    ticket, _ = await open_ticket(store)
    await store.transition(ticket, TicketState.WORKING, "agent running")
    await store.transition(ticket, TicketState.WORKING, "again")  # no-op, not recorded
    await store.transition(ticket, TicketState.RESOLVED, "resolved by staff", actor="U9")
    history = await store.transitions(ticket.id)
    assert [(t.from_state, t.to_state, t.cause) for t in history] == [
        (None, TicketState.OPEN, "opened"),
        (TicketState.OPEN, TicketState.WORKING, "agent running"),
        (TicketState.WORKING, TicketState.RESOLVED, "resolved by staff"),
    ]
    assert history[-1].actor == "U9"
    assert (await store.get(ticket.id)).resolved_at is not None  # type: ignore[union-attr]


async def test_event_and_message_dedupe(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    assert await store.claim_event("Ev1")
    assert not await store.claim_event("Ev1")
    assert await store.claim_message("C1", "1.1")
    assert not await store.claim_message("C1", "1.1")


async def test_inbox_keeps_order_and_marks_sent(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    ticket, _ = await open_ticket(store)
    for i in range(3):
        await store.push_message(ticket.id, InboxMessage(ts=f"1.{i}", user_id="U1", text=f"m{i}"))
    pending = await store.pending_messages(ticket.id)
    assert [m.text for m in pending] == ["m0", "m1", "m2"]
    await store.mark_sent(ticket.id, pending[0])
    assert [m.text for m in await store.pending_messages(ticket.id)] == ["m1", "m2"]
    assert await store.was_sent(ticket.id, "1.0")


async def test_lease_is_exclusive_and_fenced(redis: aioredis.Redis) -> None:
    a = LeaseManager(redis, "worker-a", ttl_seconds=0.3)
    b = LeaseManager(redis, "worker-b", ttl_seconds=0.3)
    lease_a = await a.acquire("T1-1")
    assert lease_a is not None
    assert await b.acquire("T1-1") is None
    assert await a.renew(lease_a)
    await asyncio.sleep(0.4)  # worker a stops renewing: it "died"
    assert await b.orphans() == ["T1-1"]
    lease_b = await b.acquire("T1-1")
    assert lease_b is not None and lease_b.fence > lease_a.fence
    assert not await a.renew(lease_a)
    stale = Cursor(redis, "T1-1", "sesn", lease_a.fence)
    try:
        await stale.mark("sevt_1", "2026-01-01T00:00:00+00:00")
        raise AssertionError("a stale lease holder moved the cursor")
    except StaleLease:
        pass
    fresh = Cursor(redis, "T1-1", "sesn", lease_b.fence)
    await fresh.mark("sevt_1", "2026-01-01T00:00:00+00:00")
    assert await fresh.seen("sevt_1")
    assert await fresh.processed_at() == "2026-01-01T00:00:00+00:00"


async def test_job_left_by_a_dead_consumer_is_reclaimed(redis: aioredis.Redis) -> None:
    dead = JobQueue(redis, "dead", reclaim_after_ms=50)
    live = JobQueue(redis, "live", reclaim_after_ms=50)
    await dead.ensure_group()
    await dead.enqueue("T1-1", "message")
    taken = await dead.take(block_ms=10)
    assert [j.ticket_id for j in taken] == ["T1-1"]
    assert await live.take(block_ms=10) == []
    await asyncio.sleep(0.1)
    reclaimed = await live.reclaim()
    assert [j.ticket_id for j in reclaimed] == ["T1-1"]


async def test_active_tickets_are_indexed_however_old(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    first, _ = await open_ticket(store, thread_ts="1.0")
    second, _ = await open_ticket(store, thread_ts="2.0")
    assert [t.id for t in await store.active()] == [second.id, first.id]
    await store.transition(first, TicketState.RESOLVED, "resolved by staff")
    assert [t.id for t in await store.active()] == [second.id] and await store.count_active() == 1
    await store.transition(first, TicketState.OPEN, "reopened")
    assert await store.count_active() == 2


async def test_a_pushed_message_wakes_the_follower_of_its_ticket_only(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    signals = InboxSignals(redis)
    signals.start()
    try:
        await asyncio.wait_for(signals.subscribed.wait(), 10)
        mine, other = signals.waiter("T1-1"), signals.waiter("T1-2")
        await store.push_message("T1-1", InboxMessage(ts="1.0", user_id="U1", text="one more thing"))
        await asyncio.wait_for(mine.wait(), 10)
        assert not other.is_set()
        assert [m.text for m in await store.pending_messages("T1-1")] == ["one more thing"]
        # A released ticket is no longer woken; a new follower gets a fresh event.
        signals.release("T1-1", mine)
        assert signals.waiter("T1-1") is not mine
    finally:
        await signals.aclose()


async def test_a_stale_copy_never_undoes_a_resolve(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    ticket, _ = await open_ticket(store)
    ticket = await store.transition(ticket, TicketState.WORKING, "turn started")
    follower_copy = ticket.model_copy(deep=True)  # read when the turn started
    staff_copy = await store.get(ticket.id)
    assert staff_copy is not None
    await store.transition(staff_copy, TicketState.RESOLVED, "resolved by U2", actor="U2")

    # The follower finishes its turn from its old copy: neither its move nor a save undoes the close.
    moved = await store.transition(follower_copy, TicketState.WAITING_REQUESTER, "agent answered")
    assert moved.state == TicketState.RESOLVED and follower_copy.state == TicketState.RESOLVED
    stale = ticket.model_copy(deep=True)
    stale.title = "renamed by the agent"
    await store.save(stale)
    stored = await store.get(ticket.id)
    assert stored is not None and stored.state == TicketState.RESOLVED and stored.title == "renamed by the agent"
    assert stored.resolved_at is not None
    assert [t.to_state for t in await store.transitions(ticket.id)] == [
        TicketState.OPEN, TicketState.WORKING, TicketState.RESOLVED]
    assert ticket.id not in [t.id for t in await store.active()] and await store.count_active() == 0

    # A move from a copy that knows the ticket is closed (Reopen) goes through.
    reopened = await store.transition(stored, TicketState.OPEN, "reopened by U2", actor="U2")
    assert reopened.state == TicketState.OPEN and (await store.get(ticket.id)).state == TicketState.OPEN  # type: ignore[union-attr]


async def test_resolve_racing_a_finishing_turn_always_ends_resolved(redis: aioredis.Redis) -> None:
    # Many interleavings of "a person resolves" and "the follower moves its old copy": in every one the
    # ticket ends resolved, and each move that happened is recorded once.
    store = TicketStore(redis)
    for i in range(40):
        ticket, _ = await open_ticket(store, f"{200 + i}.1")
        ticket = await store.transition(ticket, TicketState.WORKING, "turn started")
        follower_copy = ticket.model_copy(deep=True)

        async def resolve(t_id: str = ticket.id, delay: float = (i % 5) * 0.0005) -> None:
            await asyncio.sleep(delay)
            fresh = await store.get(t_id)
            assert fresh is not None
            await store.transition(fresh, TicketState.RESOLVED, "resolved by U2", actor="U2")

        async def finish(copy=follower_copy, delay: float = (i % 3) * 0.0005) -> None:  # type: ignore[no-untyped-def]
            await asyncio.sleep(delay)
            await store.transition(copy, TicketState.WAITING_REQUESTER, "agent answered")

        await asyncio.gather(resolve(), finish())
        stored = await store.get(ticket.id)
        assert stored is not None and stored.state == TicketState.RESOLVED, i
        states = [t.to_state for t in await store.transitions(ticket.id)]
        assert states[-1] == TicketState.RESOLVED and states.count(TicketState.RESOLVED) == 1
