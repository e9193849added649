"""Settings and the config file: clear errors, secrets hidden, channels routed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.config.model import AppConfig, parse_config
from app.config.settings import Settings
from app.config.yaml_lines import ConfigError

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """\
agent:
  name: bot
  model: claude-sonnet-4-6
  system: be helpful
environments:
  internal:
    channels: {ids: [C1]}
    managed_environment: {name: env-internal}
"""


def test_shipped_config_loads(app_config: AppConfig) -> None:
    assert set(app_config.environments) == {"internal", "customers"}
    assert app_config.environments["customers"].customer_facing


def test_bad_field_names_the_line() -> None:
    text = MINIMAL.replace(
        "    managed_environment: {name: env-internal}", "    managed_environment: {name: e}\n    budget_usd: -3"
    )
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cfg.yml")
    assert "cfg.yml:9" in str(err.value)
    assert "budget_usd" in str(err.value)


def test_unknown_key_is_rejected_with_its_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + "colour: blue\n", "cfg.yml")
    assert "cfg.yml:9: colour: Extra inputs are not permitted" in str(err.value)


def test_bad_yaml_names_line_and_column() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("agent:\n  name: [unclosed\n", "cfg.yml")
    assert str(err.value).startswith("cfg.yml:")
    assert "invalid YAML" in str(err.value)


def test_missing_section_is_named() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("agent: {name: a, model: m, system: s}\n", "cfg.yml")
    assert "environments: Field required" in str(err.value)


def test_channel_routing_by_id_name_and_shared_rule(app_config: AppConfig) -> None:
    config = parse_config(MINIMAL)
    assert config.environment_for_channel("C1") == "internal"
    assert config.environment_for_channel("C2") is None
    assert app_config.environment_for_channel("CX", "support-internal") == "internal"
    assert app_config.environment_for_channel("CX", "help") == "customers"
    # An externally shared channel never falls through to the internal default.
    assert app_config.environment_for_channel("CX", "random-ext", is_shared=True) == "customers"


def test_settings_keep_secrets_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret-value")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert "xoxb-very-secret-value" not in repr(settings)
    assert "xoxb-very-secret-value" not in settings.model_dump_json()
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == "xoxb-very-secret-value"


def test_settings_read_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("ANTHROPIC_API_KEY=sk-ant-from-dotenv\nREDIS_URL=redis://x:6379/0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    settings = Settings()
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-from-dotenv"


def test_start_without_settings_names_every_missing_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_"))}
    env["SUPPORT_AGENT_CONFIG"] = str(ROOT / "support-agent.yml")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "run"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "ANTHROPIC_API_KEY"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_file_exits_with_located_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(MINIMAL + "environments_typo: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "check-config", str(bad)],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert f"{bad}:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_needs_the_bot_token_but_not_the_signing_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_"))}
    env.update(SUPPORT_AGENT_CONFIG=str(ROOT / "support-agent.yml"), ANTHROPIC_API_KEY="sk-ant-x")
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "worker"], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "SLACK_BOT_TOKEN" in result.stderr
    assert "SLACK_SIGNING_SECRET" not in result.stderr and "ANTHROPIC_API_KEY" not in result.stderr
