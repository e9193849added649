"""Issue 17, finding 2: usage is per session, and a ticket's cost is the sum of its sessions'.
After a Reopen the new session's usage starts from zero; its first turn is costed in full."""

from __future__ import annotations

from datetime import UTC, datetime

import redis.asyncio as aioredis

from app.cost.ledger import CostLedger
from app.cost.model import Usage, compute_cost
from app.tickets.model import Ticket

SONNET = "claude-sonnet-4-6"
AT = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)


def ticket(session_id: str) -> Ticket:
    return Ticket(id="T1-1", number=1, team_id="T1", channel_id="C1", thread_ts="1.0", requester_id="U1",
                  environment="internal", title="q", session_id=session_id)


async def test_the_first_turn_after_a_reopen_is_costed_and_the_ticket_sums_its_sessions(
    redis: aioredis.Redis,
) -> None:
    ledger = CostLedger(redis)
    first = {"active_seconds": 600, "input_tokens": 20_000, "output_tokens": 4_000}
    await ledger.record_snapshot(ticket("sesn_a"), model=SONNET, usage_snapshot=first, source_event_id="a1", at=AT)
    # Reopen: a new session whose cumulative usage (smaller than the old total) starts at zero.
    second = {"active_seconds": 120, "input_tokens": 5_000, "output_tokens": 1_000}
    turn = await ledger.record_snapshot(ticket("sesn_b"), model=SONNET, usage_snapshot=second,
                                        source_event_id="b1", at=AT)
    assert turn is not None, "the re-answer's turn was not costed"
    assert turn.delta == Usage.from_sdk(second)
    total = await ledger.ticket_total("T1-1")
    assert total.turns == 2 and total.input_tokens == 25_000
    expected = sum(compute_cost(Usage.from_sdk(u), SONNET).total_usd for u in (first, second))
    assert round(total.total_usd, 8) == round(expected, 8)
    # The new session's next snapshot is a delta of its own, not of the old session's.
    grown = {"active_seconds": 180, "input_tokens": 7_000, "output_tokens": 1_500}
    more = await ledger.record_snapshot(ticket("sesn_b"), model=SONNET, usage_snapshot=grown,
                                        source_event_id="b2", at=AT)
    assert more is not None and more.delta.input_tokens == 2_000
    assert (await ledger.ticket_total("T1-1")).turns == 3
