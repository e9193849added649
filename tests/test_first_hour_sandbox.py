"""Issue 17 items 8, 10 and 11 through a running sandbox: the CLI finds the sandbox's data on
its own (`costs`, `trace '#1'`), people and channels read by name, the knowledge-base query after
a Reopen is the requester's topic (never the reopen prompt), the printed MCP URLs answer and
the sandbox log names the app's real port."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from app.cli import main
from app.config.settings import Settings
from app.sandbox.app_runner import ROOT
from app.sandbox.page.local import LocalSandbox

SUPPORT, ALICE, BOB = "C0001", "U0001", "U0002"


def eventually(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSandbox]:
    """A sandbox started as a newcomer would, from a folder with no settings at all."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.chdir(tmp_path)
    for name in ("REDIS_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "SLACK_BOT_TOKEN", "SLACK_API_URL",
                 "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN", "SUPPORT_AGENT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", "sandbox-internal-token-0123456789")
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", "sandbox-customers-token-0123456789")
    settings = Settings(_env_file=None, config_path=ROOT / "support-agent.yml")  # type: ignore[call-arg]
    sandbox = LocalSandbox(settings, data_dir=Path("var/sandbox"))
    try:
        yield sandbox.start()
    finally:
        sandbox.stop()
        root.handlers[:] = handlers
        root.setLevel(level)


def page(sandbox: LocalSandbox, path: str, body: dict[str, Any] | None = None, **params: str) -> Any:
    if body is None:
        response = httpx2.get(f"{sandbox.url}{path}", params=params, timeout=10)
    else:
        response = httpx2.post(f"{sandbox.url}{path}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def thread(sandbox: LocalSandbox, ts: str) -> list[dict[str, Any]]:
    return list(page(sandbox, "/api/state", channel=SUPPORT, thread=ts, user=ALICE)["thread"]["messages"])


def turns(sandbox: LocalSandbox, ts: str) -> list[dict[str, Any]]:
    return [m for m in thread(sandbox, ts) if m.get("stream") and m["stream"]["state"] == "stopped"]


def with_action(sandbox: LocalSandbox, ts: str, action_id: str) -> list[dict[str, Any]]:
    return [m for m in thread(sandbox, ts) if action_id in json.dumps(m.get("blocks") or [])]


def test_the_cli_reads_the_running_sandbox_and_shows_names(
    running: LocalSandbox, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox = running
    assert sandbox.app is not None and sandbox.info is not None
    # Start-up says true things: every MCP URL printed answers (401 without a token, not 404),
    # and the log names the port the app really listens on.
    urls = re.findall(r"http://127\.0\.0\.1:\d+/mcp/\w+", sandbox.info.mcp_note)
    assert sorted(u.rsplit("/", 1)[1] for u in urls) == ["knowledge_base", "ticket_history"]
    for url in urls:
        answer = httpx2.get(url, timeout=10)
        assert answer.status_code == 401 and "Bearer" in answer.headers["www-authenticate"], url
    listening = [json.loads(line) for line in sandbox.log_path.read_text().splitlines() if '"web listening"' in line]
    assert [entry["port"] for entry in listening] == [sandbox.app.port]
    assert (Path("var/sandbox") / "connection.env").is_file()

    # bob asks, alice resolves, bob reopens: a new session gets the thread and answers again.
    ts = page(sandbox, "/api/post", {"channel": SUPPORT, "text": "@support-agent how do refunds work?",
                                     "user": BOB})["ts"]
    [first] = eventually(lambda: turns(sandbox, ts))
    page(sandbox, "/api/click", {"channel": SUPPORT, "ts": first["ts"], "action_id": "ticket_resolve",
                                 "user": ALICE})
    reopen = eventually(lambda: with_action(sandbox, ts, "ticket_reopen"))
    page(sandbox, "/api/click", {"channel": SUPPORT, "ts": reopen[-1]["ts"], "action_id": "ticket_reopen",
                                 "user": BOB})
    again = eventually(lambda: len(t := turns(sandbox, ts)) == 2 and t)[1]
    [search] = again["stream"]["tasks"].values()
    assert "refunds and cancellations" in search["title"] and "reopened" not in search["title"]

    # App Home -> Trace: the modal reads by name too (state label, dollars, @people).
    page(sandbox, "/api/home", {"user": ALICE})
    home = eventually(lambda: page(sandbox, "/api/state", channel=SUPPORT, user=ALICE, home="1")["home"])
    [row] = [b for b in home["blocks"] if str(b.get("block_id", "")).startswith("ticket:")]
    assert "<@U0002>" in row["text"]["text"] and "<#C0001>" in row["text"]["text"]  # Slack shows names
    page(sandbox, "/api/view/action", {"view_id": home["id"], "user": ALICE, "action_id": "ticket_trace",
                                       "block_id": row["block_id"]})
    [modal] = eventually(lambda: [m for m in page(sandbox, "/api/state", channel=SUPPORT, user=ALICE)["modals"]
                                  if "Reading ticket" not in str(m["blocks"])])
    head = modal["blocks"][0]["text"]["text"]
    assert "· waiting on requester ·" in head and re.search(r"cost \$0\.\d\d(?!\d)", head), head
    assert "ticket opened by @bob" in str(modal) and "resolved by @alice" in str(modal)

    # `costs` from this folder, with no settings: the sandbox's ledger, by name.
    assert main(["costs"]) == 0
    out, err = capsys.readouterr()
    assert "reading the sandbox running in var/sandbox" in err
    row = out.splitlines()[1].split()
    assert row[:4] == ["#1", "#support", "internal", "2"], out  # both turns costed, across sessions

    # `trace '#1'`: names, state labels and dollars a person reads; no log lines.
    assert main(["trace", "#1"]) == 0
    text, err = capsys.readouterr()
    assert not [line for line in err.splitlines() if line.startswith("{")], err
    header = text.split("\n\n", 1)[0]
    assert "· waiting on requester · environment internal · requester @bob" in header
    assert "Slack: #support thread" in header and re.search(r"Cost: \$0\.\d\d over 2 turns", header)
    assert "2 tool calls ·" in header  # one per session
    for said in ("ticket opened by @bob", "resolved by @alice", "reopened by @bob", "[@bob] @support-agent"):
        assert said in text, said
    assert "U0002" not in text.replace(header, "") and "$0.000000" not in text
    # Both sessions are in the timeline: the first one's turn, then the one after the Reopen.
    assert " t1  turn      turn 1 ended" in text and " t2  turn      turn 2 ended" in text
    assert text.count("agent session sesn_") == 2 and "(a new session after a Reopen)" in text
    assert '"query": "how do refunds work?"' in text and '"query": "refunds and cancellations"' in text

    # Stopped, the sandbox leaves no connection behind, and asking for it says so.
    sandbox.stop()
    assert not (Path("var/sandbox") / "connection.env").exists()
    assert main(["costs", "--sandbox", "var/sandbox"]) == 1
    assert "no sandbox is running with data folder var/sandbox" in capsys.readouterr().err
