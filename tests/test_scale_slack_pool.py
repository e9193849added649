"""Issue 14 item 1: one connection pool for Slack, owned by the runtime; Bolt authorizes once.

A real HTTP server (aiohttp) stands in for Slack where connections are counted: it records the
peer port of every request, so "one TCP connection" is what the server saw, not what the client
says. Bolt's authorization is checked end to end against the Slack emulator.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from app.config.settings import Settings
from app.runtime import SlackPool, make_slack_client
from app.sandbox.stack import Stack
from tests.support import eventually
from tests.test_e2e_ticket import SUPPORT


class FakeSlack:
    def __init__(self) -> None:
        self.peers: list[int] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else -1)
        await asyncio.sleep(0.01)
        return web.json_response({"ok": True, "user_id": "UBOT", "bot_id": "B1", "team_id": "T1"})

    def open_connections(self) -> int:
        assert self.runner is not None and self.runner.server is not None
        return len(self.runner.server.connections)


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack()
    app = web.Application()
    app.router.add_post("/api/{method}", fake.handle)
    fake.runner = web.AppRunner(app)
    await fake.runner.setup()
    site = web.TCPSite(fake.runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.url = f"http://127.0.0.1:{port}/api/"
    yield fake
    await fake.runner.cleanup()


def _settings(url: str) -> Settings:
    return Settings(_env_file=None, slack_bot_token=SecretStr("xoxb-pool-test"), slack_api_url=url)  # type: ignore[call-arg]


async def test_slack_calls_share_one_connection_and_shutdown_closes_it(fake_slack: FakeSlack) -> None:
    pool = SlackPool()
    client = make_slack_client(_settings(fake_slack.url), pool)
    for i in range(20):
        await client.chat_postMessage(channel="C1", text=f"call {i}")
    assert len(fake_slack.peers) == 20
    assert len(set(fake_slack.peers)) == 1  # one TCP connection for every call
    # Copies (Bolt's per-request clients, lazy listeners' deep copies) use the same pool.
    twin = copy.deepcopy(client)
    assert twin.session is client.session and twin.pool is pool
    await twin.auth_test()
    assert len(set(fake_slack.peers)) == 1
    assert pool.opened == 1
    assert fake_slack.open_connections() == 1
    session = client.session
    await pool.aclose()
    assert session is not None and session.closed
    await eventually(lambda: fake_slack.open_connections() == 0, timeout=5)


async def test_concurrent_calls_reuse_the_pool_connections(fake_slack: FakeSlack) -> None:
    pool = SlackPool()
    client = make_slack_client(_settings(fake_slack.url), pool)
    for _ in range(3):
        await asyncio.gather(*(client.auth_test() for _ in range(10)))
    assert len(fake_slack.peers) == 30
    assert len(set(fake_slack.peers)) <= 10  # the second and third rounds open nothing new
    await pool.aclose()


async def test_bolt_authorizes_once_under_concurrent_first_requests(stack: Stack) -> None:
    stack.start_app(worker=False)
    sender = stack.slack.events

    async def mention(i: int) -> Any:
        ts = f"{int(time.time())}.{i:06d}"
        event = {"type": "app_mention", "user": "U0001", "text": f"<@UBOT> question {i}", "ts": ts,
                 "channel": SUPPORT, "event_ts": ts, "team": "T0001"}
        return await sender.send_event(event)

    deliveries = await asyncio.gather(*(mention(i) for i in range(20)))
    assert [d.status for d in deliveries] == [200] * 20
    assert len(stack.slack.state.calls("auth.test")) == 1
    # Later requests use the same answer.
    assert (await mention(99)).status == 200
    assert len(stack.slack.state.calls("auth.test")) == 1
