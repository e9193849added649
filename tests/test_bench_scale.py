"""Smoke tests of the scale benchmarks (issue 14): each runs with tiny parameters as the real
command line (`support-agent bench intake|workers|takeover`), the three side by side, and its
last line is one JSON object whose figures are plausible. Figures are not checked against the
issue's targets: that is what the benchmarks themselves are for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

RUNS = {
    "intake": ["--rate", "20", "--seconds", "2"],
    "workers": ["--sessions", "5", "--window", "4", "--interval", "1", "--start-timeout", "90"],
    "takeover": ["--kills", "1", "--timeout", "20"],
}


def _run_all() -> dict[str, dict[str, Any]]:
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "app.cli", "bench", name, *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, args in RUNS.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=170)
        assert proc.returncode == 0, f"{name}: exit {proc.returncode}\n{err[-3000:]}"
        last = out.strip().splitlines()[-1]
        results[name] = json.loads(last)
    return results


def test_the_scale_benchmarks_print_plausible_figures() -> None:
    results = _run_all()

    intake = results["intake"]
    for side in ("app", "bare"):
        figures = intake[side]
        assert {"events", "p50_ms", "p99_ms", "max_ms", "errors", "jobs"} <= figures.keys()
        assert figures["events"] == 40 and figures["errors"] == 0
        assert figures["jobs"] == figures["events"]  # every event became a job
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"] < 10_000
        assert 0 < figures["cpu_ms_per_event"] < 1_000  # the server's own CPU, from /proc
    assert intake["p99_ratio"] > 0

    workers = results["workers"]
    assert workers["sessions_running"] == 5 and workers["sessions_followed"] == 5
    assert workers["events_measured"] >= 5
    latency = workers["event_to_slack"]
    assert 0 <= latency["p50_ms"] <= latency["p99_ms"] < 30_000
    assert 20 < workers["rss_mb"] < 1_000 and workers["cpu_percent"] >= 0
    assert workers["connections"]["agents"] >= 5  # one event stream per running session

    takeover = results["takeover"]
    assert takeover["takeovers"] == 1 and takeover["errors"] == 0
    assert 0 < takeover["takeover_p50_ms"] <= takeover["takeover_max_ms"] < 20_000
    assert takeover["rounds"][0]["new_holder"] not in (None, takeover["rounds"][0]["killed"])
