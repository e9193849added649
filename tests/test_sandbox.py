"""`support-agent sandbox`: the command as a subprocess driven over HTTP, the real-agent mode
against an emulated "real" API, the sandbox's config, and `scripts/run`'s choice of what to start.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import yaml
from pydantic import SecretStr

from app.config.model import parse_config
from app.config.settings import Settings
from app.sandbox.agents import AgentsEmulator
from app.sandbox.app_runner import ROOT, free_port
from app.sandbox.page.local import LocalSandbox, sandbox_config

SUPPORT = "C0001"
ALICE = "U0001"
SECRET_VARS = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET",
               "SLACK_APP_TOKEN", "REDIS_URL", "SENTRY_DSN")


def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


@dataclass
class SandboxProcess:
    proc: subprocess.Popen[str]
    url: str
    lines: list[str]

    def get(self, path: str, **params: str) -> Any:
        response = httpx2.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx2.post(f"{self.url}{path}", json=body, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def thread(self, ts: str) -> list[dict[str, Any]]:
        return list(self.get("/api/state", channel=SUPPORT, thread=ts, user=ALICE)["thread"]["messages"])


def sandbox_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_VARS and not k.startswith("MCP_TOKEN_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_sandbox(data_dir: Path, *extra: str, cwd: Path = ROOT) -> SandboxProcess:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "sandbox", "--port", str(port), "--data-dir", str(data_dir), *extra],
        cwd=cwd, env=sandbox_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = re.search(r"Open (http://127\.0\.0\.1:\d+)", line)
            if match:
                found.put(match.group(1))

    threading.Thread(target=read, daemon=True).start()
    try:
        url = found.get(timeout=60)
    except queue.Empty:
        proc.kill()
        raise AssertionError("the sandbox printed no URL:\n" + "".join(lines)) from None
    return SandboxProcess(proc, url, lines)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    running = start_sandbox(tmp_path / "sandbox")
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(10)


def bot_turns(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bot messages that are finished streamed turns."""
    return [m for m in messages if m.get("stream") and m["stream"]["state"] == "stopped"]


def action_ids(message: dict[str, Any]) -> list[str]:
    return [e.get("action_id", "") for b in message.get("blocks") or [] for e in b.get("elements") or []]


def test_sandbox_command_serves_the_page_and_the_whole_ticket_flow(sandbox: SandboxProcess, tmp_path: Path) -> None:
    out = "".join(sandbox.lines)
    assert "Slack is emulated" in out and "No ANTHROPIC_API_KEY" in out and sandbox.url in out
    page = httpx2.get(sandbox.url, timeout=10)
    assert page.status_code == 200 and "support-agent sandbox" in page.text and "/static/sandbox.js" in page.text
    for asset in ("/static/sandbox.js", "/static/sandbox.css"):
        assert httpx2.get(f"{sandbox.url}{asset}", timeout=10).status_code == 200
    info = sandbox.get("/api/info")
    assert info["mode"] == "demo" and "scripted demo" in info["agent_note"] and info["mcp_available"]
    assert info["bot"] == {"id": "UBOT", "name": "support-agent"}

    # Mention the bot: the demo agent searches the knowledge base over MCP and streams an answer.
    ts = sandbox.post("/api/post", {"channel": SUPPORT, "text": "@support-agent how do refunds work?",
                                    "user": ALICE})["ts"]
    root = sandbox.thread(ts)[0]
    assert root["text"] == "<@UBOT> how do refunds work?"
    [turn] = eventually(lambda: bot_turns(sandbox.thread(ts)))
    assert "30 days" in turn["stream"]["text"]
    [task] = turn["stream"]["tasks"].values()
    assert "knowledge_base" in task["title"] and task["status"] == "complete"
    ids = action_ids(turn)
    assert "feedback" in ids and "ticket_resolve" in ids and "ticket_stop" not in ids
    footer = [b for b in turn["blocks"] if b["type"] == "context"]
    assert footer and "$" in footer[-1]["elements"][0]["text"]
    channel = sandbox.get("/api/state", channel=SUPPORT, user=ALICE)["messages"]
    assert [m["ts"] for m in channel] == [ts] and channel[0]["reply_count"] >= 1

    # A reply in the thread continues the ticket.
    sandbox.post("/api/post", {"channel": SUPPORT, "text": "and where are my invoices?", "user": ALICE,
                               "thread_ts": ts})
    turns = eventually(lambda: len(t := bot_turns(sandbox.thread(ts))) == 2 and t)
    assert "Invoices" in turns[1]["stream"]["text"]

    # Feedback and Resolve go through the emulator's clicks to the app.
    assert sandbox.post("/api/click", {"channel": SUPPORT, "ts": turns[1]["ts"], "action_id": "feedback",
                                       "value": turns[1]["blocks"][0]["elements"][0]["negative_button"]["value"],
                                       "user": ALICE})["status"] == 200
    sandbox.post("/api/click", {"channel": SUPPORT, "ts": turns[1]["ts"], "action_id": "ticket_resolve",
                                "user": ALICE})
    resolved = eventually(lambda: [m for m in sandbox.thread(ts) if "ticket_reopen" in action_ids(m)])
    assert "resolved" in resolved[0]["text"].lower()

    # Ctrl-C stops everything cleanly.
    sandbox.proc.send_signal(signal.SIGINT)
    assert sandbox.proc.wait(30) == 0
    assert "stopping" in "".join(sandbox.lines)
    assert (tmp_path / "sandbox" / "sandbox.log").stat().st_size > 0


def test_sandbox_page_api_slash_commands_reactions_and_approvals(sandbox: SandboxProcess) -> None:
    # /support status answers ephemerally, as Slack would.
    assert sandbox.post("/api/post", {"channel": SUPPORT, "text": "/support status", "user": ALICE})["command"]
    eventually(lambda: sandbox.get("/api/state", channel=SUPPORT, user=ALICE)["ephemerals"])

    # Past tickets: the tool call waits for Approve / Deny; alice (staff) approves.
    ts = sandbox.post("/api/post", {"channel": SUPPORT, "text": "@support-agent please check past tickets about SSO",
                                    "user": ALICE})["ts"]
    ask = eventually(lambda: [m for m in sandbox.thread(ts) if "tool_approve" in action_ids(m)])
    sandbox.post("/api/click", {"channel": SUPPORT, "ts": ask[0]["ts"], "action_id": "tool_approve", "user": ALICE})
    eventually(lambda: [m for m in bot_turns(sandbox.thread(ts)) if "ticket_history" in m["stream"]["text"]])

    # A slow answer, stopped with a ❌ reaction on the question.
    slow = sandbox.post("/api/post", {"channel": SUPPORT, "text": "@support-agent give me a slow answer",
                                      "user": ALICE})["ts"]
    eventually(lambda: [m for m in sandbox.thread(slow) if m.get("stream", {}).get("text")])
    assert sandbox.post("/api/react", {"channel": SUPPORT, "ts": slow, "name": "x", "user": ALICE})["status"] == 200
    stopped = eventually(lambda: [m for m in sandbox.thread(slow) if "stopped the agent" in m.get("text", "")])
    assert "ticket_resolve" in action_ids(stopped[0])
    root = sandbox.thread(slow)[0]
    assert root["reactions"] == [{"name": "x", "users": [ALICE], "count": 1}]

    # Bad requests are refused, not crashed on.
    assert httpx2.post(f"{sandbox.url}/api/post", json={"text": "  "}, timeout=10).status_code == 400
    assert httpx2.post(f"{sandbox.url}/api/click", json={"ts": "1.2", "action_id": "nope"},
                       timeout=10).status_code == 404


def home_of(sandbox: SandboxProcess, user: str = ALICE) -> dict[str, Any] | None:
    home: dict[str, Any] | None = sandbox.get("/api/state", channel=SUPPORT, user=user, home="1")["home"]
    return home


def republished(sandbox: SandboxProcess, before: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """Use an element of the Home through the page's API; the view the app publishes in answer."""
    assert sandbox.post("/api/view/action", {"view_id": before["id"], "user": ALICE, **body})["status"] == 200
    after: dict[str, Any] = eventually(lambda: (h := home_of(sandbox)) and h["hash"] != before["hash"] and h)
    assert after["id"] == before["id"]
    return after


def filters_of(home: dict[str, Any]) -> dict[str, dict[str, Any]]:
    [block] = [b for b in home["blocks"] if b.get("block_id") == "home_filters"]
    return {e["action_id"]: e for e in block["elements"]}


def ticket_rows(home: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in home["blocks"] if str(b.get("block_id", "")).startswith("ticket:")]


def test_sandbox_page_opens_the_app_home_filters_it_and_traces_a_ticket(sandbox: SandboxProcess) -> None:
    ts = sandbox.post("/api/post", {"channel": SUPPORT, "text": "@support-agent how do refunds work?",
                                    "user": ALICE})["ts"]
    eventually(lambda: bot_turns(sandbox.thread(ts)))
    assert "home" not in sandbox.get("/api/state", channel=SUPPORT, user=ALICE)
    assert home_of(sandbox) is None  # nothing published before the tab is opened

    # Opening Home sends app_home_opened; the app publishes alice's (staff) ticket list.
    assert sandbox.post("/api/home", {"user": ALICE})["status"] == 200
    home = eventually(lambda: home_of(sandbox))
    assert home["user_id"] == ALICE and home["blocks"][0]["text"]["text"] == "Tickets"
    [row] = ticket_rows(home)
    link = f"https://emulated.slack.com/archives/{SUPPORT}/p{ts.replace('.', '')}"
    assert row["text"]["text"].startswith(f"*<{link}|#1>* how do refunds work?")
    assert f"<@{ALICE}>" in row["text"]["text"] and f"<#{SUPPORT}>" in row["text"]["text"]
    assert row["accessory"]["action_id"] == "ticket_trace" and row["block_id"] == f"ticket:{row['accessory']['value']}"
    assert filters_of(home)["home_filter_status"]["initial_option"]["value"] == "all"
    assert "initial_conversation" not in filters_of(home)["home_filter_channel"]

    # The status menu: only resolved tickets, none yet.
    home = republished(sandbox, home, {"action_id": "home_filter_status", "selected_option": "resolved"})
    assert filters_of(home)["home_filter_status"]["initial_option"]["value"] == "resolved"
    assert ticket_rows(home) == [] and "Resolved (0)" in str(home["blocks"])

    # The channel menu on top of "all": #general has no tickets; "Any channel" (no choice) lists it again.
    home = republished(sandbox, home, {"action_id": "home_filter_status", "selected_option": "all"})
    home = republished(sandbox, home, {"action_id": "home_filter_channel", "selected_conversation": "C0002"})
    assert filters_of(home)["home_filter_channel"]["initial_conversation"] == "C0002"
    assert ticket_rows(home) == [] and "home_filter_all_channels" in filters_of(home)
    home = republished(sandbox, home, {"action_id": "home_filter_channel", "selected_conversation": None})
    assert "initial_conversation" not in filters_of(home)["home_filter_channel"]
    [row] = ticket_rows(home)

    # The row's Trace button (every row shares its action id, so the block id says which) opens
    # the trace modal, filled in once the app has read the ticket.
    assert sandbox.post("/api/view/action", {"view_id": home["id"], "user": ALICE, "action_id": "ticket_trace",
                                             "block_id": row["block_id"]})["status"] == 200

    def trace() -> Any:
        modals = sandbox.get("/api/state", channel=SUPPORT, user=ALICE)["modals"]
        return [m for m in modals if "Reading ticket" not in str(m["blocks"])]

    [modal] = eventually(trace)
    assert modal["title"]["text"] == "Trace #1" and modal["hash"]
    assert modal["blocks"][0]["text"]["text"].startswith("*Ticket #1* · ") and "how do refunds work?" in str(modal)

    # Each user has their own Home: bob is not staff and gets the guest view.
    assert sandbox.post("/api/home", {"user": "U0002"})["status"] == 200
    bob = eventually(lambda: home_of(sandbox, "U0002"))
    assert bob["id"] != home["id"] and "I'm the support bot" in str(bob["blocks"]) and ticket_rows(bob) == []

    # Bad requests are refused, not crashed on.
    for path, body, status in [
        ("/api/home", {"user": "U9999"}, 404),
        ("/api/view/action", {"view_id": "V404", "action_id": "home_refresh"}, 404),
        ("/api/view/action", {"view_id": home["id"], "action_id": "nope"}, 404),
        ("/api/view/action", {"view_id": home["id"], "action_id": "home_filter_status", "selected_option": "x"}, 404),
        ("/api/view/action", {"action_id": "home_refresh"}, 400),
    ]:
        assert httpx2.post(f"{sandbox.url}{path}", json=body, timeout=10).status_code == status, (path, body)


@pytest.mark.parametrize("bridge", [False, True], ids=["no-bridge", "bridge"])
def test_real_agent_mode_emulates_only_slack_and_keeps_mcp_off_the_cloud_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bridge: bool
) -> None:
    """With ANTHROPIC_API_KEY the sandbox talks to the configured API (here an emulator standing in
    for the real one, so no test touches the internet). The cloud cannot reach our MCP servers on
    127.0.0.1: they are bridged when the build can, else the page says MCP tools are unavailable."""
    for var in ("MCP_TOKEN_INTERNAL", "MCP_TOKEN_CUSTOMERS"):
        monkeypatch.setenv(var, "")  # the sandbox mints its own; restored afterwards
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr("app.sandbox.page.local.bridge_available", lambda: bridge)
    with AgentsEmulator(api_key="sk-ant-real-looking") as cloud:
        cloud.set_scenario({"rules": [{"match": None, "steps": [{"message": "Hello from the cloud"}]}]})
        settings = Settings(_env_file=None, anthropic_api_key=SecretStr("sk-ant-real-looking"),  # type: ignore[call-arg]
                            anthropic_base_url=cloud.url, config_path=ROOT / "support-agent.yml",
                            slack_app_token=SecretStr("xapp-should-be-ignored"))
        with LocalSandbox(settings, data_dir=tmp_path / "sb") as sandbox:
            assert sandbox.info is not None and sandbox.info.mode == "real" and sandbox.app is not None
            assert sandbox.info.mcp_available is bridge
            assert ("bridged" in sandbox.info.mcp_note) is bridge
            assert ("MCP tools are unavailable" in sandbox.info.mcp_note) is not bridge
            config = sandbox.app.config
            assert config.public_base_url is None
            kb = config.environments["internal"].mcp_servers["knowledge_base"]
            assert kb.bridged and kb.url == f"{sandbox.app.url}/mcp/knowledge_base"
            info = httpx2.get(f"{sandbox.url}/api/info", timeout=10).json()
            assert info["mode"] == "real" and "real" in info["agent_note"]
            ts = httpx2.post(f"{sandbox.url}/api/post", json={"text": "@support-agent hi", "user": ALICE},
                             timeout=10).json()["ts"]

            def answered() -> Any:
                state = httpx2.get(f"{sandbox.url}/api/state", params={"thread": ts}, timeout=10).json()
                return [m for m in state["thread"]["messages"] if "Hello from the cloud" in m.get("text", "")]

            eventually(answered)
            made = [r["body"] for r in cloud.state.request_log() if r["method"] == "POST" and r["path"] == "/v1/agents"]
            assert [a["name"] for a in made] == ["support-agent-sandbox-internal"]
            assert made[0]["mcp_servers"] == []
            assert sandbox.stack is not None and sandbox.stack.agents.state.sessions_snapshot() == []


def test_sandbox_config_suffixes_names_sets_the_public_url_or_bridges() -> None:
    source = ROOT / "support-agent.yml"
    demo = parse_config(sandbox_config(source, public_base_url="http://127.0.0.1:4000", bridge_to=None,
                                       staff=[ALICE]))
    assert demo.agent.name == "support-agent-sandbox"
    assert demo.public_base_url == "http://127.0.0.1:4000"
    assert demo.environments["internal"].managed_environment.name == "support-internal-sandbox"
    assert ALICE in demo.slack.staff.users
    assert not any(s.bridged or s.url for e in demo.environments.values() for s in e.mcp_servers.values())
    real = parse_config(sandbox_config(source, public_base_url=None, bridge_to="http://127.0.0.1:4001/",
                                       staff=[ALICE]))
    assert real.public_base_url is None
    for env in real.environments.values():
        for name, server in env.mcp_servers.items():
            assert server.bridged and server.url == f"http://127.0.0.1:4001/mcp/{name}"
    # Everything else is the project's own config.
    original = yaml.safe_load(source.read_text())
    assert real.agent.system == original["agent"]["system"]
    assert set(real.environments) == set(original["environments"])


# -- scripts/run: the sandbox without Slack credentials, the service with them ---------------------


@pytest.fixture
def fake_checkout(tmp_path: Path) -> Path:
    """scripts/run in a folder whose setup does nothing and whose CLI prints its arguments."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run", tmp_path / "scripts" / "run")
    (tmp_path / "scripts" / "setup").write_text("#!/usr/bin/env bash\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "support-agent").write_text('#!/usr/bin/env bash\necho "CLI: $*"\n')
    for script in ("scripts/run", "scripts/setup", ".venv/bin/support-agent"):
        (tmp_path / script).chmod(0o755)
    return tmp_path


def run_script(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRET_VARS}
    return subprocess.run([str(checkout / "scripts" / "run"), *args], env={**clean, **env},
                          capture_output=True, text=True, timeout=30)


def test_run_starts_the_sandbox_without_slack_credentials(fake_checkout: Path) -> None:
    done = run_script(fake_checkout, "--port", "9000")
    assert done.returncode == 0, done.stderr
    assert "CLI: sandbox --port 9000" in done.stdout
    assert "No Slack credentials" in done.stdout + done.stderr


def test_run_starts_the_sandbox_when_env_holds_only_the_example_placeholder(fake_checkout: Path) -> None:
    (fake_checkout / ".env").write_text("SLACK_BOT_TOKEN=xoxb-...\nANTHROPIC_API_KEY=\n")
    assert "CLI: sandbox" in run_script(fake_checkout).stdout


@pytest.mark.parametrize("where", ["env", "dotenv"])
def test_run_starts_the_service_with_slack_credentials(fake_checkout: Path, where: str) -> None:
    if where == "dotenv":
        (fake_checkout / ".env").write_text("# comment\nexport SLACK_BOT_TOKEN = 'xoxb-1234-abcd'\n")
        done = run_script(fake_checkout, "--port", "3001")
    else:
        done = run_script(fake_checkout, "--port", "3001", SLACK_BOT_TOKEN="xoxb-1234-abcd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "CLI: run --port 3001"
