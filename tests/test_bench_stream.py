"""`support-agent bench stream`: runs end to end and prints the promised JSON object."""

from __future__ import annotations

import json

import pytest

from app.bench.bound import Budget, bound_latencies
from app.bench.stream import Options, format_report, lost_chars, percentile
from app.cli import main


def test_bench_stream_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "stream", "--tickets", "4", "--json", "--turn-seconds", "0.8",
                 "--answer-chars", "600", "--tool-calls", "3", "--rate-scale", "60", "--grace-seconds", "5"])
    assert code == 0
    out = capsys.readouterr().out.strip()
    result = json.loads(out)  # exactly one object
    assert {"tickets", "ours", "naive", "naive_retrying", "bound_p50_ms", "bound_p99_ms"} <= set(result)
    assert result["tickets"] == 4 and result["rate_limit_scale"] == 60
    for side in ("ours", "naive", "naive_retrying"):
        for key in ("slack_calls_per_turn", "rate_limited_responses", "text_lost_chars",
                    "latency_p50_ms", "latency_p99_ms", "events_shown", "events_never_shown"):
            assert key in result[side]
        # every event counts: shown or never shown
        assert result[side]["events_shown"] + result[side]["events_never_shown"] >= result[side]["content_events"]
    ours, naive = result["ours"], result["naive"]
    assert ours["text_lost_chars"] == 0 and ours["events_never_shown"] == 0
    assert ours["slack_calls_per_turn"] < naive["slack_calls_per_turn"]
    assert ours["rate_limit_scale"] == 60
    assert result["bound_p50_ms"] <= ours["latency_p50_ms"]  # nobody beats what the budget allows


def test_bench_stream_report() -> None:
    side = {"slack_calls_per_turn": 4.5, "rate_limited_responses": 0, "text_lost_chars": 0,
            "latency_p50_ms": 400.0, "latency_p99_ms": 1200.5, "events_shown": 10, "seconds": 4.2,
            "content_events": 10}
    result = {"tickets": 2, "ours": side, "naive": {**side, "latency_p99_ms": None}, "naive_retrying": side,
              "bound_p50_ms": 10.0, "bound_p99_ms": 20.0}
    out = format_report(result, Options())
    assert "real rate limits" in out and "Slack calls per turn" in out and "text lost" in out
    assert "1,200.5" in out and "p50 10.0 ms" in out
    assert "scaled x60" in format_report(result, Options(rate_scale=60))


def test_the_bound_is_what_the_budget_allows() -> None:
    many = Budget(rate=1000.0, capacity=1000.0)
    # plenty of budget: everything shows at once
    assert max(bound_latencies([[0.0, 0.5], [0.2]], many, many)) < 0.02
    # one append a second for 10 turns all waiting: the last waits about 10 s
    slow = Budget(rate=1.0, capacity=1.0)
    lat = bound_latencies([[0.0, 0.01] for _ in range(10)], many, slow)
    assert len(lat) == 20
    assert 8.5 < max(lat) < 10.5


def test_lost_chars_counts_what_is_missing() -> None:
    assert lost_chars(["hello world", "second part"], "xx hello world yy second part") == 0
    assert lost_chars(["hello brave new world"], "hello new world") == len("brave ")
    assert lost_chars(["a @channel b"], "a @\u200bchannel b") == 0


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
