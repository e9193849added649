"""Issue 16, finding 2: a shared or external channel is served only by an environment marked for
external parties, whatever its name or id; the same after `channel_shared`, and for Slack
Connect DMs; otherwise the thread says the channel is not configured."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import redis.asyncio as aioredis
import yaml

from app.config.model import AppConfig, parse_config
from app.sandbox.stack import Stack
from app.slack.channel_events import SHARED_NOTICE, channel_became_shared
from app.slack.channels import is_external_channel, resolve_environment
from app.tickets.model import TicketState
from app.tickets.store import TicketStore
from tests.conftest import ROOT
from tests.support import eventually


def config(customers_external: bool = True, internal_ids: tuple[str, ...] = ()) -> AppConfig:
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    data["environments"]["customers"]["channels"]["shared"] = customers_external
    data["environments"]["internal"]["channels"]["ids"] = list(internal_ids)
    return parse_config(yaml.safe_dump(data))


class FakeSlack:
    def __init__(self, channels: dict[str, dict[str, Any]], users: dict[str, dict[str, Any]] | None = None) -> None:
        self.channels = channels
        self.users = users or {}
        self.posted: list[dict[str, Any]] = []

    async def conversations_info(self, channel: str) -> dict[str, Any]:
        return {"ok": True, "channel": self.channels[channel]}

    async def users_info(self, user: str) -> dict[str, Any]:
        return {"ok": True, "user": self.users[user]}

    async def chat_postMessage(self, **kwargs: Any) -> dict[str, Any]:
        self.posted.append(kwargs)
        return {"ok": True, "ts": "1.1"}


def test_shared_channels_named_like_internal_ones_never_get_internal() -> None:
    cfg = config()
    for name in ("support", "support-internal", "help", "random"):
        assert cfg.environment_for_channel("CX", name, is_shared=True) == "customers", name
    assert cfg.environment_for_channel("CX", "support", is_shared=False) == "internal"
    listed = config(internal_ids=("CLISTED",))
    assert listed.environment_for_channel("CLISTED", "support", is_shared=True) == "customers"
    # No environment for external parties: a shared channel is served by nobody.
    closed = config(customers_external=False, internal_ids=("CLISTED",))
    for name in ("support", "support-internal", "help", None):
        assert closed.environment_for_channel("CLISTED", name, is_shared=True) is None


def test_sharing_flags_fail_closed() -> None:
    assert is_external_channel({"is_ext_shared": True})
    assert is_external_channel({"is_pending_ext_shared": True})
    assert is_external_channel({"is_shared": True})
    assert not is_external_channel({"is_shared": True, "is_org_shared": True})
    assert not is_external_channel({"is_channel": True})


async def test_resolve_with_slack_sharing_status(redis: aioredis.Redis) -> None:
    slack = FakeSlack({
        "C1": {"id": "C1", "name": "support", "is_ext_shared": True},
        "C2": {"id": "C2", "name": "support-internal", "is_shared": True},
        "C3": {"id": "C3", "name": "support"},
        "D1": {"id": "D1", "is_im": True, "user": "UEXT"},
        "D2": {"id": "D2", "is_im": True, "user": "UINT"},
    }, users={"UEXT": {"id": "UEXT", "team_id": "TOTHER"}, "UINT": {"id": "UINT", "team_id": "T0001"}})
    closed = config(customers_external=False, internal_ids=("C1",))
    got = {c: await resolve_environment(slack, redis, closed, c, "T0001") for c in ("C1", "C2", "C3", "D1", "D2")}
    assert got == {"C1": None, "C2": None, "C3": "internal", "D1": None, "D2": "internal"}
    open_cfg = config(internal_ids=("C1",))
    await redis.flushall()
    got = {c: await resolve_environment(slack, redis, open_cfg, c, "T0001") for c in ("C1", "C2", "D1")}
    assert got == {"C1": "customers", "C2": "customers", "D1": "customers"}


async def test_channel_becoming_shared_ends_internal_tickets(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    internal, _ = await store.open_ticket(team_id="T0001", channel_id="C9", thread_ts="1.0", requester_id="U1",
                                          environment="internal", title="q")
    external, _ = await store.open_ticket(team_id="T0001", channel_id="C9", thread_ts="2.0", requester_id="U1",
                                          environment="customers", title="q2")
    await redis.set("sa:channelinfo:C9", '{"name": "support", "is_ext_shared": false}')
    slack = FakeSlack({})
    services = SimpleNamespace(redis=redis, store=store, config=config(), slack=slack, anthropic=None)
    assert await channel_became_shared(services, "T0001", "C9") == 1  # type: ignore[arg-type]
    assert (await store.get(internal.id)).state == TicketState.FAILED  # type: ignore[union-attr]
    assert (await store.get(external.id)).state == TicketState.OPEN  # type: ignore[union-attr]
    assert await redis.get("sa:channelinfo:C9") is None  # its sharing is asked again
    assert slack.posted == [{"channel": "C9", "thread_ts": "1.0", "text": SHARED_NOTICE}]


async def test_a_shared_channel_with_no_external_environment_is_told_so(fresh_redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "support-agent.yml"
    path.write_text(yaml.safe_dump(config(customers_external=False).model_dump(mode="json", exclude_none=True)))
    with Stack(fresh_redis_url, config_path=path, data_dir=tmp_path) as stack:
        stack.slack.state.add_channel("C0SHARED", "support", members=["U0001"], ext_shared=True)
        app = stack.start_app()
        root_ts = await stack.slack.user_posts("C0SHARED", "please help")
        notice = await eventually(lambda: [m for m in stack.slack.state.thread("C0SHARED", root_ts)
                                           if m.get("bot_id") and "not set up" in m.get("text", "")])
        assert len(notice) == 1
        # The undelivered message stays queued, which once made the worker pick the ticket
        # straight back up and post the notice again, and again.
        await asyncio.sleep(1.5)
        assert len([m for m in stack.slack.state.thread("C0SHARED", root_ts) if m.get("bot_id")]) == 1
        tickets = app.run_coroutine(app.services.store.channel_tickets("T0001", "C0SHARED"))
        assert [t.state for t in tickets] == [TicketState.FAILED]
        assert stack.agents.state.sessions_snapshot() == []
