"""`support-agent doctor` against the emulators: all good, and each kind of problem named."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from app.doctor import diagnose
from app.sandbox.app_runner import free_port
from app.sandbox.stack import Stack


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", "tok-internal")
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "tok-customers")


async def test_all_good_against_the_emulators(stack: Stack, tokens: None) -> None:
    report = await diagnose(stack.settings())
    assert report.problems == []
    assert any(line.startswith("Slack: signed in") for line in report.ok)


async def test_each_kind_of_problem_is_named(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MCP_TOKEN_INTERNAL", raising=False)
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "tok")
    report = await diagnose(stack.settings(
        slack_bot_token=SecretStr("xoxb-wrong"),
        anthropic_api_key=SecretStr("sk-ant-wrong"),
        redis_url=SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
    ))
    text = "\n".join(report.problems)
    assert "Redis: cannot reach REDIS_URL" in text
    assert "Slack: auth.test failed (invalid_auth)" in text
    assert "Anthropic: ANTHROPIC_API_KEY is rejected" in text
    assert "MCP_TOKEN_INTERNAL is not set" in text
    bad = tmp_path / "bad.yml"
    bad.write_text("agent: [\n", encoding="utf-8")
    missing = await diagnose(stack.settings(config_path=bad, slack_bot_token=None, anthropic_api_key=None))
    text = "\n".join(missing.problems)
    assert f"Config: {bad}" in text and "SLACK_BOT_TOKEN is not set" in text and "ANTHROPIC_API_KEY is not set" in text
