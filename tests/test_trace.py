"""`support-agent trace`: a ticket's timeline from the session history joined with our records.

The session runs in the Managed Agents emulator (real anthropic client over HTTP); the ticket,
its transitions, the cost ledger, the approver, a Slack stream rotation and a worker takeover
live in a real Redis. The CLI is run in-process through `app.cli.main` with its settings in the
environment.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from app.cli import main
from app.config.model import load_config
from app.cost.ledger import CostLedger
from app.redis_conn import EmbeddedRedis, connect
from app.sandbox.agents import AgentsEmulator
from app.sandbox.app_runner import ROOT
from app.tickets.model import Ticket, TicketState
from app.tickets.store import TicketStore
from app.trace import record
from app.trace.lookup import TicketNotFound, find_ticket, parse_slack_link

API_KEY = "sk-ant-trace-test-key"
MCP_SECRET = "mcp-internal-secret-value-42"
TEAM, CHANNEL, THREAD = "T0001", "C0001", "1700000000.123456"
ROTATED_TS = "1700000000.000100"
ROTATION = f"Slack stream rotated after 4m 30s (message {ROTATED_TS})"

SCENARIO = {"rules": [{"match": None, "steps": [
    {"thinking": {}},
    {"tool": "bash", "input": {"command": "curl -H 'Authorization: Bearer abcdefghijklmnop' x", "api_key": "k1"},
     "result": f"token is {MCP_SECRET}; key {API_KEY}"},
    {"mcp_tool": "search_docs", "server": "knowledge_base", "input": {"q": "reset password"},
     "permission": "ask", "result": "Use the reset link."},
    {"error": "model_overloaded_error", "retry_status": "retrying"},
    {"custom_tool": "escalate_to_human", "input": {"summary": "needs a human"}},
    {"usage": {"input_tokens": 1200, "output_tokens": 300, "active_seconds": 12}},
    {"message": "Use the reset link on the sign-in page."},
    # A denied call ends the turn with its on_deny steps.
    {"mcp_tool": "delete_account", "server": "knowledge_base", "input": {"user": "U0001"}, "permission": "ask",
     "on_deny": [{"message": "I was not allowed to delete the account."}]},
]}]}


@pytest.fixture
def world(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    import redis as sync_redis

    sync_redis.Redis.from_url(redis_server.url).flushall()
    emulator = AgentsEmulator(api_key=API_KEY).start()
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.url)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("SUPPORT_AGENT_CONFIG", str(ROOT / "support-agent.yml"))
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", MCP_SECRET)
    monkeypatch.setenv("ANTHROPIC_CONSOLE_WORKSPACE", "support-ws")
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield {"emulator": emulator, "redis_url": redis_server.url}
    finally:
        emulator.stop()


async def _drive(client: Any, session_id: str, approvals: dict[str, str]) -> list[Any]:
    """Send the question, answer each confirmation (by tool name) and custom tool, until end_turn."""
    await client.beta.sessions.events.send(
        session_id, events=[{"type": "user.message", "content": [{"type": "text", "text": "reset my password"}]}]
    )
    answered: set[str] = set()
    for _ in range(200):
        await asyncio.sleep(0.05)
        events = [e async for e in client.beta.sessions.events.list(session_id)]
        last = events[-1]
        if last.type != "session.status_idle":
            continue
        if last.stop_reason.type != "requires_action":
            return events
        for event_id in last.stop_reason.event_ids:
            if event_id in answered:
                continue
            answered.add(event_id)
            use = next(e for e in events if e.id == event_id)
            if use.type == "agent.custom_tool_use":
                await client.beta.sessions.events.send(session_id, events=[{
                    "type": "user.custom_tool_result", "custom_tool_use_id": event_id,
                    "content": [{"type": "text", "text": "escalated to #support-triage"}],
                }])
            else:
                result = approvals[use.name]
                confirmation: dict[str, Any] = {"type": "user.tool_confirmation", "tool_use_id": event_id,
                                                "result": result}
                if result == "deny":
                    confirmation["deny_message"] = "Not without a manager."
                await client.beta.sessions.events.send(session_id, events=[confirmation])
    raise AssertionError("the session did not finish its turn")


async def make_ticket(emulator: AgentsEmulator, redis_url: str) -> Ticket:
    """A worked ticket: tool calls (built-in, MCP, custom), an approval and a denial with their
    approver, an error, ledger costs, a Slack stream rotation and a takeover by a second worker."""
    emulator.set_scenario(SCENARIO)
    client = emulator.client(max_retries=0)
    redis = connect(redis_url)
    try:
        agent = await client.beta.agents.create(name="support-agent", model="claude-sonnet-4-6")
        env = await client.beta.environments.create(name="support-internal")
        session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
        store = TicketStore(redis)
        ticket, _ = await store.open_ticket(
            team_id=TEAM, channel_id=CHANNEL, thread_ts=THREAD, requester_id="U0001",
            environment="internal", title="reset my password",
        )
        ticket.session_id = session.id
        await store.save(ticket)
        await record.record_follow(redis, ticket.id, worker="worker-a", reason="message", fence=1)
        ticket = await store.transition(ticket, TicketState.WORKING, "agent running")

        # The approver's click is recorded by the approval handler before it confirms.
        async def approve_hook() -> None:
            for _ in range(200):
                events = [e async for e in client.beta.sessions.events.list(session.id)]
                for e in events:
                    if e.type == "agent.mcp_tool_use" and e.evaluated_permission == "ask":
                        result = "allow" if e.name == "search_docs" else "deny"
                        await record.record_approval(redis, ticket.id, e.id, actor="U0002", result=result,
                                                     reason=None if result == "allow" else "Not without a manager.")
                if sum(1 for e in events if e.type == "agent.mcp_tool_use") >= 2:
                    return
                await asyncio.sleep(0.02)

        hook = asyncio.create_task(approve_hook())
        events = await _drive(client, session.id, {"search_docs": "allow", "delete_account": "deny"})
        await hook
        usage_event = next(e for e in events if e.type == "session.usage")
        config = load_config(ROOT / "support-agent.yml")
        ledger = CostLedger(redis, config.pricing)
        await ledger.record_snapshot(ticket, model="claude-sonnet-4-6", usage_snapshot=usage_event.usage,
                                     source_event_id=usage_event.id, at=usage_event.processed_at)
        await ledger.close_turn(ticket.id)
        # The renderer rotated the turn's Slack stream (the worker records it like this).
        await record.record_stream(redis, ticket.id, event="rotated",
                                   detail={"ts": ROTATED_TS, "age_seconds": 270.0})
        # The first worker died; another took the ticket over.
        await record.record_follow(redis, ticket.id, worker="worker-b", reason="takeover", fence=2)
        ticket = await store.transition(ticket, TicketState.WAITING_REQUESTER, "agent answered")
        return ticket
    finally:
        await redis.aclose()
        await client.close()


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["trace", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _no_secrets(text: str) -> None:
    for secret in (API_KEY, MCP_SECRET, "abcdefghijklmnop"):
        assert secret not in text


def test_trace_in_three_formats(world: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    ticket = asyncio.run(make_ticket(world["emulator"], world["redis_url"]))

    code, out, err = run_cli(capsys, "#1", "--format", "json")
    assert code == 0, err
    _no_secrets(out)
    doc = json.loads(out)
    assert doc["ticket"]["id"] == ticket.id and doc["ticket"]["state"] == "waiting_requester"
    assert doc["console_url"] == f"https://platform.claude.com/workspaces/support-ws/sessions/{ticket.session_id}"
    entries = doc["entries"]
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    kinds = [e["kind"] for e in entries]

    # Our record and the session's history, in order.
    assert kinds[0] == "ticket" and entries[0]["summary"] == "ticket opened by U0001"
    assert kinds.index("worker") < kinds.index("user_message") < kinds.index("tool_call")
    assert kinds.index("takeover") > max(i for i, k in enumerate(kinds) if k == "turn")
    assert entries[-1]["kind"] == "ticket" and entries[-1]["detail"]["to"] == "waiting_requester"
    assert entries[kinds.index("takeover")]["detail"] == {"worker": "worker-b", "reason": "takeover", "fence": 2}
    # The stream rotation, in time order between the turn's end and the takeover.
    assert kinds.count("stream") == 1
    assert max(i for i, k in enumerate(kinds) if k == "turn") < kinds.index("stream") < kinds.index("takeover")
    rotation = entries[kinds.index("stream")]
    assert rotation["summary"] == ROTATION and rotation["source"] == "slack" and rotation["turn"] is None
    assert rotation["detail"] == {"event": "rotated", "ts": ROTATED_TS, "age_seconds": 270.0}
    assert rotation["at"] is not None

    tools = {e["detail"]["label"]: e for e in entries if e["kind"] == "tool_call"}
    assert list(tools) == ["bash", "knowledge_base.search_docs", "escalate_to_human",
                           "knowledge_base.delete_account"]
    bash = tools["bash"]["detail"]
    assert bash["tool_kind"] == "builtin" and bash["status"] == "ok" and bash["duration_seconds"] is not None
    assert bash["input"]["api_key"] == "[redacted]" and "[redacted]" in bash["input"]["command"]
    assert bash["result"] == "token is [redacted]; key [redacted]"
    search = tools["knowledge_base.search_docs"]["detail"]
    assert search["tool_kind"] == "mcp" and search["server"] == "knowledge_base" and search["status"] == "ok"
    assert search["result"] == "Use the reset link." and search["permission"] == "ask"
    assert search["approval"]["result"] == "allow" and search["approval"]["actor"] == "U0002"
    assert search["approval"]["decided_at"] and search["approval"]["wait_seconds"] is not None
    assert search["duration_seconds"] >= search["approval"]["wait_seconds"]
    delete = tools["knowledge_base.delete_account"]
    assert delete["detail"]["status"] == "denied" and delete["detail"]["approval"]["actor"] == "U0002"
    assert delete["detail"]["approval"]["deny_message"] == "Not without a manager."
    assert "denied by U0002" in delete["summary"]
    custom = tools["escalate_to_human"]["detail"]
    assert custom["tool_kind"] == "custom" and custom["result"] == "escalated to #support-triage"

    approvals = [e for e in entries if e["kind"] == "approval"]
    assert [(a["detail"]["result"], a["actor"], a["detail"]["tool"]) for a in approvals] == [
        ("allow", "U0002", "knowledge_base.search_docs"), ("deny", "U0002", "knowledge_base.delete_account"),
    ]
    errors = [e for e in entries if e["kind"] == "error"]
    assert len(errors) == 1 and errors[0]["detail"]["retry_status"] == "retrying"
    assert errors[0]["detail"]["type"] == "model_overloaded_error"
    assert "rescheduling" in [e["detail"].get("status") for e in entries if e["kind"] == "status"]
    assert [e["detail"]["stop_reason"] for e in entries if e["kind"] == "status" and e["detail"]["status"] == "idle"
            ] == ["requires_action", "requires_action", "requires_action", "end_turn"]

    turns = [e for e in entries if e["kind"] == "turn"]
    assert len(turns) == 1
    turn = turns[0]["detail"]
    assert turn["usage_source"] == "ledger" and turn["input_tokens"] == 1200 and turn["output_tokens"] == 300
    assert turn["active_seconds"] == 12.0 and float(turn["cost_usd"]) > 0
    assert turn["ticket_total_usd"] == doc["totals"]["cost_usd"]
    assert [e["detail"]["text"] for e in entries if e["kind"] == "agent_message"] == [
        "Use the reset link on the sign-in page.", "I was not allowed to delete the account.",
    ]
    for e in entries:
        if e["kind"] in ("user_message", "agent_message", "tool_call", "approval", "status", "error", "turn"):
            assert e["turn"] == 1

    # JSON Lines: the same entries, one per line, each naming its ticket.
    code, out_jsonl, err = run_cli(capsys, f"{TEAM}#1", "--format", "jsonl")
    assert code == 0, err
    _no_secrets(out_jsonl)
    lines = out_jsonl.strip().splitlines()
    assert len(lines) == len(entries)
    records = [json.loads(line) for line in lines]
    assert [r["kind"] for r in records] == kinds
    assert all(r["ticket_id"] == ticket.id and r["session_id"] == ticket.session_id for r in records)
    assert [r["summary"] for r in records] == [e["summary"] for e in entries]
    (streamed,) = [r for r in records if r["kind"] == "stream"]
    assert streamed["summary"] == ROTATION and streamed["detail"] == rotation["detail"]
    assert streamed["at"] == rotation["at"] and streamed["ticket_id"] == ticket.id

    # Text: a header and one line per entry (plus indented details).
    code, text, err = run_cli(capsys, ticket.session_id or "")
    assert code == 0, err
    _no_secrets(text)
    # No Slack here, so no names: ids stay (tests/test_first_hour_sandbox.py reads names).
    assert text.startswith(f"Ticket #1 ({ticket.id}) · waiting on requester · environment internal · "
                           "requester U0001")
    assert f"https://platform.claude.com/workspaces/support-ws/sessions/{ticket.session_id}" in text
    body = [line for line in text.splitlines() if line[:4].isdigit()]
    assert len(body) == len(entries)
    assert any("TAKEOVER" in line and "worker-b" in line for line in body)
    assert [line[24:] for line in body if ROTATION in line] == [f"        stream    {ROTATION}"]
    assert any("ERROR" in line and "model_overloaded_error (retrying)" in line for line in body)
    assert any("knowledge_base.search_docs (MCP) · ok" in line and "approved by U0002" in line for line in body)
    assert any("approval  deny knowledge_base.delete_account by U0002" in line for line in body)
    assert any(" t1  turn      turn 1 ended (end_turn)" in line for line in body)


def test_thread_link_and_ticket_id_find_the_ticket(world: dict[str, Any],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    ticket = asyncio.run(make_ticket(world["emulator"], world["redis_url"]))
    link = f"https://acme.slack.com/archives/{CHANNEL}/p{THREAD.replace('.', '')}"
    for ref in (link, f"{link}?thread_ts={THREAD}&cid={CHANNEL}", ticket.id):
        code, out, err = run_cli(capsys, ref, "--format", "json")
        assert code == 0, (ref, err)
        assert json.loads(out)["ticket"]["id"] == ticket.id


def test_unknown_ticket_is_a_clear_error_with_exit_code_2(world: dict[str, Any],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "#7")
    assert code == 2 and out == "" and "no tickets yet" in err
    asyncio.run(make_ticket(world["emulator"], world["redis_url"]))
    for ref, message in (
        ("#7", "no ticket #7 in workspace T0001"),
        ("T0009#1", "no ticket #1 in workspace T0009"),
        ("sesn_nope", "no ticket has session sesn_nope"),
        ("https://x.slack.com/archives/C0001/p1700000000999999", "no ticket for the Slack thread"),
        ("what", "cannot read 'what' as a ticket"),
    ):
        code, out, err = run_cli(capsys, ref)
        assert code == 2 and out == "", ref
        assert message in err, (ref, err)


def test_trace_needs_the_anthropic_key(world: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    code, _out, err = run_cli(capsys, "#1")
    assert code == 1 and "ANTHROPIC_API_KEY" in err and "SLACK" not in err


def test_slack_links_parse() -> None:
    assert parse_slack_link("https://x.slack.com/archives/C123/p1700000000123456") == ("C123", "1700000000.123456")
    assert parse_slack_link(
        "<https://x.slack.com/archives/C123/p1700000000999999?thread_ts=1700000000.123456&cid=C123>"
    ) == ("C123", "1700000000.123456")
    assert parse_slack_link("#42") is None


async def test_several_workspaces_need_the_team(redis: Any) -> None:
    store = TicketStore(redis)
    for team in ("T1", "T2"):
        await store.open_ticket(team_id=team, channel_id="C1", thread_ts="1.1", requester_id="U1",
                                environment="internal", title="x")
    with pytest.raises(TicketNotFound, match="several workspaces"):
        await find_ticket(store, "#1")
    assert (await find_ticket(store, "T2#1")).team_id == "T2"
    assert (await find_ticket(store, "#1", team_id="T1")).team_id == "T1"

