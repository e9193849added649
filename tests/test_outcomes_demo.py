"""The sandbox's demo agent shows one outcome check (issue 18): in #help (the customer-facing
`customers` environment, outcomes on in the demo config) the answer waits for the grader's
verdict; in #support (no outcome defined) the same script grades nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT
from app.sandbox.page.demo import HELP_CHANNEL, demo_config, demo_scenario, demo_workspace
from app.sandbox.stack import Stack
from tests.support import eventually

HELP = HELP_CHANNEL[0]
SUPPORT = "C0001"


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    path = tmp_path / "support-agent.yml"
    path.write_text(demo_config((ROOT / "support-agent.yml").read_text()))
    with Stack(redis_server.url, data_dir=tmp_path, config_path=path) as s:
        demo_workspace(s.slack.state)
        s.agents.set_scenario(demo_scenario())
        yield s


def replies(stack: Stack, channel: str, ts: str) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.thread(channel, ts) if m.get("bot_id") and m["ts"] != ts]


def checks(stack: Stack, channel: str, ts: str) -> list[dict[str, Any]]:
    return [t for m in replies(stack, channel, ts) for t in ((m.get("stream") or {}).get("tasks") or {}).values()
            if str(t.get("id", "")).startswith("outcome-")]


def done(stack: Stack, channel: str, ts: str) -> bool:
    shown = replies(stack, channel, ts)
    return bool(shown) and all((m.get("stream") or {}).get("state") in (None, "stopped") for m in shown)


async def test_the_demo_agent_shows_one_check_in_help_and_none_in_support(stack: Stack) -> None:
    stack.start_app()
    ts = await stack.slack.user_posts(HELP, "how do refunds work?", user="U0002")
    await eventually(lambda: done(stack, HELP, ts) and "30 days" in str(replies(stack, HELP, ts)), timeout=40)
    [check] = checks(stack, HELP, ts)
    assert check["title"] == "Checking the answer against the customer answer rubric"
    assert (check["status"], check.get("output")) == ("complete", "satisfied")
    # The answer came only after the check: no part of it was streamed before the verdict.
    sent = [c for c in stack.slack.state.calls() if c.params.get("channel") == HELP and c.ok]
    first_text = next(i for i, c in enumerate(sent) if "30 days" in str(c.params))
    first_check = next(i for i, c in enumerate(sent) if "satisfied" in str(c.params))
    assert first_check <= first_text

    other = await stack.slack.user_posts(SUPPORT, "how do refunds work?", user="U0002")
    await eventually(lambda: done(stack, SUPPORT, other) and "30 days" in str(replies(stack, SUPPORT, other)),
                     timeout=40)
    assert checks(stack, SUPPORT, other) == []
