"""Specialists as config: `check-config` errors with lines, `provision` writes them idempotently.

`support-agent provision` runs in-process (`app.cli.main`) against the Managed Agents emulator
over HTTP; the emulator stores `multiagent` in the SDK's resolved shape, so a second run compares
what the API returns with what the config asks for.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import redis as sync_redis

from app.cli import main
from app.config.model import parse_config
from app.config.yaml_lines import ConfigError
from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT
from app.sandbox.stack import Stack

PUBLIC = "https://support.example.com"
BILLING = "billing@support-agent-internal"
SPECIALISTS = """    specialists:
      billing:
        description: Invoices, refunds and plan changes.
        model: claude-haiku-4-5
        system: You are the billing specialist.
        mcp_servers:
          ticket_history:
            default_policy: always_ask
            tools: {search_tickets: always_allow}
      docs:
        description: Product documentation.
        system: You answer from the knowledge base only.
        mcp_servers: [knowledge_base]
"""
ANCHOR = "    budget_usd: 5\n"


def config_text(extra: str = SPECIALISTS) -> str:
    text = (ROOT / "support-agent.yml").read_text()
    assert ANCHOR in text
    return f"public_base_url: {PUBLIC}\n" + text.replace(ANCHOR, extra + ANCHOR, 1)


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    sync_redis.Redis.from_url(redis_server.url).flushall()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    config = tmp_path / "support-agent.yml"
    config.write_text(config_text())
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config) as s:
        for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SENTRY_DSN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in s.env().items():
            if not name.startswith("SLACK_"):
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("MCP_TOKEN_INTERNAL", "internal-token-0123456789abcdef")
        monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "customers-token-0123456789abcdef")
        yield s
    root.handlers[:] = handlers
    root.setLevel(level)


def provision(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["provision", *args])
    out, _ = capsys.readouterr()
    return code, out


def agents(stack: Stack) -> dict[str, Any]:
    client = anthropic.Anthropic(api_key=stack.agents.state.api_key, base_url=stack.agents.url, max_retries=0)
    return {a.name: a for a in client.beta.agents.list(limit=100)}


def writes(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in stack.agents.state.request_log() if r["method"] != "GET"]


def test_check_config_names_the_line_of_a_specialist_that_reaches_too_far() -> None:
    bad = SPECIALISTS.replace("mcp_servers: [knowledge_base]", "mcp_servers: [knowledge_base, billing_db]")
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(bad))
    line = next(i for i, text in enumerate(config_text(bad).splitlines(), 1) if text == "    specialists:")
    assert f"support-agent.yml:{line}: environments.internal.specialists" in str(caught.value)
    assert "'billing_db', which this environment does not declare" in str(caught.value)
    with pytest.raises(ConfigError, match="use lowercase letters"):
        parse_config(config_text(SPECIALISTS.replace("      billing:", "      Billing Team:")))
    config = parse_config(config_text())
    docs = config.environments["internal"].specialists["docs"]
    assert docs.mcp_servers["knowledge_base"].default_policy == "always_ask"  # the explicit default
    assert config.environments["customers"].specialists == {}


def test_provision_writes_specialists_once_and_new_versions_only_on_change(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # The dry run shows them, offline or not, and changes nothing.
    code, plan = provision(capsys, "--dry-run")
    assert code == 0, plan
    assert f"+ specialist {BILLING}: would create (claude-haiku-4-5; ticket_history)" in plan
    assert "+ specialist docs@support-agent-internal: would create (claude-sonnet-4-6; knowledge_base)" in plan
    assert writes(stack) == []

    code, out = provision(capsys)
    assert code == 0, out
    made = agents(stack)
    billing, docs = made[BILLING], made["docs@support-agent-internal"]
    assert billing.model.id == "claude-haiku-4-5" and billing.description == "Invoices, refunds and plan changes."
    assert [s.name for s in billing.mcp_servers] == ["ticket_history"]
    assert billing.mcp_servers[0].url == f"{PUBLIC}/mcp/ticket_history"
    [toolset] = billing.tools
    assert toolset.default_config.permission_policy.type == "always_ask"
    assert [(c.name, c.permission_policy.type) for c in toolset.configs] == [("search_tickets", "always_allow")]
    coordinator = made["support-agent-internal"]
    multi = coordinator.multiagent
    assert multi is not None and multi.type == "multiagent_20261001"
    assert multi.subagents.type == "enabled" and multi.subagents.inline_agents.type == "disabled"
    assert {(a.id, a.version) for a in multi.subagents.predefined_agents} == {(billing.id, 1), (docs.id, 1)}
    assert multi.workflows.type == "disabled" and multi.advisor.type == "disabled"
    assert made["support-agent-customers"].multiagent is None  # no specialists there

    # A second run changes nothing.
    before = len(writes(stack))
    code, again = provision(capsys)
    assert code == 0 and "no changes" in again, again
    assert f"= specialist {BILLING}: no changes (version 1)" in again
    assert len(writes(stack)) == before

    # A changed prompt: a new version of that specialist, and of the coordinator (its pinned
    # roster); the other specialist is left alone. The dry run says so first.
    path = Path(stack.config_path)
    path.write_text(config_text(SPECIALISTS.replace("You are the billing specialist.", "Be brief about billing.")))
    code, plan = provision(capsys, "--dry-run")
    assert f"~ specialist {BILLING}: would update (system)" in plan
    assert "~ agent support-agent-internal: would update (multiagent)" in plan
    assert "= specialist docs@support-agent-internal: no changes" in plan
    code, out = provision(capsys)
    assert code == 0, out
    after = agents(stack)
    assert after[BILLING].version == 2 and after[BILLING].system == "Be brief about billing."
    assert after["docs@support-agent-internal"].version == 1
    roster = {a.id: a.version for a in after["support-agent-internal"].multiagent.subagents.predefined_agents}
    assert roster == {billing.id: 2, docs.id: 1}
    assert after["support-agent-internal"].version == coordinator.version + 1

    # Specialists removed from the config: the coordinator's roster is cleared (the saved
    # specialists are left: agents are only archived by hand).
    path.write_text(config_text(""))
    code, out = provision(capsys)
    assert code == 0, out
    assert "~ agent support-agent-internal: update (multiagent" in out
    assert agents(stack)["support-agent-internal"].multiagent is None


def test_the_shipped_example_is_valid_once_uncommented() -> None:
    text = (ROOT / "support-agent.yml").read_text()
    start = text.index("    # specialists:\n")
    block = text[start:text.index(ANCHOR, start)]
    uncommented = "".join(line.replace("    # ", "    ", 1) + "\n" for line in block.splitlines())
    config = parse_config(text.replace(block, uncommented, 1))
    billing = config.environments["internal"].specialists["billing"]
    assert billing.model == "claude-haiku-4-5"
    assert billing.mcp_servers["ticket_history"].tools == {"search_tickets": "always_allow"}
