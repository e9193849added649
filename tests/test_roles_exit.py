"""How a role ends, and what it tells its supervisor: exit 0 only after a requested stop; on
SIGTERM a worker hands its tickets to another worker at once instead of leaving them to lapse."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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


def clis(
    runs: dict[str, tuple[str, ...]], *, env: dict[str, str], timeout: float = 60
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several CLI runs side by side (each pays a whole interpreter start)."""
    with ThreadPoolExecutor(len(runs)) as pool:
        futures = {name: pool.submit(cli, *args, env=env, timeout=timeout) for name, args in runs.items()}
        return {name: f.result() for name, f in futures.items()}


def log_lines(path: Path) -> list[dict[str, object]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def wait_started(log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while "worker started" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.05)


# SIGINT takes the same path as SIGTERM: CI checks the one supervisors send.
@pytest.mark.parametrize("sig", [signal.SIGTERM] if os.environ.get("CI") else [signal.SIGTERM, signal.SIGINT])
def test_a_requested_stop_exits_0(stack: Stack, tmp_path: Path, sig: signal.Signals) -> None:
    worker = stack.start_process("worker", log_path=tmp_path / "worker.log")  # boots beside the web role
    web = stack.start_process("web", log_path=tmp_path / "web.log")
    wait_started(tmp_path / "worker.log")  # up and taking jobs
    for proc in (web, worker):
        assert proc.proc is not None
        proc.proc.send_signal(sig)
    assert web.proc is not None and web.proc.wait(20) == 0
    assert worker.proc is not None and worker.proc.wait(20) == 0


def test_an_unreachable_redis_at_start_is_retried_then_exits_1_naming_it(stack: Stack) -> None:
    dead = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    env = stack.env(REDIS_URL=dead, REDIS_START_TIMEOUT="2")
    runs = {
        "web": ("web", "--port", str(free_port())),
        "worker": ("worker",),
        "run": ("run", "--port", str(free_port())),
    }
    started = time.monotonic()
    results = clis(runs, env=env)  # side by side: each is a whole process start
    assert time.monotonic() - started >= 2  # they did retry for the allowance
    for role, result in results.items():
        assert result.returncode == 1, (role, result.stderr)
        last = result.stderr.strip().splitlines()[-1]
        assert "cannot reach Redis at redis://:***@127.0.0.1" in last, role
        assert "hunter2" not in result.stderr
        assert "Traceback" not in result.stderr


def test_a_web_role_that_cannot_listen_exits_non_zero(stack: Stack) -> None:
    with free_socket() as taken:
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("web", "--port", str(port), env=stack.env())
    assert result.returncode != 0


def test_cli_commands_name_a_redis_problem_in_one_line(stack: Stack) -> None:
    cases = {
        "unreachable": (["costs"], "redis://127.0.0.1:{port}/0"),
        "malformed": (["trace", "#1"], "nonsense://nowhere"),
        "with a password": (["trace", "#1"], "redis://:secret@127.0.0.1:{port}/0"),
    }
    results = _side_by_side(stack, cases)
    for name, result in results.items():
        assert result.returncode in (1, 2), name
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (name, result.stderr)
        assert "Traceback" not in result.stderr and "secret" not in result.stderr
        assert "Redis" in lines[0] or "REDIS_URL" in lines[0], name


def _side_by_side(
    stack: Stack, cases: dict[str, tuple[list[str], str]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(len(cases)) as pool:
        futures = {
            name: pool.submit(cli, *command, env=stack.env(REDIS_URL=url.format(port=free_port())), timeout=30)
            for name, (command, url) in cases.items()
        }
        return {name: f.result() for name, f in futures.items()}


async def test_sigterm_hands_the_ticket_to_another_worker_at_once(stack: Stack, tmp_path: Path) -> None:
    # A lease this long would keep the ticket 30 s from anyone if the worker just vanished.
    lease = {"LEASE_SECONDS": "30"}
    steps: list[dict[str, object]] = []
    for i in range(20):
        steps += [{"message": f"step {i}"}, {"sleep": 0.4}]
    stack.agents.set_scenario({"rules": [{"match": None, "steps": steps}]})
    workers = {
        name: stack.start_process("worker", log_path=tmp_path / f"{name}.log", WORKER_ID=name, **lease)
        for name in ("worker-1", "worker-2")
    }
    stack.start_process("web", log_path=tmp_path / "web.log", **lease)
    for name in workers:
        wait_started(tmp_path / f"{name}.log")
    ts = await stack.slack.user_posts(SUPPORT, "long job")
    await eventually(lambda: "step 1" in "\n".join(bot_replies(stack, ts)), timeout=30)
    holder = next(
        name for name in workers
        if any(line.get("msg") == "following ticket" for line in log_lines(tmp_path / f"{name}.log"))
    )
    other = next(name for name in workers if name != holder)
    assert "step 19" not in "\n".join(bot_replies(stack, ts))  # still mid-turn
    proc = workers[holder].proc
    assert proc is not None
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0

    def taken_over() -> bool:
        return any(
            line.get("msg") == "following ticket" and line.get("reason") == "takeover"
            for line in log_lines(tmp_path / f"{other}.log")
        )

    await eventually(taken_over, timeout=15)
    assert time.monotonic() - stopped_at < 15  # not the 30 s of lease expiry
    await eventually(lambda: "step 19" in "\n".join(bot_replies(stack, ts)), timeout=30)
    await asyncio.sleep(0.5)
    text = "\n".join(bot_replies(stack, ts))
    for i in range(20):
        assert len(re.findall(rf"\bstep {i}\b", text)) == 1, text  # each once: the hand-off doubles nothing
    assert any(line.get("msg") == "tickets handed off" for line in log_lines(tmp_path / f"{holder}.log"))
    remaining = workers[other].proc
    assert remaining is not None and remaining.poll() is None
