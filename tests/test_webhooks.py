"""Anthropic webhooks at /webhooks/anthropic, over real HTTP into the running app.

A stalled ticket: its session finished a turn while no worker followed it (no job, no lease),
so nothing reached Slack and the ticket still says `working`. Forged, expired, tampered and
redelivered webhooks (same id) are acknowledged and change nothing; a valid `session.status_idled`
wakes a worker, which catches up from the session history and answers in the thread.
Requests are signed with `standardwebhooks`, as Anthropic signs them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
from pydantic import SecretStr
from standardwebhooks import Webhook

from app.sandbox.app_runner import InProcessApp
from app.sandbox.stack import Stack
from app.tickets.model import Ticket, TicketState
from app.trace import record
from app.trace.build import build_trace
from tests.support import eventually

SUPPORT, TEAM = "C0001", "T0001"
KEY = "whsec_" + base64.b64encode(b"anthropic-webhook-test-key-32by").decode()
OTHER_KEY = "whsec_" + base64.b64encode(b"somebody-elses-key-0123456789ab").decode()






def payload(session_id: str, etype: str = "session.status_idled", event_id: str = "event_01") -> str:
    return json.dumps({
        "type": "event",
        "id": event_id,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": {"type": etype, "id": session_id, "organization_id": "org_1", "workspace_id": "wrkspc_1"},
    })


def signed(body: str, msg_id: str, *, key: str = KEY, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(key).sign(msg_id, at, body),
    }


async def post(app: InProcessApp, body: str, headers: dict[str, str]) -> httpx2.Response:
    async with httpx2.AsyncClient() as http:
        return await http.post(f"{app.url}/webhooks/anthropic", content=body.encode(), headers=headers)


async def stalled_ticket(app: InProcessApp, question: str) -> Ticket:
    """A ticket whose session answered while nobody followed it."""
    s = app.services
    client = s.anthropic
    agent = await client.beta.agents.create(name="support-agent", model="claude-sonnet-4-6")
    env = await client.beta.environments.create(name="support-internal")
    session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id)
    root = await s.slack.chat_postMessage(channel=SUPPORT, text=f"Question from <@U0001>: {question}")
    ticket, _ = await s.store.open_ticket(
        team_id=TEAM, channel_id=SUPPORT, thread_ts=str(root["ts"]), requester_id="U0001",
        environment="internal", title=question,
    )
    ticket.session_id = session.id
    await s.store.save(ticket)
    ticket = await s.store.transition(ticket, TicketState.WORKING, "agent running")
    await client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": question}]}]
    )
    return ticket


def replies(stack: Stack, thread_ts: str) -> list[str]:
    return [m.get("text", "") for m in stack.slack.state.thread(SUPPORT, thread_ts)
            if m.get("bot_id") and m.get("ts") != thread_ts]


def state_of(app: InProcessApp, ticket: Ticket) -> TicketState:
    fresh = app.run_coroutine(app.services.store.get(ticket.id))
    return TicketState(fresh.state)


async def test_forged_expired_and_replayed_webhooks_are_refused_and_a_valid_one_wakes_the_ticket(
    stack: Stack,
) -> None:
    app = stack.start_app(anthropic_webhook_signing_key=SecretStr(KEY))
    ticket = app.run_coroutine(stalled_ticket(app, "why is my invoice late?"))
    session_id = ticket.session_id or ""
    await eventually(lambda: next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == session_id)
                     ["status"] == "idle")
    await asyncio.sleep(0.5)
    # Stalled: the agent answered, but nobody follows the ticket.
    assert replies(stack, ticket.thread_ts) == []
    assert state_of(app, ticket) == TicketState.WORKING

    body = payload(session_id, event_id="event_valid")
    refused = {
        "forged (another key)": (body, signed(body, "msg_forged", key=OTHER_KEY)),
        "expired (10 minutes old)": (body, signed(body, "msg_old", at=datetime.now(UTC) - timedelta(minutes=10))),
        "from the future": (body, signed(body, "msg_future", at=datetime.now(UTC) + timedelta(minutes=10))),
        "tampered body": (payload("sesn_other", event_id="event_valid"), signed(body, "msg_tampered")),
        "unsigned": (body, {"content-type": "application/json", "webhook-id": "msg_unsigned",
                            "webhook-timestamp": str(int(time.time()))}),
        "garbage signature": (body, {**signed(body, "msg_garbage"), "webhook-signature": "v1,not-base64!!"}),
    }
    for name, (raw, headers) in refused.items():
        response = await post(app, raw, headers)
        assert response.status_code == 401, name
        assert response.json() == {"ok": False, "error": "unauthorized"}
    await asyncio.sleep(1.0)
    assert replies(stack, ticket.thread_ts) == [], "a refused webhook woke the ticket"
    assert state_of(app, ticket) == TicketState.WORKING
    assert app.run_coroutine(record.webhooks(app.services.redis, ticket.id)) == []

    # A valid one wakes the ticket: the worker catches up, answers and moves the state.
    headers = signed(body, "msg_valid")
    response = await post(app, body, headers)
    assert response.status_code == 200 and response.json() == {"ok": True, "action": "woken"}
    await eventually(lambda: replies(stack, ticket.thread_ts) == ["You asked: why is my invoice late?"])
    await eventually(lambda: state_of(app, ticket) == TicketState.WAITING_REQUESTER)

    # The same delivery again (Anthropic retries with the same id, issue 15 item 6) is
    # acknowledged with 2xx, so the retries stop, and does nothing.
    again = await post(app, body, headers)
    assert again.status_code == 200 and again.json() == {"ok": True, "action": "duplicate"}
    # So is the same event under a new webhook id.
    again = await post(app, body, signed(body, "msg_valid_2"))
    assert again.status_code == 200 and again.json()["action"] == "duplicate"
    seen = app.run_coroutine(record.webhooks(app.services.redis, ticket.id))
    assert [(w["id"], w["type"], w["action"]) for w in seen] == [("msg_valid", "session.status_idled", "woken")]
    await asyncio.sleep(0.5)
    assert replies(stack, ticket.thread_ts) == ["You asked: why is my invoice late?"]
    # The trace shows the webhook, then the worker it woke, then the answer being handled.
    follows = app.run_coroutine(record.follows(app.services.redis, ticket.id))
    assert [f["reason"] for f in follows] == ["webhook:session.status_idled"]
    fresh = app.run_coroutine(app.services.store.get(ticket.id))
    trace = app.run_coroutine(build_trace(app.services.anthropic, app.services.store, fresh, app.services.scrubber))
    kinds = [e.kind for e in trace.entries]
    assert kinds.index("agent_message") < kinds.index("webhook") < kinds.index("worker")
    assert trace.entries[-1].summary == "working → waiting on requester: agent answered"


async def test_webhooks_that_need_no_wake_up(stack: Stack) -> None:
    app = stack.start_app(anthropic_webhook_signing_key=SecretStr(KEY))
    ticket = app.run_coroutine(stalled_ticket(app, "hello there"))
    session_id = ticket.session_id or ""

    async def send(etype: str, sid: str, n: int) -> dict[str, Any]:
        body = payload(sid, etype, event_id=f"event_{n}")
        response = await post(app, body, signed(body, f"msg_{n}"))
        assert response.status_code == 200
        return dict(response.json())

    assert await send("session.status_idled", "sesn_unknown", 1) == {"ok": True, "action": "unknown_session"}
    assert await send("session.created", session_id, 2) == {"ok": True, "action": "ignored"}
    # A worker holds the lease: its follower sees the event itself.
    app.run_coroutine(app.services.redis.set(f"sa:lease:{ticket.id}", "someone", px=60_000))
    assert await send("session.requires_action", session_id, 3) == {"ok": True, "action": "following"}
    app.run_coroutine(app.services.redis.delete(f"sa:lease:{ticket.id}"))
    fresh = app.run_coroutine(app.services.store.get(ticket.id))
    app.run_coroutine(app.services.store.transition(fresh, TicketState.RESOLVED, "resolved by U0002", "U0002"))
    assert await send("session.status_terminated", session_id, 4) == {"ok": True, "action": "closed"}
    actions = [w["action"] for w in app.run_coroutine(record.webhooks(app.services.redis, ticket.id))]
    assert actions == ["following", "closed"]


async def test_no_signing_key_refuses_everything(stack: Stack) -> None:
    app = stack.start_app()
    body = payload("sesn_x")
    response = await post(app, body, signed(body, "msg_1"))
    assert response.status_code == 401
