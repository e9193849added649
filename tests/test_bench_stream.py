"""`support-agent bench stream`: runs end to end and prints the promised JSON object."""

from __future__ import annotations

import json

import pytest

from app.bench.stream import Options, format_report, lost_chars, percentile
from app.cli import main


def test_bench_stream_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "stream", "--tickets", "4", "--json", "--turn-seconds", "0.8",
                 "--answer-chars", "600", "--tool-calls", "3"])
    assert code == 0
    out = capsys.readouterr().out.strip()
    result = json.loads(out)  # exactly one object
    assert set(result) == {"tickets", "ours", "naive"} and result["tickets"] == 4
    for side in ("ours", "naive"):
        for key in ("slack_calls_per_turn", "rate_limited_responses", "text_lost_chars",
                    "latency_p50_ms", "latency_p99_ms"):
            assert key in result[side]
    ours, naive = result["ours"], result["naive"]
    assert ours["text_lost_chars"] == 0
    assert ours["slack_calls_per_turn"] < naive["slack_calls_per_turn"]
    assert ours["rate_limit_scale"] == 60


def test_bench_stream_report() -> None:
    side = {"slack_calls_per_turn": 4.5, "rate_limited_responses": 0, "text_lost_chars": 0,
            "latency_p50_ms": 400.0, "latency_p99_ms": 1200.5, "events_shown": 10, "seconds": 4.2,
            "content_events": 10}
    out = format_report({"tickets": 2, "ours": side, "naive": {**side, "latency_p99_ms": None}}, Options())
    assert "scaled x60" in out and "Slack calls per turn" in out and "text lost" in out
    assert "1,200.5" in out


def test_lost_chars_counts_what_is_missing() -> None:
    assert lost_chars(["hello world", "second part"], "xx hello world yy second part") == 0
    assert lost_chars(["hello brave new world"], "hello new world") == len("brave ")
    assert lost_chars(["a @channel b"], "a @\u200bchannel b") == 0


def test_percentile() -> None:
    assert percentile([], 50) is None
    assert percentile([float(i) for i in range(1, 101)], 50) == 50.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
