"""`support-agent doctor` against the emulators: all good, and each kind of problem named."""

from __future__ import annotations

from pathlib import Path

import anthropic
import pytest
from pydantic import SecretStr

from app.config.model import load_config
from app.doctor import MANIFEST, diagnose
from app.provision import Provisioner
from app.sandbox.app_runner import free_port
from app.sandbox.stack import ANTHROPIC_KEY, Stack


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", "tok-internal-0123456789")
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "tok-customers-0123456789")


def deployed(stack: Stack, tmp_path: Path, base_url: str) -> tuple[Path, Path]:
    """The shipped config and manifest, pointed at `base_url` (as an operator would set them)."""
    config = tmp_path / "support-agent.yml"
    shipped = stack.config_path.read_text(encoding="utf-8")
    config.write_text(f"public_base_url: {base_url}\n{shipped}", encoding="utf-8")
    manifest = tmp_path / "manifest.yml"
    manifest.write_text(
        MANIFEST.read_text(encoding="utf-8").replace("https://support.example.com", base_url), encoding="utf-8"
    )
    return config, manifest


async def provisioned(stack: Stack, config: Path) -> None:
    client = anthropic.AsyncAnthropic(api_key=ANTHROPIC_KEY, base_url=stack.agents.url, max_retries=0)
    try:
        await Provisioner(client, None, load_config(config)).run()
    finally:
        await client.close()


async def test_all_good_against_the_emulators(stack: Stack, tokens: None, tmp_path: Path) -> None:
    app = stack.start_app(worker=False)  # serves /slack/events and our MCP servers
    config, manifest = deployed(stack, tmp_path, app.url)
    await provisioned(stack, config)
    report = await diagnose(stack.settings(config_path=config), manifest=manifest)
    assert report.problems == []
    ok = "\n".join(report.ok)
    assert "Slack: signed in" in ok and f"Slack: this service answers at {app.url}" in ok
    assert "Managed Agents:" in ok and "as configured" in ok
    assert f"MCP: internal/knowledge_base answers at {app.url}/mcp/knowledge_base" in ok


async def test_what_is_not_deployed_yet_is_named(stack: Stack, tokens: None, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    config, _ = deployed(stack, tmp_path, dead)
    report = await diagnose(stack.settings(config_path=config), manifest=MANIFEST)  # not provisioned, not served
    text = "\n".join(report.problems)
    assert f"manifest.yml sends event subscriptions to https://support.example.com/slack/events; " \
           f"this service takes them at {dead}/slack/events" in text
    assert f"Slack: {dead} is not reachable" in text
    assert "would create; run `support-agent provision`" in text
    assert f"MCP: internal/knowledge_base does not answer at {dead}/mcp/knowledge_base" in text
    unset = await diagnose(stack.settings())  # the shipped config: no public_base_url yet
    assert any("`public_base_url` is not set" in line for line in unset.problems)


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
