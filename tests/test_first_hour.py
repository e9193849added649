"""Issue 17's newcomer findings: a second sandbox leaves the first alone (1), `.env.example`'s
placeholders are not keys (5), and sandbox config errors name the user's file and line (12)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis as sync_redis

from app.config.settings import Settings
from app.config.yaml_lines import ConfigError
from app.sandbox.app_runner import ROOT, free_port
from app.sandbox.page.local import LocalSandbox, SandboxBusy


def no_env_settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg, arg-type]


def test_a_second_sandbox_refuses_and_leaves_the_running_ones_redis_alone(tmp_path: Path) -> None:
    port = free_port()
    first = LocalSandbox(no_env_settings(config_path=ROOT / "support-agent.yml"), port=port,
                         data_dir=tmp_path / "sandbox")
    with first:
        assert first.redis is not None
        client = sync_redis.Redis.from_url(first.redis.url)
        client.set("kept", "1")
        # Same data folder (another page port): refused before anything is wiped.
        second = LocalSandbox(no_env_settings(config_path=ROOT / "support-agent.yml"), port=free_port(),
                              data_dir=tmp_path / "sandbox")
        with pytest.raises(SandboxBusy, match="data folder"):
            second.start()
        # Same page port (another data folder): refused too.
        third = LocalSandbox(no_env_settings(config_path=ROOT / "support-agent.yml"), port=port,
                             data_dir=tmp_path / "other")
        with pytest.raises(SandboxBusy, match=f"port {port}"):
            third.start()
        assert client.get("kept") == b"1"
        client.close()


def test_env_example_placeholders_are_unset(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text((ROOT / ".env.example").read_text(encoding="utf-8"), encoding="utf-8")
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert settings.anthropic_api_key is None
    assert settings.slack_bot_token is None and settings.slack_signing_secret is None
    # So the sandbox starts the demo agent, not a "real" one with a key that is not one.
    assert LocalSandbox(settings, data_dir=tmp_path / "sandbox").real_agent is False
    assert Settings(_env_file=None, anthropic_api_key="sk-ant-real").anthropic_api_key is not None  # type: ignore[call-arg, arg-type]


def test_sandbox_config_errors_name_the_users_file_and_line(tmp_path: Path) -> None:
    mine = tmp_path / "my-agent.yml"
    text = (ROOT / "support-agent.yml").read_text(encoding="utf-8")
    mine.write_text(text + "\nbudgets: [unclosed\n", encoding="utf-8")
    sandbox = LocalSandbox(no_env_settings(config_path=mine), data_dir=tmp_path / "sandbox")
    with pytest.raises(ConfigError) as err:
        sandbox.start()
    message = str(err.value)
    assert str(mine) in message and "invalid YAML" in message
    assert "sandbox/support-agent.yml" not in message
    # A schema error, too, points into the user's file with its line.
    mine.write_text(text.replace("agent:", "agent:\n  bogus_key: 1", 1), encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        LocalSandbox(no_env_settings(config_path=mine), data_dir=tmp_path / "sandbox2").start()
    assert f"{mine}:" in str(err.value)
