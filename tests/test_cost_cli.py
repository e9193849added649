"""`support-agent cost quote` and `support-agent costs`, run in-process through `app.cli.main`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from app.cli import main
from app.cost.ledger import CostLedger
from app.redis_conn import EmbeddedRedis, connect
from app.tickets.model import Ticket

ROOT = Path(__file__).resolve().parents[1]
SONNET = "claude-sonnet-4-6"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, redis_server: EmbeddedRedis) -> None:
    """Settings for the CLI: the test Redis, the checked-in config, and no credentials at all."""
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(ROOT / "support-agent.yml"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- cost quote -----------------------------------------------------------------------------


def test_quote_text(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "cost", "quote", "--active-seconds", "1800", "--input-tokens", "1000000",
        "--output-tokens", "100000", "--cache-read-tokens", "500000", "--web-searches", "3",
    )
    assert code == 0
    assert f"Model {SONNET}" in out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert lines["runtime"].endswith("$0.040000")
    assert lines["input"].endswith("$3.000000")
    assert lines["output"].endswith("$1.500000")
    assert "$4.720000" in lines["total"] and "($4.72)" in lines["total"]


def test_quote_json_runtime_only(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "cost", "quote", "--active-seconds", "1800", "--json")
    assert code == 0, err
    data = json.loads(out)  # exactly one object
    assert isinstance(data, dict)
    assert (data["runtime_usd"], data["tokens_usd"], data["total_usd"]) == (0.04, 0.0, 0.04)
    assert all(isinstance(data[k], float) for k in ("runtime_usd", "tokens_usd", "total_usd"))
    assert data["model"] == SONNET


def test_quote_json_long_mixed_session(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "cost", "quote", "--json", "--model", SONNET, "--active-seconds", "108000",
        "--input-tokens", "2000000", "--output-tokens", "500000", "--cache-read-tokens", "10000000",
        "--cache-write-5m-tokens", "1000000", "--cache-write-1h-tokens", "0", "--web-searches", "40",
    )
    assert code == 0
    data = json.loads(out)
    assert (data["runtime_usd"], data["tokens_usd"], data["total_usd"]) == (2.4, 20.25, 23.05)
    assert data["web_search_usd"] == 0.4 and data["cache_write_5m_usd"] == 3.75


def test_quote_other_model(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "cost", "quote", "--json", "--model", "claude-haiku-4-5", "--active-seconds", "0",
        "--input-tokens", "1000000", "--cache-write-1h-tokens", "1000000",
    )
    assert code == 0
    assert json.loads(out)["tokens_usd"] == 3.0  # 1 + 2 (1h cache write at 2x input)


def test_quote_unknown_model_is_exit_2(env: None, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "cost", "quote", "--active-seconds", "10", "--model", "claude-nope", "--json")
    assert code == 2
    assert out == ""
    assert "claude-nope" in err and SONNET in err


@pytest.mark.parametrize(
    "args",
    [
        ("--active-seconds", "-5"),
        ("--active-seconds=-0.5",),
        ("--active-seconds", "10", "--input-tokens", "-1"),
        ("--active-seconds", "10", "--web-searches=-3"),
        ("--active-seconds", "ten"),
        ("--active-seconds", "10", "--output-tokens", "1.5"),
        ("--active-seconds", "nan"),
    ],
)
def test_quote_bad_numbers_are_exit_2(env: None, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    code, out, err = run(capsys, "cost", "quote", *args)
    assert code == 2
    assert out == ""
    assert err.startswith("support-agent: ") and ("negative" in err or "number" in err)


def test_quote_defaults_to_the_config_agent_model(
    env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "support-agent.yml"
    config.write_text(
        "agent: {name: a, model: claude-haiku-4-5, system: be brief}\n"
        "environments:\n  internal:\n    managed_environment: {name: x}\n"
        "pricing: {runtime_usd_per_hour: 0.16}\n"
    )
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(config))
    code, out, _ = run(capsys, "cost", "quote", "--active-seconds", "1800", "--input-tokens", "1000000", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "claude-haiku-4-5"
    assert (data["runtime_usd"], data["tokens_usd"]) == (0.08, 1.0)


def test_quote_falls_back_to_built_in_prices(
    env: None, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(tmp_path / "missing.yml"))
    code, out, err = run(capsys, "cost", "quote", "--active-seconds", "3600", "--json")
    assert code == 0
    assert json.loads(out)["total_usd"] == 0.08 and json.loads(out)["model"] == SONNET
    assert "built-in prices" in err


# -- costs ----------------------------------------------------------------------------------


def seed(url: str) -> None:
    async def go() -> None:
        redis = connect(url)
        try:
            await redis.flushall()
            ledger = CostLedger(redis)
            day1 = datetime(2026, 10, 5, 10, tzinfo=UTC)
            day2 = datetime(2026, 10, 6, 10, tzinfo=UTC)
            for n, channel, env_name, at, usage in (
                (1, "C1", "internal", day1, {"active_seconds": 1800, "input_tokens": 1_000_000}),  # 3.04
                (2, "C1", "internal", day2, {"output_tokens": 100_000}),  # 1.50
                (3, "C2", "customers", day2, {"active_seconds": 3600, "output_tokens": 1_000_000}),  # 15.08
            ):
                t = Ticket(
                    id=f"T1-{n}", number=n, team_id="T1", channel_id=channel, thread_ts=f"{n}.0",
                    requester_id="U1", environment=env_name, title=f"q{n}", session_id=f"sesn_{n}",
                )
                await ledger.record_snapshot(t, model=SONNET, usage_snapshot=usage, source_event_id="e1", at=at)
        finally:
            await redis.aclose()

    asyncio.run(go())


RANGE = ("--since", "2026-10-01", "--until", "2026-10-31")


def test_costs_by_ticket_json(env: None, redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]) -> None:
    seed(redis_server.url)
    code, out, _ = run(capsys, "costs", *RANGE, "--by", "ticket", "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert [(r["ticket"], r["channel"], r["environment"], r["total_usd"]) for r in rows] == [
        ("T1-3", "C2", "customers", 15.08),
        ("T1-1", "C1", "internal", 3.04),
        ("T1-2", "C1", "internal", 1.5),
    ]
    assert rows[1]["runtime_usd"] == 0.04 and rows[1]["tokens_usd"] == 3.0
    assert rows[1]["active_seconds"] == 1800.0 and rows[1]["input_tokens"] == 1_000_000


def test_costs_by_channel_csv(env: None, redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]) -> None:
    seed(redis_server.url)
    code, out, _ = run(capsys, "costs", *RANGE, "--by", "channel", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["channel"], r["tickets"], r["total_usd"]) for r in rows] == [
        ("C2", "1", "15.080000"),
        ("C1", "2", "4.540000"),
    ]
    assert list(rows[0])[:3] == ["channel", "tickets", "turns"]


def test_costs_by_environment_and_day_table(
    env: None, redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(redis_server.url)
    code, out, _ = run(capsys, "costs", *RANGE, "--by", "environment", "--format", "table")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["environment", "tickets", "turns"]
    assert lines[1].startswith("customers") and lines[1].endswith("$15.08")
    assert lines[2].startswith("internal") and lines[2].endswith("$4.54")
    assert lines[3].startswith("TOTAL") and lines[3].endswith("$19.62")

    code, out, _ = run(capsys, "costs", "--since", "2026-10-06", "--until", "2026-10-06", "--by", "day")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 3
    assert lines[1].startswith("2026-10-06") and lines[1].endswith("$16.58")


def test_costs_day_csv_and_json_agree(
    env: None, redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(redis_server.url)
    _, out_csv, _ = run(capsys, "costs", *RANGE, "--by", "day", "--format", "csv")
    _, out_json, _ = run(capsys, "costs", *RANGE, "--by", "day", "--format", "json")
    from_csv = [(r["day"], float(r["total_usd"])) for r in csv.DictReader(io.StringIO(out_csv))]
    from_json = [(r["day"], r["total_usd"]) for r in json.loads(out_json)]
    assert from_csv == from_json == [("2026-10-05", 3.04), ("2026-10-06", 16.58)]


def test_costs_empty_range_and_bad_range(
    env: None, redis_server: EmbeddedRedis, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(redis_server.url)
    code, out, err = run(capsys, "costs", "--since", "2025-01-01", "--until", "2025-01-31", "--format", "json")
    assert code == 0 and json.loads(out) == []
    code, out, err = run(capsys, "costs", "--since", "2025-01-01", "--until", "2025-01-31")
    assert code == 0 and "no costs recorded" in err
    code, _, err = run(capsys, "costs", "--since", "2026-10-31", "--until", "2026-10-01")
    assert code == 2 and "after" in err
