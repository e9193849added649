"""`support-agent retention run [--dry-run]`: sessions of resolved tickets past their
environment's retention are deleted in the Managed Agents emulator; nothing else is.

Tickets live in a real Redis, sessions in the emulator (real anthropic client over HTTP); the
CLI runs in-process through `app.cli.main` with its settings in the environment.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cli import main
from app.config.model import load_config
from app.cost.ledger import CostLedger
from app.redis_conn import EmbeddedRedis, connect
from app.retention import is_expired
from app.sandbox.agents import AgentsEmulator
from app.sandbox.app_runner import ROOT
from app.tickets.model import Ticket, TicketState
from app.tickets.store import TicketStore

API_KEY = "sk-ant-retention-test-key"
DAY = 86400.0


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """The shipped config (internal: 90 days, customers: 30) plus an environment with no retention."""
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    keep = json.loads(json.dumps(data["environments"]["internal"]))
    keep.pop("retention_days")
    keep["channels"] = {"names": ["support-legal"]}
    data["environments"]["legal_hold"] = keep
    path = tmp_path / "support-agent.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def world(redis_server: EmbeddedRedis, config_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    emulator = AgentsEmulator(api_key=API_KEY).start()
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.url)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(config_path))
    try:
        yield {"emulator": emulator, "redis_url": redis_server.url, "config": load_config(config_path)}
    finally:
        emulator.stop()


# name: (environment, state, resolved days ago, has session, expected to expire)
CASES: dict[str, tuple[str, TicketState, float | None, bool, bool]] = {
    "internal_old": ("internal", TicketState.RESOLVED, 91, True, True),
    "internal_recent": ("internal", TicketState.RESOLVED, 89, True, False),
    "customers_old": ("customers", TicketState.RESOLVED, 31, True, True),
    "customers_reopened": ("customers", TicketState.WORKING, 120, True, False),
    "customers_failed": ("customers", TicketState.FAILED, 120, True, False),
    "legal_hold_old": ("legal_hold", TicketState.RESOLVED, 400, True, False),
    "no_session": ("internal", TicketState.RESOLVED, 200, False, False),
}


async def make_tickets(emulator: AgentsEmulator, redis_url: str) -> dict[str, Ticket]:
    client = emulator.client(max_retries=0)
    redis = connect(redis_url)
    try:
        agent = await client.beta.agents.create(name="support-agent", model="claude-sonnet-4-6")
        env = await client.beta.environments.create(name="support-internal")
        store = TicketStore(redis)
        now = time.time()
        out: dict[str, Ticket] = {}
        for n, (name, (environment, state, days, has_session, _)) in enumerate(CASES.items()):
            ticket, _ = await store.open_ticket(
                team_id="T0001", channel_id="C0001", thread_ts=f"1700000000.{n:06d}", requester_id="U0001",
                environment=environment, title=f"ticket {name}",
            )
            if has_session:
                session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, title=name)
                ticket.session_id = session.id
            ticket.state = state
            ticket.created_at = now - (days or 0) * DAY - 3600
            ticket.resolved_at = now - days * DAY if days is not None else None
            # Seeded as it was long ago: written whole (a save keeps the stored state, which only
            # a transition moves), then saved so the indexes follow the state.
            await redis.set(f"sa:ticket:{ticket.id}", ticket.model_dump_json())
            await store.save(ticket)
            out[name] = ticket
        # Costs recorded for a ticket whose session will go: they must stay.
        ledger = CostLedger(redis)
        await ledger.record_snapshot(
            out["internal_old"], model="claude-sonnet-4-6", source_event_id="sevt_usage",
            usage_snapshot={"input_tokens": 1000, "output_tokens": 200, "active_seconds": 30},
        )
        return out
    finally:
        await redis.aclose()
        await client.close()


async def read(redis_url: str, ticket_id: str) -> tuple[Ticket | None, Any]:
    redis = connect(redis_url)
    try:
        return await TicketStore(redis).get(ticket_id), await CostLedger(redis).ticket_total(ticket_id)
    finally:
        await redis.aclose()


def session_ids(emulator: AgentsEmulator) -> set[str]:
    return {s["id"] for s in emulator.state.sessions_snapshot()}


def test_dry_run_lists_exactly_the_expired_and_the_run_deletes_only_those(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = world["emulator"]
    tickets = asyncio.run(make_tickets(emulator, world["redis_url"]))
    expired = {tickets[name].session_id for name, case in CASES.items() if case[4]}
    kept = {tickets[name].session_id for name, case in CASES.items() if case[3] and not case[4]}
    assert len(expired) == 2 and len(kept) == 4
    before = session_ids(emulator)

    # Dry run: exactly the expired sessions, nothing deleted, no API key needed.
    code = main(["retention", "run", "--dry-run", "--format", "json"])
    out, _err = capsys.readouterr()
    assert code == 0
    listed = json.loads(out)
    assert {e["session_id"] for e in listed} == expired
    assert {e["ticket_id"] for e in listed} == {tickets["internal_old"].id, tickets["customers_old"].id}
    assert {(e["environment"], e["retention_days"]) for e in listed} == {("internal", 90), ("customers", 30)}
    code = main(["retention", "run", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0 and len(out.strip().splitlines()) == 2 and all(str(s) in out for s in expired)
    assert "2 sessions past retention (dry run: nothing deleted)" in err
    assert session_ids(emulator) == before
    assert emulator.state.deleted_sessions == set()

    # The real run deletes those and only those, and marks their tickets.
    code = main(["retention", "run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "deleted 2 sessions; 0 failed" in err
    assert emulator.state.deleted_sessions == expired
    assert session_ids(emulator) == before - expired
    assert kept <= session_ids(emulator)
    for name, case in CASES.items():
        ticket, totals = asyncio.run(read(world["redis_url"], tickets[name].id))
        assert ticket is not None and ticket.title == f"ticket {name}" and ticket.state == case[1]
        assert (ticket.session_deleted_at is not None) == case[4], name
        assert ticket.session_id == tickets[name].session_id  # the id stays for the record
    _ticket, totals = asyncio.run(read(world["redis_url"], tickets["internal_old"].id))
    assert totals.tickets == 1 and totals.total_usd > 0 and totals.input_tokens == 1000

    # Nothing left to do; the trace still shows the ticket and its cost.
    assert main(["retention", "run", "--dry-run", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["trace", tickets["internal_old"].id, "--format", "json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["ticket"]["session_deleted_at"] is not None and trace["console_url"] is None
    assert any("deleted by retention" in w for w in trace["warnings"])
    assert [e["kind"] for e in trace["entries"]] == ["ticket", "cost"]


def test_a_session_already_gone_is_marked_and_an_api_failure_is_reported(
    world: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    emulator = world["emulator"]
    tickets = asyncio.run(make_tickets(emulator, world["redis_url"]))
    gone = tickets["internal_old"].session_id or ""
    asyncio.run(emulator.client(max_retries=0).beta.sessions.delete(gone))
    emulator.fail_next("DELETE", f"/v1/sessions/{tickets['customers_old'].session_id}", status=500, count=10)
    code = main(["retention", "run"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "already_gone" in out and "failed" in out and "deleted 1 session; 1 failed" in err
    ok, _ = asyncio.run(read(world["redis_url"], tickets["internal_old"].id))
    failed, _ = asyncio.run(read(world["redis_url"], tickets["customers_old"].id))
    assert ok is not None and ok.session_deleted_at is not None
    assert failed is not None and failed.session_deleted_at is None  # tried again next run


def test_is_expired_rules(world: dict[str, Any]) -> None:
    config = world["config"]
    now = time.time()
    base = Ticket(id="T1-1", number=1, team_id="T1", channel_id="C1", thread_ts="1.1", requester_id="U1",
                  environment="customers", state=TicketState.RESOLVED, session_id="sesn_1",
                  resolved_at=now - 30 * DAY - 1)
    assert is_expired(base, config, now) is not None
    assert is_expired(base.model_copy(update={"resolved_at": now - 30 * DAY + 60}), config, now) is None
    assert is_expired(base.model_copy(update={"environment": "gone"}), config, now) is None
    assert is_expired(base.model_copy(update={"session_deleted_at": now}), config, now) is None
    assert is_expired(base.model_copy(update={"resolved_at": None}), config, now) is None
