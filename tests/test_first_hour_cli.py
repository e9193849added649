"""Issue 17 items 7 and 11, the command line: `--help` is fast because listing the commands
imports no feature module and no SDK; `provision --dry-run` plans on the shipped config with no
key, no network and no Redis, and names `public_base_url`; one-shot commands print no INFO logs."""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import commands
from app.cli import build_parser, main
from app.observability.logs import configure_logging
from app.observability.scrub import Scrubber
from app.sandbox.app_runner import ROOT, free_port

HEAVY = ("anthropic", "mcp", "slack_sdk", "slack_bolt", "redis", "pydantic_settings", "uvicorn", "starlette")


@pytest.fixture
def keep_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    noisy = {name: logging.getLogger(name).level for name in ("anthropic", "httpx2")}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, lvl in noisy.items():
        logging.getLogger(name).setLevel(lvl)


def test_help_lists_every_command_without_importing_features_or_sdks() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from app.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(repr(sorted(m for m in sys.modules if not m.startswith('_'))))\n"
        "print(repr(out.getvalue()))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    modules_line, help_line = done.stdout.strip().splitlines()[-2:]
    loaded = set(ast.literal_eval(modules_line))
    text = ast.literal_eval(help_line)
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY), sorted(loaded)
    unlisted = [m for m in commands.FEATURE_MODULES if m not in commands.COMMANDS]
    assert not unlisted, f"add the commands of {unlisted} to app.commands.COMMANDS, or --help imports them"
    assert not loaded & set(commands.FEATURE_MODULES)
    for _module, name, _help in commands.indexed_commands():
        assert f"    {name}" in text


def test_the_command_index_says_what_each_module_registers() -> None:
    """COMMANDS is what `--help` shows without importing: it must match the modules."""
    for module in commands.FEATURE_MODULES:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        real = {action.dest: action.help for action in sub._choices_actions}
        if module in commands.COMMANDS:
            assert real == commands.COMMANDS[module], module


def test_a_command_builds_its_own_parser_and_only_lists_the_others() -> None:
    parser = build_parser(["costs", "--by", "channel"])
    args = parser.parse_args(["costs", "--by", "channel", "--sandbox"])
    assert args.by == "channel" and args.sandbox == "var/sandbox"
    # The whole parser (no argv) still has every command for real.
    full = build_parser()
    assert full.parse_args(["trace", "#1", "--format", "json"]).fmt == "json"
    assert full.parse_args(["bench", "stream", "--tickets", "3"]).tickets == 3


def test_provision_dry_run_plans_the_shipped_config_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep_logging: None
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "REDIS_URL", "MCP_TOKEN_INTERNAL", "MCP_TOKEN_CUSTOMERS"):
        monkeypatch.setenv(name, "")  # beats a .env
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(ROOT / "support-agent.yml"))

    def no_redis(*_a: object, **_k: object) -> None:
        raise AssertionError("a dry run must not start or use Redis")

    monkeypatch.setattr("app.redis_conn.EmbeddedRedis", no_redis)
    monkeypatch.setattr("app.redis_conn.connect", no_redis)
    code = main(["provision", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 1, out + err  # what to fix before a real run is named
    assert "offline: ANTHROPIC_API_KEY is not set" in out
    assert "! config public_base_url: error (not set: add `public_base_url: https://<your host>`" in out
    assert "+ agent support-agent-internal: would create (claude-sonnet-4-6; knowledge_base, ticket_history)" in out
    assert "+ environment support-customers: would create" in out
    assert "MCP_TOKEN_INTERNAL is not set" in out
    assert "problems to fix before a real run" in out
    assert not [line for line in err.splitlines() if line.startswith("{")], err


def test_provision_dry_run_with_an_unreachable_api_plans_offline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep_logging: None, tmp_path: Path
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-0123456789")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", "internal-token-0123456789abcdef")
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "customers-token-0123456789abcdef")
    config = ROOT / "support-agent.yml"
    path = tmp_path / "support-agent.yml"
    path.write_text("public_base_url: https://support.example.com\n" + config.read_text())
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(path))
    code = main(["provision", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "offline: the Managed Agents API could not be reached" in out
    assert ("+ credential internal/knowledge_base: would create (static_bearer for "
            "https://support.example.com/mcp/knowledge_base from MCP_TOKEN_INTERNAL)") in out
    assert "+ vault support-agent-internal: would create" in out
    assert "internal-token" not in out + err
    assert not [line for line in err.splitlines() if line.startswith("{")], err


def test_a_one_shot_commands_warning_level_keeps_client_request_lines_out(keep_logging: None) -> None:
    import io

    stream = io.StringIO()
    configure_logging(Scrubber([]), "WARNING", stream=stream)
    logging.getLogger("httpx2").info("HTTP Request: GET http://x")
    logging.getLogger("anthropic._base_client").info("Retrying request")
    logging.getLogger("app.provision").warning("kept")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [entry["msg"] for entry in lines] == ["kept"]
    # The service's INFO level still logs the clients' INFO lines, not their DEBUG bodies.
    configure_logging(Scrubber([]), "DEBUG", stream=stream)
    assert logging.getLogger("httpx2").getEffectiveLevel() == logging.INFO


def test_trace_with_the_embedded_redis_prints_one_line_and_no_logs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], keep_logging: None, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-0123456789")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(ROOT / "support-agent.yml"))
    assert main(["trace", "#1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.splitlines() == ["support-agent trace: no ticket #1: there are no tickets yet"]
