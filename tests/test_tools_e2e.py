"""Tools end to end: provision, the agent calling our knowledge_base over HTTP with its vault
credential, Approve / Deny in the thread, and a canary secret that must never leak.

The app runs in-process (web + worker) with our MCP servers mounted at `/mcp/<name>`, and its
config's `public_base_url` is the app's own URL, so the Managed Agents emulator's MCP calls
reach the real servers with the bearer token provision put in the environment's vault.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
import sentry_sdk

from app.cli import main
from app.observability.logs import configure_logging
from app.observability.sentry import init_sentry
from app.redis_conn import EmbeddedRedis
from app.render.blocks import APPROVE_ACTION_ID, DENY_ACTION_ID
from app.runtime import make_scrubber
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.stack import Stack
from app.tickets.model import Ticket, TicketState
from tests.support import eventually

SUPPORT = "C0001"
TEAM = "T0001"
ALICE, BOB = "U0001", "U0002"  # alice is in @support-team (S0001), the approvers' group
CANARY = "canary-7c1d2e3f4a5b6c7d8e9f"
TOKEN_CUSTOMERS = "customers-token-0123456789abcdef"
REFUND_URL = "https://help.example.com/billing/refunds"

SEARCH = {"mcp_tool": "search_docs", "server": "knowledge_base", "input": {"query": "refund"}, "result": None}


def kb_scenario(permission: str) -> dict[str, Any]:
    return {"rules": [{"match": "(?i)refund", "steps": [
        {**SEARCH, "permission": permission,
         "on_deny": [{"message": "Understood, I will not search the docs."}]},
        {"message": "From the knowledge base: {last_tool_result}"},
    ]}]}


@pytest.fixture
def tools_stack(
    redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Stack, InProcessApp]]:
    """Emulators + the app with its public URL in the config, tokens set, provision run."""
    sync_redis.Redis.from_url(redis_server.url).flushall()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    monkeypatch.setenv("MCP_TOKEN_INTERNAL", CANARY)
    monkeypatch.setenv("MCP_TOKEN_CUSTOMERS", TOKEN_CUSTOMERS)
    config_path = tmp_path / "support-agent.yml"
    text = (ROOT / "support-agent.yml").read_text()
    approvers = "    approvers:\n      users: []\n      usergroups: []\n"
    assert approvers in text
    text = text.replace(
        approvers,
        "    approvers:\n      users: []\n      usergroups: [S0001]\n    triage_channel: C0009\n"
        "    triage_usergroup: S0001\n",
        1,
    )
    config_path.write_text(text)
    servers = "    mcp_servers:\n"
    assert servers in text
    with Stack(redis_server.url, data_dir=tmp_path, config_path=config_path) as stack:
        app = InProcessApp(stack.settings(), stack.config)
        # A bridged server (the cloud "cannot reach" it): our knowledge_base again, called by the worker.
        bridged = (
            f"      docs_bridge:\n        url: {app.url}/mcp/knowledge_base\n        token_env: MCP_TOKEN_INTERNAL\n"
            "        bridged: true\n        default_policy: always_ask\n        tools:\n"
            "          search_docs: always_allow\n"
        )
        text = text.replace(servers, servers + bridged, 1)
        config_path.write_text(f"public_base_url: {app.url}\n" + text)
        app.config = stack.config
        for name, value in stack.env().items():
            monkeypatch.setenv(name, value)
        app.start()
        stack.apps.append(app)
        stack.slack.set_app_url(f"{app.url}/slack/events")
        try:
            assert main(["provision"]) == 0
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        yield stack, app




def bot_messages(stack: Stack, thread_ts: str) -> list[dict[str, Any]]:
    return [m for m in stack.slack.state.thread(SUPPORT, thread_ts) if m.get("bot_id") and m.get("ts") != thread_ts]


def bot_texts(stack: Stack, thread_ts: str) -> list[str]:
    return [m.get("text", "") for m in bot_messages(stack, thread_ts)]


def ticket_of(app: InProcessApp, thread_ts: str) -> Ticket | None:
    result: Ticket | None = app.run_coroutine(app.services.store.by_thread(TEAM, SUPPORT, thread_ts))
    return result


def has_action(message: dict[str, Any], action_id: str) -> bool:
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if element.get("action_id") == action_id:
                return True
    return False


def approval_message(stack: Stack, thread_ts: str) -> dict[str, Any] | None:
    return next((m for m in bot_messages(stack, thread_ts) if has_action(m, APPROVE_ACTION_ID)), None)


def confirmations(stack: Stack, session_id: str) -> list[dict[str, Any]]:
    return [
        e for e in stack.agents.state.received_user_events(session_id) if e["type"] == "user.tool_confirmation"
    ]


def views(stack: Stack) -> list[dict[str, Any]]:
    state = stack.slack.state
    with state.lock:
        return [dict(v) for v in state.views.values()]


def ephemerals_for(stack: Stack, user: str) -> list[dict[str, Any]]:
    return [e for e in stack.slack.state.snapshot_list("ephemerals") if e["user"] == user]


async def waiting_for_approval(stack: Stack, app: InProcessApp) -> tuple[str, Ticket, dict[str, Any]]:
    stack.agents.set_scenario(kb_scenario("ask"))
    ts = await stack.slack.user_posts(SUPPORT, "what is the refund policy?", user=BOB)
    message = await eventually(lambda: approval_message(stack, ts))
    ticket = await eventually(
        lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_APPROVAL and t
    )
    return ts, ticket, message


# -- (a) the agent searches our knowledge base through its vault credential ------------------


async def test_agent_cites_the_knowledge_base_through_the_vault_credential(
    tools_stack: tuple[Stack, InProcessApp],
) -> None:
    stack, app = tools_stack
    stack.agents.set_scenario(kb_scenario("allow"))
    ts = await stack.slack.user_posts(SUPPORT, "how do refunds work?")
    answer = await eventually(lambda: [t for t in bot_texts(stack, ts) if "From the knowledge base" in t])
    assert REFUND_URL in answer[0]
    ticket = ticket_of(app, ts)
    assert ticket is not None and ticket.session_id
    session = next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == ticket.session_id)
    assert session["vault_ids"] == [app.run_coroutine(app.services.redis.hget("sa:provisioned", "vault:internal"))]
    calls = stack.agents.state.mcp_call_log()
    assert [(c["server"], c["tool"], c["url"], c["authenticated"]) for c in calls] == [
        ("knowledge_base", "search_docs", f"{app.url}/mcp/knowledge_base", True)
    ]
    result = next(
        e for e in stack.agents.state.events(ticket.session_id) if e["type"] == "agent.mcp_tool_result"
    )
    assert not result["is_error"]


# -- (b) approvals ---------------------------------------------------------------------------


async def test_approve_runs_the_call_and_a_non_approver_is_refused(tools_stack: tuple[Stack, InProcessApp]) -> None:
    stack, app = tools_stack
    ts, ticket, message = await waiting_for_approval(stack, app)
    assert ticket.session_id
    # What the agent wants to do, readable: server, tool, the key argument and the arguments.
    prompt = json.dumps(message["blocks"], ensure_ascii=False)
    assert "Approval needed" in prompt and "knowledge_base · search docs" in prompt
    assert '{\\"query\\": \\"refund\\"}' in prompt
    # The requester is not an approver: ephemeral refusal, nothing sent.
    await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=BOB)
    refusal = await eventually(lambda: ephemerals_for(stack, BOB))
    assert "Only the approvers for ticket" in refusal[0]["text"] and refusal[0]["thread_ts"] == ts
    await asyncio.sleep(0.3)
    assert confirmations(stack, ticket.session_id) == []
    current = ticket_of(app, ts)
    assert current is not None and current.state == TicketState.WAITING_APPROVAL

    await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=ALICE)
    answer = await eventually(lambda: [t for t in bot_texts(stack, ts) if "From the knowledge base" in t])
    assert REFUND_URL in answer[0]
    [confirmation] = confirmations(stack, ticket.session_id)
    use = next(e for e in stack.agents.state.events(ticket.session_id) if e["type"] == "agent.mcp_tool_use")
    assert confirmation["tool_use_id"] == use["id"] and confirmation["result"] == "allow"
    assert "deny_message" not in confirmation or confirmation["deny_message"] is None
    done = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_REQUESTER and t)
    causes = [t.cause for t in app.run_coroutine(app.services.store.transitions(done.id))]
    assert "agent needs a tool confirmation" in causes
    # The buttons gave way to who approved.
    updated = stack.slack.state.message(SUPPORT, message["ts"])
    assert updated is not None and not has_action(updated, APPROVE_ACTION_ID)
    assert f"Approved by <@{ALICE}>" in json.dumps(updated["blocks"])
    assert len(confirmations(stack, ticket.session_id)) == 1


async def test_deny_with_a_reason_goes_back_to_the_agent(tools_stack: tuple[Stack, InProcessApp]) -> None:
    stack, app = tools_stack
    ts, ticket, message = await waiting_for_approval(stack, app)
    assert ticket.session_id
    await stack.slack.click(SUPPORT, message["ts"], DENY_ACTION_ID, user=ALICE)
    view = await eventually(
        lambda: next((v for v in views(stack) if v["callback_id"] == "tool_deny_reason"), None)
    )
    assert confirmations(stack, ticket.session_id) == []  # nothing until the modal is submitted
    await stack.slack.events.send_view_submission(
        user=ALICE, view=view, values={"reason": {"reason": {"type": "plain_text_input", "value": "not needed"}}},
    )
    await eventually(lambda: any("will not search" in t for t in bot_texts(stack, ts)))
    [confirmation] = confirmations(stack, ticket.session_id)
    assert confirmation["result"] == "deny"
    assert confirmation["deny_message"] == "A human approver denied this tool call. Their reason: not needed"
    assert stack.agents.state.mcp_call_log() == []
    result = next(
        e for e in stack.agents.state.events(ticket.session_id) if e["type"] == "agent.mcp_tool_result"
    )
    assert result["is_error"]
    updated = await eventually(
        lambda: (m := stack.slack.state.message(SUPPORT, message["ts"])) and not has_action(m, DENY_ACTION_ID) and m
    )
    assert f"Denied by <@{ALICE}>: not needed" in json.dumps(updated["blocks"])


async def test_a_non_approver_cannot_deny_and_a_second_press_is_told_who_decided(
    tools_stack: tuple[Stack, InProcessApp],
) -> None:
    stack, app = tools_stack
    _, ticket, message = await waiting_for_approval(stack, app)
    assert ticket.session_id
    await stack.slack.click(SUPPORT, message["ts"], DENY_ACTION_ID, user=BOB)
    await eventually(lambda: ephemerals_for(stack, BOB))
    assert not [v for v in views(stack) if v["callback_id"] == "tool_deny_reason"]
    # Alice approves from a stale copy of the message, twice: one confirmation only.
    await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=ALICE)
    await eventually(lambda: confirmations(stack, ticket.session_id or ""))
    stale = dict(message)
    await stack.slack.events.send_block_actions(
        user=ALICE, channel=SUPPORT, message=stale,
        actions=[next(e for b in stale["blocks"] for e in b.get("elements") or []
                      if e.get("action_id") == APPROVE_ACTION_ID)],
    )
    again = await eventually(lambda: ephemerals_for(stack, ALICE))
    assert f"already approved by <@{ALICE}>" in again[0]["text"]
    assert len(confirmations(stack, ticket.session_id)) == 1


# -- custom tools: update_ticket and escalate_to_human ----------------------------------------


async def test_custom_tools_update_the_ticket_and_escalate_to_triage(tools_stack: tuple[Stack, InProcessApp]) -> None:
    stack, app = tools_stack
    stack.slack.state.add_channel("C0009", "triage", members=[ALICE], bot_member=True)
    stack.agents.set_scenario({"rules": [{"match": "(?i)invoice", "steps": [
        {"custom_tool": "update_ticket", "input": {"priority": "high", "category": "Billing"}},
        {"custom_tool": "update_ticket", "input": {}},
        {"custom_tool": "escalate_to_human",
         "input": {"summary": "Invoice 42 was charged twice.\nNeeds a refund decision.", "urgency": "high"}},
        {"message": "Done: {last_tool_result}"},
    ]}]})
    ts = await stack.slack.user_posts(SUPPORT, "my invoice is wrong @channel", user=BOB)
    await eventually(lambda: [t for t in bot_texts(stack, ts) if t.startswith("Done:")])
    ticket = ticket_of(app, ts)
    assert ticket is not None and ticket.session_id
    assert ticket.state == TicketState.ESCALATED
    assert (ticket.priority, ticket.category) == ("high", "billing")
    results = [
        e for e in stack.agents.state.received_user_events(ticket.session_id) if e["type"] == "user.custom_tool_result"
    ]
    assert [r["is_error"] for r in results] == [False, True, False]
    assert "priority=high" in results[0]["content"][0]["text"]
    assert "give at least one of title, priority, category" in results[1]["content"][0]["text"]
    assert "escalated and the support team was notified" in results[2]["content"][0]["text"]
    assert any("handed ticket" in t and "A person will follow up" in t for t in bot_texts(stack, ts))
    triage = [m for m in stack.slack.state.history("C0009") if m.get("bot_id")]
    assert len(triage) == 1
    text = triage[0]["text"]
    assert text.startswith("<!subteam^S0001> :rotating_light: Ticket #1") and "high urgency" in text
    assert "> Invoice 42 was charged twice.\n> Needs a refund decision." in text
    assert "@channel" not in text.replace("@\u200bchannel", "")
    causes = [t.cause for t in app.run_coroutine(app.services.store.transitions(ticket.id))]
    assert "escalated by the agent" in causes


# -- bridged MCP servers: custom tools the worker runs, same policies and approvals -----------


async def test_a_bridged_server_is_called_by_the_worker_under_its_policies(
    tools_stack: tuple[Stack, InProcessApp],
) -> None:
    stack, app = tools_stack
    agent_id = app.run_coroutine(app.services.redis.hget("sa:provisioned", "agent:support-agent-internal"))
    agent = app.run_coroutine(app.services.anthropic.beta.agents.retrieve(agent_id))
    assert "docs_bridge" not in [s.name for s in agent.mcp_servers]
    custom = {t.name for t in agent.tools if t.type == "custom"}
    assert {"docs_bridge__search_docs", "docs_bridge__read_doc"} <= custom
    stack.agents.set_scenario({"rules": [{"match": "(?i)bridge", "steps": [
        {"custom_tool": "docs_bridge__search_docs", "input": {"query": "refund"}},
        {"message": "Found: {last_tool_result}"},
        {"custom_tool": "docs_bridge__read_doc", "input": {"id": "faq/refunds-and-cancellations"}},
        {"message": "Read: {last_tool_result}"},
    ]}]})
    ts = await stack.slack.user_posts(SUPPORT, "bridge: what is the refund policy?", user=BOB)
    # search_docs is always_allow: no approval asked. (Waiting for the URL itself: the message
    # may still be streaming when it first starts with "Found:".)
    await eventually(lambda: [t for t in bot_texts(stack, ts) if t.startswith("Found:") and REFUND_URL in t])
    message = await eventually(lambda: approval_message(stack, ts))  # read_doc is always_ask
    assert "docs_bridge · read doc" in json.dumps(message["blocks"], ensure_ascii=False)
    ticket = await eventually(lambda: (t := ticket_of(app, ts)) and t.state == TicketState.WAITING_APPROVAL and t)
    assert ticket.session_id

    def results() -> list[dict[str, Any]]:
        return [e for e in stack.agents.state.received_user_events(ticket.session_id or "")
                if e["type"] == "user.custom_tool_result"]

    await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=BOB)
    await eventually(lambda: ephemerals_for(stack, BOB))
    await asyncio.sleep(0.3)
    assert len(results()) == 1
    await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=ALICE)
    read = await eventually(lambda: [t for t in bot_texts(stack, ts) if t.startswith("Read:")])
    assert "Annual plans can be refunded" in read[0]
    assert [r["is_error"] for r in results()] == [False, False]
    assert confirmations(stack, ticket.session_id) == []  # custom tools are answered with results
    assert stack.agents.state.mcp_call_log() == []  # the cloud never called it: the worker did
    updated = stack.slack.state.message(SUPPORT, message["ts"])
    assert updated is not None and f"Approved by <@{ALICE}>" in json.dumps(updated["blocks"])


# -- (c) the canary --------------------------------------------------------------------------


async def test_the_mcp_token_never_leaves_the_vault(tools_stack: tuple[Stack, InProcessApp]) -> None:
    """MCP_TOKEN_INTERNAL is the canary: it is in the vault (provision put it there) and the
    agent's MCP calls carry it, but no log line, Slack call, session event or Sentry event."""
    stack, app = tools_stack
    events: list[Any] = []

    class Capture(sentry_sdk.transport.Transport):
        def capture_envelope(self, envelope: Any) -> None:
            for item in envelope.items:
                if item.payload.json:
                    events.append(item.payload.json)

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    lines = io.StringIO()
    raw: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            raw.append(record)

    configure_logging(make_scrubber(app.settings, app.config), "DEBUG", stream=lines)
    keep = Keep(level=logging.DEBUG)
    root.addHandler(keep)
    assert init_sentry("https://public@sentry.example.invalid/1", make_scrubber(app.settings, app.config),
                       transport=Capture)
    try:
        ts, ticket, message = await waiting_for_approval(stack, app)
        await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=ALICE)
        await eventually(lambda: [t for t in bot_texts(stack, ts) if REFUND_URL in t])
        # An error with the token in scope on the way to Sentry (a crash while provisioning).
        token = CANARY
        try:
            raise RuntimeError(f"vault credential rejected for token {token}")
        except RuntimeError:
            logging.getLogger("app.provision").exception("provision failed")
        sentry_sdk.flush()
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        sentry_sdk.init()  # no DSN: off again
    assert ticket.session_id
    calls = stack.agents.state.mcp_call_log()
    assert calls and all(c["authenticated"] for c in calls)  # the token was used...
    # ...and shows up nowhere else.
    assert lines.getvalue() and CANARY not in lines.getvalue()
    assert events and CANARY not in json.dumps(events, default=str)
    recorded_calls = stack.slack.state.calls()
    assert any(c.method.startswith("chat.") for c in recorded_calls)
    slack_calls = json.dumps([c.__dict__ for c in recorded_calls], default=str)
    assert CANARY not in slack_calls
    sent = json.dumps(stack.agents.state.received_user_events(), default=str)
    session_events = json.dumps(stack.agents.state.events(ticket.session_id), default=str)
    assert CANARY not in sent and CANARY not in session_events
    requests = json.dumps(stack.agents.state.request_log(), default=str)
    assert CANARY not in requests
    # Our own code never formats it into a message (only the test's deliberate error above).
    ours = [r for r in raw if r.name.startswith(("app.", "mcp_servers")) and r.name != "app.provision"]
    assert ours and not [r for r in ours if CANARY in r.getMessage()]


async def test_stream_drop_after_the_confirmation_request_strands_nothing(
    tools_stack: tuple[Stack, InProcessApp],
) -> None:
    """The stream dies right after the agent asks for approval: catch-up still shows the request,
    the approval resumes the turn, and the answer appears once."""
    stack, app = tools_stack
    stack.agents.set_scenario({"rules": [{"match": "(?i)refund", "steps": [
        {"drop_stream": {"mode": "abort"}},
        {**SEARCH, "permission": "ask"},
        {"drop_stream": {"mode": "close"}},
        {"message": "From the knowledge base: {last_tool_result}"},
    ]}]})
    ts = await stack.slack.user_posts(SUPPORT, "refund after a drop?", user=BOB)
    message = await eventually(lambda: approval_message(stack, ts), timeout=20)
    # The session now waits on the approval; the follower's stream dies while it waits, unless
    # the follower already let the ticket go (a ticket waiting on an approval holds no stream).
    stack.agents.drop_streams(mode="abort")
    await asyncio.sleep(0.5)
    await stack.slack.click(SUPPORT, message["ts"], APPROVE_ACTION_ID, user=ALICE)
    await eventually(lambda: [t for t in bot_texts(stack, ts) if "From the knowledge base" in t], timeout=20)
    await asyncio.sleep(1.0)
    answers = [t for t in bot_texts(stack, ts) if "From the knowledge base" in t]
    assert len(answers) == 1 and answers[0].count("From the knowledge base") == 1
    ticket = ticket_of(app, ts)
    assert ticket is not None and ticket.session_id
    assert len(confirmations(stack, ticket.session_id)) == 1
