"""Issue 19: the sandbox's scripted demo shows a remembered fact: told to remember something in
#help (the demo customer's channel), a later ticket there reads it back; in #support the internal
environment has only its read-only product store, and the demo says the write was refused."""

from __future__ import annotations

import json
from pathlib import Path

from app.config.model import parse_config
from app.sandbox.page.demo import HELP_CHANNEL, demo_config, demo_scenario, demo_workspace
from app.sandbox.stack import Stack
from tests.conftest import ROOT
from tests.support import eventually

HELP = HELP_CHANNEL[0]


def bot_texts(stack: Stack, channel: str, ts: str) -> str:
    return json.dumps([m.get("text", "") for m in stack.slack.state.thread(channel, ts) if m.get("bot_id")])


async def test_the_demo_remembers_a_customer_fact(fresh_redis_url: str, tmp_path: Path) -> None:
    text = demo_config((ROOT / "support-agent.yml").read_text())
    config = parse_config(text)
    memory = config.environments["customers"].memory
    assert memory is not None and memory.enabled and memory.customers is not None
    assert config.customers["demo-customer"].channels == [HELP]
    path = tmp_path / "support-agent.yml"
    path.write_text(text)
    with Stack(fresh_redis_url, config_path=path, data_dir=tmp_path) as stack:
        demo_workspace(stack.slack.state)
        stack.agents.set_scenario(demo_scenario())
        stack.start_app()
        taught = await stack.slack.user_posts(HELP, "remember: we sign in with Okta SSO")
        await eventually(lambda: "has been written" in bot_texts(stack, HELP, taught), timeout=30)
        asked = await stack.slack.user_posts(HELP, "what do you remember about us?")
        await eventually(lambda: "we sign in with Okta SSO" in bot_texts(stack, HELP, asked), timeout=30)
        refused = await stack.slack.user_posts("C0001", "remember: the office wifi is slow")
        await eventually(lambda: "read-only file system" in bot_texts(stack, "C0001", refused), timeout=30)
