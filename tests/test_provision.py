"""`support-agent provision` against the Managed Agents emulator, run in-process via `app.cli.main`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
import redis as sync_redis

from app.cli import main
from app.provision import fingerprint
from app.redis_conn import EmbeddedRedis
from app.sandbox.app_runner import ROOT
from app.sandbox.stack import Stack
from app.sessions.resources import PROVISIONED

PUBLIC = "https://support.example.com"
TOKEN_INTERNAL = "internal-token-0123456789abcdef"
TOKEN_CUSTOMERS = "customers-token-0123456789abcdef"


def write_config(path: Path, public_base_url: str = PUBLIC, replace: tuple[str, str] | None = None) -> Path:
    text = (ROOT / "support-agent.yml").read_text()
    if replace:
        assert replace[0] in text
        text = text.replace(replace[0], replace[1], 1)
    path.write_text(f"public_base_url: {public_base_url}\n" + text)
    return path


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures the root logger; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def stack(redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
          keep_logging: None) -> Iterator[Stack]:
    sync_redis.Redis.from_url(redis_server.url).flushall()
    config = write_config(tmp_path / "support-agent.yml")
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config) as s:
        for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SENTRY_DSN"):
            monkeypatch.delenv(name, raising=False)
        for name, value in s.env().items():
            if not name.startswith("SLACK_"):
                monkeypatch.setenv(name, value)
        monkeypatch.setenv("MCP_TOKEN_INTERNAL", TOKEN_INTERNAL)
        monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", TOKEN_CUSTOMERS)
        yield s


def provision(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and what was printed (stdout; stderr holds the JSON log lines)."""
    code = main(["provision", *args])
    out, err = capsys.readouterr()
    if code != 0:
        out += "\n" + "\n".join(line for line in err.splitlines() if not line.startswith("{"))
    return code, out


def api(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=stack.agents.state.api_key, base_url=stack.agents.url, max_retries=0)


def writes(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in stack.agents.state.request_log() if r["method"] != "GET"]


def recorded(stack: Stack) -> dict[str, str]:
    raw: dict[str, str] = sync_redis.Redis.from_url(stack.redis_url, decode_responses=True).hgetall(PROVISIONED)  # type: ignore[assignment]
    return raw


def test_dry_run_prints_the_plan_and_changes_nothing(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = provision(capsys, "--dry-run")
    assert code == 0, out
    assert "Plan (dry run" in out
    assert "+ agent support-agent-internal: would create (claude-sonnet-4-6; knowledge_base, ticket_history)" in out
    assert "+ agent support-agent-customers: would create (claude-sonnet-4-6; knowledge_base)" in out
    assert "+ environment support-internal: would create" in out
    assert "+ vault support-agent-internal: would create" in out
    assert f"+ credential internal/knowledge_base: would create (static_bearer for {PUBLIC}/mcp/knowledge_base" in out
    assert "+ credential customers/knowledge_base: would create" in out
    assert "changes to make" in out
    assert TOKEN_INTERNAL not in out and TOKEN_CUSTOMERS not in out
    assert writes(stack) == []
    assert recorded(stack) == {}


def test_real_run_then_a_second_run_changes_nothing(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = provision(capsys)
    assert code == 0, out
    assert "+ agent support-agent-internal: create" in out and "changes made" in out
    client = api(stack)
    agents = {a.name: a for a in client.beta.agents.list()}
    internal = agents["support-agent-internal"]
    assert [(s.name, s.url) for s in internal.mcp_servers] == [
        ("knowledge_base", f"{PUBLIC}/mcp/knowledge_base"),
        ("ticket_history", f"{PUBLIC}/mcp/ticket_history"),
    ]
    tools = [t.model_dump(mode="json") for t in internal.tools]
    assert sorted(t["name"] for t in tools if t["type"] == "custom") == ["escalate_to_human", "update_ticket"]
    toolsets = [t for t in tools if t["type"] == "mcp_toolset"]
    # The policy is written out, not left to the API's always_ask default.
    assert {t["mcp_server_name"]: t["default_config"]["permission_policy"]["type"] for t in toolsets} == {
        "knowledge_base": "always_allow", "ticket_history": "always_allow",
    }
    assert [s.name for s in agents["support-agent-customers"].mcp_servers] == ["knowledge_base"]
    envs = {e.name: e for e in client.beta.environments.list()}
    config = envs["support-customers"].config
    assert config.type == "cloud"
    net = config.networking.model_dump(mode="json")
    assert net["type"] == "limited" and net["allow_mcp_servers"] is True
    ids = recorded(stack)
    vault_internal = ids["vault:internal"]
    assert ids["agent:support-agent-internal"] == internal.id
    assert ids["environment:support-internal"] == envs["support-internal"].id
    creds = list(client.beta.vaults.credentials.list(vault_internal))
    assert sorted(c.auth.mcp_server_url for c in creds) == [  # type: ignore[union-attr]
        f"{PUBLIC}/mcp/knowledge_base", f"{PUBLIC}/mcp/ticket_history",
    ]
    assert all(c.metadata["token_sha256"] == fingerprint(TOKEN_INTERNAL) for c in creds)
    assert stack.agents.state.call(
        lambda: stack.agents.state.credential_token_for([vault_internal], f"{PUBLIC}/mcp/knowledge_base")
    ) == TOKEN_INTERNAL
    customer_vault = ids["vault:customers"]
    assert stack.agents.state.call(
        lambda: stack.agents.state.credential_token_for([customer_vault], f"{PUBLIC}/mcp/knowledge_base")
    ) == TOKEN_CUSTOMERS

    before = len(writes(stack))
    code, out = provision(capsys)
    assert code == 0, out
    assert out.strip().endswith("no changes")
    assert "= agent support-agent-internal: no changes (version 1)" in out
    assert len(writes(stack)) == before
    assert client.beta.agents.retrieve(internal.id).version == 1


def test_a_changed_policy_makes_a_new_agent_version(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert provision(capsys)[0] == 0
    write_config(
        stack.config_path,
        replace=(
            "      ticket_history:\n        builtin: true\n        token_env: MCP_TOKEN_INTERNAL\n"
            "        default_policy: always_allow\n",
            "      ticket_history:\n        builtin: true\n        token_env: MCP_TOKEN_INTERNAL\n"
            "        default_policy: always_ask\n        tools:\n          search_tickets: always_allow\n",
        ),
    )
    code, out = provision(capsys, "--dry-run")
    assert "~ agent support-agent-internal: would update (tools)" in out
    code, out = provision(capsys)
    assert code == 0, out
    assert "~ agent support-agent-internal: update (tools; version 2)" in out
    assert "= agent support-agent-customers: no changes (version 1)" in out
    agent = api(stack).beta.agents.retrieve(recorded(stack)["agent:support-agent-internal"])
    history = next(t for t in agent.tools if t.mcp_server_name == "ticket_history")  # type: ignore[union-attr]
    dumped = history.model_dump(mode="json")
    assert dumped["default_config"]["permission_policy"]["type"] == "always_ask"
    assert [(c["name"], c["permission_policy"]["type"]) for c in dumped["configs"]] == [
        ("search_tickets", "always_allow")
    ]
    assert provision(capsys)[1].strip().endswith("no changes")


def test_a_rotated_token_replaces_the_credential(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert provision(capsys)[0] == 0
    rotated = "rotated-token-fedcba9876543210"
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", rotated)
    code, out = provision(capsys)
    assert code == 0, out
    assert "~ credential customers/knowledge_base: rotate (MCP_TOKEN_CUSTOMERS changed)" in out
    assert "= credential internal/knowledge_base: no changes" in out
    assert rotated not in out
    vault = recorded(stack)["vault:customers"]
    assert stack.agents.state.call(
        lambda: stack.agents.state.credential_token_for([vault], f"{PUBLIC}/mcp/knowledge_base")
    ) == rotated
    assert provision(capsys)[1].strip().endswith("no changes")


def test_a_missing_token_is_reported_by_name(
    stack: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MCP_TOKEN_CUSTOMERS")
    code, out = provision(capsys)
    assert code == 1
    assert (
        "! credential customers/knowledge_base: error (MCP_TOKEN_CUSTOMERS is not set; credential not created)"
        in out
    )
    assert "1 problem" in out


def test_our_servers_need_a_public_base_url(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    stack.config_path.write_text((ROOT / "support-agent.yml").read_text())
    code, out = provision(capsys, "--dry-run")
    assert code == 1 and "public_base_url" in out


async def test_the_bot_makes_the_agent_and_vault_itself_when_provision_never_ran(stack: Stack) -> None:
    from app.redis_conn import connect
    from app.sessions import resources

    config = stack.config
    redis = connect(stack.redis_url)
    client = stack.agents.client(max_retries=0)
    try:
        agent = await resources.agent_id(client, redis, config, "customers")
        again = await resources.agent_id(client, redis, config, "customers")
        vaults = await resources.vault_ids(redis, "customers", client, config)
        assert await resources.vault_ids(redis, "customers", client, config) == vaults
        made = await client.beta.agents.retrieve(agent)
    finally:
        await redis.aclose()
        await client.close()
    assert again == agent
    assert [(s.name, s.url) for s in made.mcp_servers] == [("knowledge_base", f"{PUBLIC}/mcp/knowledge_base")]
    assert len(vaults) == 1
    assert stack.agents.state.call(
        lambda: stack.agents.state.credential_token_for(vaults, f"{PUBLIC}/mcp/knowledge_base")
    ) == TOKEN_CUSTOMERS
    # What the bot made is what provision would make: nothing left to change.
    assert recorded(stack)["agent:support-agent-customers"] == agent


def test_an_unreachable_bridged_server_is_reported_and_changes_nothing_else(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert provision(capsys)[0] == 0
    write_config(
        stack.config_path,
        replace=(
            "    mcp_servers:\n",
            "    mcp_servers:\n      onprem:\n        url: http://127.0.0.1:9/mcp\n"
            "        token_env: MCP_TOKEN_INTERNAL\n        bridged: true\n",
        ),
    )
    code, out = provision(capsys)
    assert code == 1
    assert "! agent support-agent-internal: error (the onprem MCP server could not be reached" in out
    assert "the agent is left as it is" in out
    assert TOKEN_INTERNAL not in out
    # Not offered to the cloud, and no credential for it in the vault.
    agent = api(stack).beta.agents.retrieve(recorded(stack)["agent:support-agent-internal"])
    assert agent.version == 1 and "onprem" not in [s.name for s in agent.mcp_servers]
    assert "credential internal/onprem" not in out


def test_the_config_says_where_a_server_is_missing_its_url() -> None:
    from app.config.model import parse_config
    from app.config.yaml_lines import ConfigError

    text = (ROOT / "support-agent.yml").read_text().replace(
        "    mcp_servers:\n", "    mcp_servers:\n      onprem:\n        bridged: true\n", 1
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert "environments.internal.mcp_servers.onprem" in str(err.value) and "needs the `url`" in str(err.value)
