"""How a role ends, and what it tells its supervisor: exit 0 only after a requested stop; on
SIGTERM a worker hands its tickets to another worker at once instead of leaving them to lapse."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.sandbox.app_runner import ROOT, free_port, free_socket
from app.sandbox.stack import Stack
from tests.support import eventually
from tests.test_e2e_ticket import SUPPORT, bot_replies


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("role", ["web", "worker"])
def test_a_requested_stop_exits_0(stack: Stack, tmp_path: Path, role: str, sig: signal.Signals) -> None:
    proc = stack.start_process(role, log_path=tmp_path / f"{role}.log")
    assert proc.proc is not None
    if role == "worker":  # up and taking jobs
        deadline = time.monotonic() + 30
        while "worker started" not in (tmp_path / f"{role}.log").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    proc.proc.send_signal(sig)
    assert proc.proc.wait(20) == 0


@pytest.mark.parametrize("role", ["web", "worker", "run"])
def test_an_unreachable_redis_at_start_is_retried_then_exits_1_naming_it(stack: Stack, role: str) -> None:
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = cli(role, "--port", str(free_port()), env=stack.env(REDIS_URL=dead, REDIS_START_TIMEOUT="2")) \
        if role != "worker" else cli(role, env=stack.env(REDIS_URL=dead, REDIS_START_TIMEOUT="2"))
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started >= 2  # it did retry for the allowance
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot reach Redis at redis://:***@127.0.0.1" in last
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_web_role_that_cannot_listen_exits_non_zero(stack: Stack) -> None:
    with free_socket() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("web", "--port", str(port), env=stack.env())
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("command", "url"),
    [
        (["costs"], "redis://127.0.0.1:{port}/0"),
        (["trace", "#1"], "nonsense://nowhere"),
        (["trace", "#1"], "redis://:secret@127.0.0.1:{port}/0"),
    ],
)
def test_cli_commands_name_a_redis_problem_in_one_line(stack: Stack, command: list[str], url: str) -> None:
    result = cli(*command, env=stack.env(REDIS_URL=url.format(port=free_port())), timeout=30)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "secret" not in result.stderr
    assert "Redis" in lines[0] or "REDIS_URL" in lines[0]


async def test_sigterm_hands_the_ticket_to_another_worker_at_once(stack: Stack, tmp_path: Path) -> None:
    # A lease this long would keep the ticket 30 s from anyone if the worker just vanished.
    lease = {"LEASE_SECONDS": "30"}
    steps: list[dict[str, object]] = []
    for i in range(20):
        steps += [{"message": f"step {i}"}, {"sleep": 0.5}]
    stack.agents.set_scenario({"rules": [{"match": None, "steps": steps}]})
    stack.start_process("web", log_path=tmp_path / "web.log", **lease)
    first = stack.start_process("worker", log_path=tmp_path / "w1.log", WORKER_ID="worker-1", **lease)
    await eventually(lambda: "worker started" in (tmp_path / "w1.log").read_text(), timeout=30)
    ts = await stack.slack.user_posts(SUPPORT, "long job")
    await eventually(lambda: "step 1" in "\n".join(bot_replies(stack, ts)), timeout=30)
    second = stack.start_process("worker", log_path=tmp_path / "w2.log", WORKER_ID="worker-2", **lease)
    await eventually(lambda: "worker started" in (tmp_path / "w2.log").read_text(), timeout=30)
    assert "step 19" not in "\n".join(bot_replies(stack, ts))  # still mid-turn
    assert first.proc is not None
    stopped_at = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.proc.wait, 20) == 0

    def taken_over() -> bool:
        return any(
            line.get("msg") == "following ticket" and line.get("reason") == "takeover"
            for line in log_lines(tmp_path / "w2.log")
        )

    await eventually(taken_over, timeout=15)
    assert time.monotonic() - stopped_at < 15  # not the 30 s of lease expiry
    await eventually(lambda: "step 19" in "\n".join(bot_replies(stack, ts)), timeout=30)
    text = "\n".join(bot_replies(stack, ts))
    for i in range(20):
        assert f"step {i}" in text, text
    assert any(line.get("msg") == "tickets handed off" for line in log_lines(tmp_path / "w1.log"))
    assert second.proc is not None and second.proc.poll() is None
