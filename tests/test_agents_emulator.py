"""The Managed Agents emulator, driven by the real `anthropic.AsyncAnthropic` over HTTP.

Every response is parsed with the SDK's strict validation, and every model is checked for
fields the SDK does not know (`model_extra`), so the emulator's wire shapes stay exact.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.lib.sessions import accumulate_managed_agents_event
from anthropic.types.beta import BetaManagedAgentsSession
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSessionEvent,
    BetaManagedAgentsStreamSessionEvents,
)
from pydantic import BaseModel, TypeAdapter

from app.sandbox.agents import AgentsEmulator, Scenario
from app.sandbox.server import ServerThread

KEY = "test-key"
MCP_URL = "http://kb.internal/mcp"
STREAM_TYPES: TypeAdapter[Any] = TypeAdapter(BetaManagedAgentsStreamSessionEvents)
EVENT_TYPES: TypeAdapter[Any] = TypeAdapter(BetaManagedAgentsSessionEvent)


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[AgentsEmulator]:
    emulator = AgentsEmulator(api_key=KEY).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emu(server: AgentsEmulator) -> AgentsEmulator:
    server.state.reset()
    server.state.set_scenario(None)
    server.state.mcp_caller = None
    server.state.ping_interval = 10.0
    return server


@pytest.fixture
async def client(emu: AgentsEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0, _strict_response_validation=True)
    yield c
    await c.close()


def no_extras(value: Any, path: str = "$") -> None:
    """Fail when a parsed SDK model carries fields its type does not declare."""
    if isinstance(value, BaseModel):
        assert not value.model_extra, f"unknown fields at {path}: {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            no_extras(getattr(value, name), f"{path}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            no_extras(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            no_extras(item, f"{path}.{key}")


def ends_turn(event: Any) -> bool:
    if event.type == "session.status_terminated":
        return True
    return event.type == "session.status_idle" and event.stop_reason.type != "requires_action"


def is_idle(reason: str) -> Callable[[Any], bool]:
    return lambda e: e.type == "session.status_idle" and e.stop_reason.type == reason


async def collect(stream: Any, until: Callable[[Any], bool] = ends_turn, wait: float = 5.0) -> list[Any]:
    """Read SDK-parsed events until `until` holds (or `wait` seconds pass)."""
    events: list[Any] = []
    async with asyncio.timeout(wait):
        async for event in stream:
            no_extras(event)
            events.append(event)
            if until(event):
                break
    return events


def error_type(error: anthropic.APIStatusError) -> str:
    body = error.body
    assert isinstance(body, dict)
    return str(body["error"]["type"])


def text(message: str) -> Any:
    return {"type": "user.message", "content": [{"type": "text", "text": message}]}


async def setup_session(
    client: anthropic.AsyncAnthropic, *, policy: str = "always_ask", **session_kwargs: Any
) -> tuple[Any, Any]:
    tools: Any = [
        {"type": "agent_toolset_20260401"},
        {
            "type": "mcp_toolset",
            "mcp_server_name": "knowledge_base",
            "default_config": {"permission_policy": {"type": policy}},
        },
        {
            "type": "custom",
            "name": "escalate_to_human",
            "description": "Escalate",
            "input_schema": {"type": "object", "properties": {"reason": {"type": "string"}}},
        },
    ]
    agent = await client.beta.agents.create(
        name="support",
        model="claude-sonnet-4-6",
        system="You help.",
        tools=tools,
        mcp_servers=[{"type": "url", "name": "knowledge_base", "url": MCP_URL}],
    )
    env = await client.beta.environments.create(
        name=f"env-{agent.id}",
        config={"type": "cloud", "networking": {"type": "limited", "allowed_hosts": ["kb.internal"]}},
    )
    vault = await client.beta.vaults.create(display_name="internal")
    await client.beta.vaults.credentials.create(
        vault.id, auth={"type": "static_bearer", "mcp_server_url": MCP_URL, "token": "kb-secret"}
    )
    session = await client.beta.sessions.create(
        agent=agent.id, environment_id=env.id, vault_ids=[vault.id], **session_kwargs
    )
    for model in (agent, env, vault, session):
        no_extras(model)
    return agent, session


# -- a full turn ----------------------------------------------------------------------------


async def test_turn_with_deltas_streams_in_order_and_parses(
    emu: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emu.set_scenario(
        {
            "rules": [
                {
                    "match": "(?i)refund",
                    "steps": [
                        {"thinking": {}},
                        {"message": "Refunds take five business days.", "deltas": 4},
                        {"usage": {"input_tokens": 1000, "output_tokens": 200, "active_seconds": 3}},
                    ],
                }
            ]
        }
    )
    _, session = await setup_session(client)
    assert session.status == "idle"
    async with await client.beta.sessions.events.stream(
        session.id, event_deltas=["agent.message", "agent.thinking"]
    ) as stream:
        sent = await client.beta.sessions.events.send(session.id, events=[text("How do refunds work?")])
        events = await collect(stream)
    no_extras(sent)
    assert sent.data and sent.data[0].id.startswith("sevt_")

    types = [e.type for e in events]
    assert types[:4] == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "event_start",  # agent.thinking preview (start-only)
    ]
    assert types[4] == "agent.thinking"
    message_at = types.index("agent.message")
    assert types[message_at - 5 : message_at] == ["event_start"] + ["event_delta"] * 4
    assert types[message_at + 1 :] == ["span.model_request_end", "session.usage", "session.status_idle"]
    assert events[0].id == sent.data[0].id  # the stream echoes user events

    snapshot = None
    for event in events:
        snapshot = accumulate_managed_agents_event(snapshot, event)
        if event.type == "event_delta":
            assert event.event_id == events[message_at].id
    assert snapshot is not None and snapshot.content[0].text == "Refunds take five business days."

    usage = events[-2]
    assert usage.usage.input_tokens == 1000 and usage.usage.active_seconds == 3
    # 1000 * $3/M + 200 * $15/M + 3 s * $0.08/h = $0.006067 -> 1 cent
    assert usage.usage.list_cost.amount == "1"
    assert events[-1].stop_reason.type == "end_turn"

    retrieved = await client.beta.sessions.retrieve(session.id)
    no_extras(retrieved)
    assert retrieved.status == "idle"
    assert retrieved.usage.output_tokens == 200
    assert retrieved.stats.active_seconds == 3
    assert emu.state.processed_messages(session.id) == ["How do refunds work?"]


async def test_raw_sse_frames_have_event_lines_and_pings(emu: AgentsEmulator, client: Any) -> None:
    emu.state.ping_interval = 0.05
    emu.set_scenario(Scenario.reply({"sleep": 0.15}, {"message": "pong", "deltas": 2}))
    _, session = await setup_session(client)
    frames: list[tuple[str, str]] = []
    headers = {"x-api-key": KEY, "anthropic-beta": "managed-agents-2026-04-01"}
    async with httpx2.AsyncClient(base_url=emu.url, headers=headers, timeout=5) as http:
        url = f"/v1/sessions/{session.id}/events/stream?event_deltas[]=agent.message"
        async with http.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["request-id"].startswith("req_")
            await client.beta.sessions.events.send(session.id, events=[text("ping?")])
            buffer = ""
            async for chunk in response.aiter_text():
                buffer += chunk
                while "\n\n" in buffer:
                    raw, buffer = buffer.split("\n\n", 1)
                    lines = dict(line.split(": ", 1) for line in raw.splitlines())
                    frames.append((lines["event"], lines["data"]))
                if '"session.status_idle"' in "".join(d for _, d in frames):
                    break
    assert any(name == "ping" for name, _ in frames)
    for name, data in frames:
        if name == "ping":
            continue
        payload = json.loads(data)
        assert payload["type"] == name
        no_extras(STREAM_TYPES.validate_python(payload))
        if name not in ("event_start", "event_delta"):
            no_extras(EVENT_TYPES.validate_python(payload))
            assert payload["processed_at"].endswith("Z")


# -- listing events -------------------------------------------------------------------------


async def test_list_events_with_cursor_filters_order_and_pages(emu: AgentsEmulator, client: Any) -> None:
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("first")])
        first = await collect(stream)
        await client.beta.sessions.events.send(session.id, events=[text("second")])
        second = await collect(stream)

    everything = [e async for e in client.beta.sessions.events.list(session.id, limit=2)]
    assert [e.id for e in everything] == [e.id for e in first + second]
    for event in everything:
        no_extras(event)

    cursor = first[-1].processed_at
    since = await client.beta.sessions.events.list(session.id, created_at_gt=cursor)
    assert [e.id for e in since.data] == [e.id for e in second]
    since_gte = await client.beta.sessions.events.list(session.id, created_at_gte=cursor.isoformat())
    assert since_gte.data[0].id == first[-1].id

    desc = await client.beta.sessions.events.list(session.id, order="desc", limit=3)
    assert [e.id for e in desc.data] == [e.id for e in reversed(second)][:3]
    assert desc.has_next_page()

    messages = await client.beta.sessions.events.list(session.id, types=["agent.message"])
    assert [e.content[0].text for e in messages.data] == ["You asked: first", "You asked: second"]


# -- tools ----------------------------------------------------------------------------------


async def test_mcp_tool_confirmation_allow_then_deny(emu: AgentsEmulator, client: Any) -> None:
    calls: list[tuple[str, str, dict[str, Any], str | None]] = []

    async def mcp_caller(url: str, tool: str, tool_input: dict[str, Any], token: str | None) -> Any:
        calls.append((url, tool, tool_input, token))
        return f"3 articles about {tool_input['q']}", False

    emu.state.mcp_caller = mcp_caller
    emu.set_scenario(
        [
            {
                "match": None,
                "steps": [
                    {"mcp_tool": "search_docs", "server": "knowledge_base", "input": {"q": "{user_text}"}},
                    {"message": "Found: {last_tool_result}"},
                ],
            }
        ]
    )
    _, session = await setup_session(client)  # the toolset policy is always_ask
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("vpn")])
        asked = await collect(stream, until=is_idle("requires_action"))
        use = next(e for e in asked if e.type == "agent.mcp_tool_use")
        assert use.evaluated_permission == "ask" and use.evaluation.type == "always_ask"
        assert use.mcp_server_name == "knowledge_base" and use.input == {"q": "vpn"}
        assert asked[-1].stop_reason.event_ids == [use.id]
        assert (await client.beta.sessions.retrieve(session.id)).status == "idle"

        await client.beta.sessions.events.send(
            session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}]
        )
        done = await collect(stream)
        result = next(e for e in done if e.type == "agent.mcp_tool_result")
        assert result.mcp_tool_use_id == use.id and not result.is_error
        assert next(e for e in done if e.type == "agent.message").content[0].text == "Found: 3 articles about vpn"
        assert calls == [(MCP_URL, "search_docs", {"q": "vpn"}, "kb-secret")]

        await client.beta.sessions.events.send(session.id, events=[text("printer")])
        asked = await collect(stream, until=is_idle("requires_action"))
        use = next(e for e in asked if e.type == "agent.mcp_tool_use")
        await client.beta.sessions.events.send(
            session.id,
            events=[
                {
                    "type": "user.tool_confirmation",
                    "tool_use_id": use.id,
                    "result": "deny",
                    "deny_message": "Not for printers.",
                }
            ],
        )
        done = await collect(stream)
    denied = next(e for e in done if e.type == "agent.mcp_tool_result")
    assert denied.is_error and denied.content[0].text == "Not for printers."
    assert len(calls) == 1  # a denied call never runs

    with pytest.raises(anthropic.BadRequestError):  # nothing is pending any more
        await client.beta.sessions.events.send(
            session.id, events=[{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}]
        )


async def test_policy_allow_runs_scripted_result_and_deny_on_deny_branch(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(
        [
            {
                "match": "allowed",
                "steps": [
                    {"tool": "web_search", "input": {"query": "status"}, "result": "all green"},
                    {"mcp_tool": "search_docs", "server": "knowledge_base", "result": "doc text"},
                ],
            },
            {
                "match": "risky",
                "steps": [
                    {
                        "mcp_tool": "delete_all",
                        "server": "knowledge_base",
                        "permission": "deny",
                        "on_deny": [{"message": "I may not do that."}],
                    },
                    {"message": "never said"},
                ],
            },
        ]
    )
    _, session = await setup_session(client, policy="always_allow")
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("allowed")])
        events = await collect(stream)
        assert [e.type for e in events if "tool" in e.type] == [
            "agent.tool_use",
            "agent.tool_result",
            "agent.mcp_tool_use",
            "agent.mcp_tool_result",
        ]
        assert events[-1].stop_reason.type == "end_turn"
        mcp_result = next(e for e in events if e.type == "agent.mcp_tool_result")
        assert mcp_result.content[0].text == "doc text"

        await client.beta.sessions.events.send(session.id, events=[text("risky")])
        events = await collect(stream)
    use = next(e for e in events if e.type == "agent.mcp_tool_use")
    assert use.evaluated_permission == "deny" and use.evaluation.evaluated_permission.type == "deny"
    assert [e.content[0].text for e in events if e.type == "agent.message"] == ["I may not do that."]
    retrieved = await client.beta.sessions.retrieve(session.id)
    assert retrieved.usage.server_tool_use.web_search_requests == 1
    assert emu.state.mcp_call_log()[0]["authenticated"] is True


async def test_custom_tool_round_trip_and_partial_resolution(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(
        [
            {
                "match": "escalate",
                "steps": [
                    {"custom_tool": "escalate_to_human", "input": {"reason": "{user_text}"}},
                    {"message": "Done: {last_tool_result}"},
                ],
            },
            {
                "match": "both",
                "steps": [{"parallel": [{"custom_tool": "escalate_to_human"}, {"custom_tool": "escalate_to_human"}]}],
            },
        ]
    )
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("escalate please")])
        asked = await collect(stream, until=is_idle("requires_action"))
        use = next(e for e in asked if e.type == "agent.custom_tool_use")
        assert use.name == "escalate_to_human" and use.input == {"reason": "escalate please"}
        assert asked[-1].stop_reason.event_ids == [use.id]
        await client.beta.sessions.events.send(
            session.id,
            events=[
                {
                    "type": "user.custom_tool_result",
                    "custom_tool_use_id": use.id,
                    "content": [{"type": "text", "text": "paged @oncall"}],
                }
            ],
        )
        done = await collect(stream)
        assert [e.type for e in done][:2] == ["user.custom_tool_result", "session.status_running"]
        assert next(e for e in done if e.type == "agent.message").content[0].text == "Done: paged @oncall"

        await client.beta.sessions.events.send(session.id, events=[text("both")])
        asked = await collect(stream, until=is_idle("requires_action"))
        first, second = asked[-1].stop_reason.event_ids
        reply = {"type": "user.custom_tool_result", "content": [{"type": "text", "text": "ok"}]}
        await client.beta.sessions.events.send(session.id, events=[{**reply, "custom_tool_use_id": first}])
        again = await collect(stream, until=is_idle("requires_action"))
        assert again[-1].stop_reason.event_ids == [second]
        await client.beta.sessions.events.send(session.id, events=[{**reply, "custom_tool_use_id": second}])
        done = await collect(stream)
    assert done[-1].stop_reason.type == "end_turn"


async def test_mcp_tool_calls_a_real_mcp_server_with_the_vault_token(emu: AgentsEmulator, client: Any) -> None:
    from mcp.server.mcpserver import MCPServer

    kb = MCPServer("kb")

    @kb.tool()
    def search_docs(q: str) -> str:
        return f"results for {q}"

    inner = kb.streamable_http_app(stateless_http=True, json_response=True)
    authorizations: list[bytes | None] = []

    async def mcp_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            authorizations.append(dict(scope["headers"]).get(b"authorization"))
        await inner(scope, receive, send)

    with ServerThread(mcp_app) as mcp_server:
        url = mcp_server.url + "/mcp"
        agent = await client.beta.agents.create(
            name="kb",
            model="claude-sonnet-4-6",
            tools=[
                {
                    "type": "mcp_toolset",
                    "mcp_server_name": "kb",
                    "default_config": {"permission_policy": {"type": "always_allow"}},
                }
            ],
            mcp_servers=[{"type": "url", "name": "kb", "url": url}],
        )
        env = await client.beta.environments.create(name="kb-env")
        vault = await client.beta.vaults.create(display_name="kb")
        await client.beta.vaults.credentials.create(
            vault.id, auth={"type": "static_bearer", "mcp_server_url": url, "token": "kb-token"}
        )
        session = await client.beta.sessions.create(agent=agent.id, environment_id=env.id, vault_ids=[vault.id])
        emu.set_scenario(
            Scenario.reply(
                {"mcp_tool": "search_docs", "server": "kb", "input": {"q": "vpn"}},
                {"mcp_tool": "missing_tool", "server": "kb"},
            )
        )
        async with await client.beta.sessions.events.stream(session.id) as stream:
            await client.beta.sessions.events.send(session.id, events=[text("search")])
            events = await collect(stream, wait=10)
    results = [e for e in events if e.type == "agent.mcp_tool_result"]
    assert results[0].content[0].text == "results for vpn" and not results[0].is_error
    assert results[1].is_error
    assert set(authorizations) == {b"Bearer kb-token"}


# -- interrupts, queueing, drops ------------------------------------------------------------


async def test_interrupt_ends_the_running_turn(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(
        [{"match": "slow", "steps": [{"message": "thinking hard", "deltas": 1}, {"sleep": 30}, {"message": "x"}]}]
    )
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("slow one")])
        await collect(stream, until=lambda e: e.type == "span.model_request_end")
        assert (await client.beta.sessions.retrieve(session.id)).status == "running"
        await client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
        events = await collect(stream, wait=2)
        assert [e.type for e in events] == ["user.interrupt", "session.status_idle"]
        assert events[-1].stop_reason.type == "end_turn"
        await client.beta.sessions.events.send(session.id, events=[text("next")])
        events = await collect(stream)
    assert [e.content[0].text for e in events if e.type == "agent.message"] == ["You asked: next"]


async def test_queued_messages_become_turns_exactly_once_in_order(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(Scenario.reply({"sleep": 0.05}, {"message": "re: {user_text}"}))
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        echoes = []
        for word in ("one", "two", "three"):
            sent = await client.beta.sessions.events.send(session.id, events=[text(word)])
            echoes.append(sent.data[0])
        assert echoes[0].processed_at is not None
        assert echoes[1].processed_at is None and echoes[2].processed_at is None  # queued
        events: list[Any] = []
        for _ in range(3):
            events += await collect(stream)
    answers = [e.content[0].text for e in events if e.type == "agent.message"]
    assert answers == ["re: one", "re: two", "re: three"]
    assert emu.state.processed_messages(session.id) == ["one", "two", "three"]
    assert [e["content"][0]["text"] for e in emu.state.received_user_events(session.id)] == ["one", "two", "three"]
    listed = [e async for e in client.beta.sessions.events.list(session.id, types=["user.message"])]
    assert all(e.processed_at is not None for e in listed)


async def test_drop_stream_then_list_catches_up(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(
        Scenario.reply({"message": "part one"}, {"drop_stream": {}}, {"sleep": 0.1}, {"message": "part two"})
    )
    _, session = await setup_session(client)
    seen: list[Any] = []
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("go")])
        async for event in stream:  # ends when the emulator closes the connection
            seen.append(event)
    assert "part two" not in [e.content[0].text for e in seen if e.type == "agent.message"]
    assert not any(ends_turn(e) for e in seen)

    async with await client.beta.sessions.events.stream(session.id) as stream:
        history = [e async for e in client.beta.sessions.events.list(session.id, created_at_gte=seen[-1].processed_at)]
        ids = {e.id for e in seen}
        fresh = [e for e in history if e.id not in ids]
        live = [] if any(ends_turn(e) for e in fresh) else await collect(stream)
    texts = [e.content[0].text for e in fresh + live if e.type == "agent.message" and e.id not in ids]
    assert texts == ["part two"]


async def test_abort_mode_drops_the_connection(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(Scenario.reply({"sleep": 5}))
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("go")])
        await collect(stream, until=lambda e: e.type == "session.status_running")
        assert emu.drop_streams(session.id, mode="abort") == 1
        with pytest.raises((anthropic.APIError, httpx2.HTTPError)):
            await collect(stream, wait=2)
    await client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])


# -- budgets --------------------------------------------------------------------------------


async def test_budget_pause_then_raise_resumes(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(
        Scenario.reply(
            {"message": "before"},
            {"usage": {"input_tokens": 100_000, "output_tokens": 10_000}},  # 30c + 15c
            {"message": "after"},
        )
    )
    _, session = await setup_session(
        client, budget={"type": "limit", "max_list_cost": {"amount": "40", "currency": "USD"}}
    )
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("spend")])
        paused = await collect(stream)
        assert paused[-1].stop_reason.type == "budget_reached"
        assert paused[-2].type == "session.usage" and paused[-2].usage.list_cost.amount == "45"
        assert "after" not in [e.content[0].text for e in paused if e.type == "agent.message"]

        # Issue 15 item 3: nothing documents a 400 for a message while paused at the budget;
        # it is accepted and queued (processed_at null) like any message sent mid-turn.
        sent = await client.beta.sessions.events.send(session.id, events=[text("more")])
        assert sent.data[0].processed_at is None
        with pytest.raises(anthropic.BadRequestError) as lowered:
            await client.beta.sessions.update(
                session.id, budget={"type": "limit", "max_list_cost": {"amount": "45", "currency": "USD"}}
            )
        assert lowered.value.error_code == "budget_not_raised"

        updated = await client.beta.sessions.update(
            session.id, budget={"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}
        )
        no_extras(updated)
        resumed = await collect(stream)
    queued_echo, *resumed = resumed  # the queued message's first echo (processed_at null)
    assert queued_echo.type == "user.message" and queued_echo.processed_at is None
    assert [e.type for e in resumed][:2] == ["session.updated", "session.status_running"]
    assert resumed[0].budget.max_list_cost.amount == "100"
    assert [e.content[0].text for e in resumed if e.type == "agent.message"] == ["after"]
    assert resumed[-1].stop_reason.type == "end_turn"

    _, unbudgeted = await setup_session(client)
    with pytest.raises(anthropic.BadRequestError) as created_only:
        await client.beta.sessions.update(
            unbudgeted.id, budget={"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}}
        )
    assert created_only.value.error_code == "budget_create_only"


# -- errors in the session and over HTTP ----------------------------------------------------


async def test_session_errors_refusal_and_terminate(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(
        [
            {
                "match": "flaky",
                "steps": [{"error": "model_overloaded_error", "retry_status": "retrying"}, {"message": "recovered"}],
            },
            {"match": "dead", "steps": [{"error": "model_overloaded_error", "retry_status": "exhausted"}]},
            {"match": "nope", "steps": [{"idle": "refusal", "category": "cyber"}]},
            {"match": "end", "steps": [{"error": "billing_error", "retry_status": "terminal"}]},
        ]
    )
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("flaky")])
        events = await collect(stream)
        assert [e.type for e in events][2:5] == [
            "session.error",
            "session.status_rescheduled",
            "session.status_running",
        ]
        assert events[2].error.retry_status.type == "retrying"
        assert events[-1].stop_reason.type == "end_turn"

        await client.beta.sessions.events.send(session.id, events=[text("dead")])
        events = await collect(stream)
        assert events[-1].stop_reason.type == "retries_exhausted"

        await client.beta.sessions.events.send(session.id, events=[text("nope")])
        events = await collect(stream)
        assert events[-1].stop_reason.type == "refusal" and events[-1].stop_details.category == "cyber"

        await client.beta.sessions.events.send(session.id, events=[text("end")])
        events = await collect(stream)
    assert [e.type for e in events][-2:] == ["session.error", "session.status_terminated"]
    assert (await client.beta.sessions.retrieve(session.id)).status == "terminated"
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.events.send(session.id, events=[text("hello?")])


async def test_http_errors_surface_as_sdk_exceptions(emu: AgentsEmulator, client: Any) -> None:
    bad = anthropic.AsyncAnthropic(api_key="wrong", base_url=emu.url, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as auth:
        await bad.beta.agents.list()
    assert error_type(auth.value) == "authentication_error"
    assert auth.value.request_id and auth.value.request_id.startswith("req_")
    await bad.close()

    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.beta.sessions.retrieve("sesn_missing")
    assert isinstance(missing.value.body, dict) and missing.value.body["type"] == "error"
    assert error_type(missing.value) == "not_found_error"

    emu.fail_next("GET", r"^/v1/agents$", 429, retry_after=7)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.beta.agents.list()
    assert limited.value.response.headers["retry-after"] == "7"
    assert error_type(limited.value) == "rate_limit_error"

    emu.fail_next("GET", r"^/v1/agents$", 529)
    with pytest.raises(anthropic.OverloadedError):
        await client.beta.agents.list()
    emu.fail_next("*", r"/v1/environments", 500)
    with pytest.raises(anthropic.InternalServerError):
        await client.beta.environments.list()
    emu.fail_next("GET", r"^/v1/vaults$", 0, delay=0.2)  # status 0: only slow
    started = asyncio.get_running_loop().time()
    await client.beta.vaults.list()
    assert asyncio.get_running_loop().time() - started >= 0.2

    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.create(agent="agent_x", environment_id="")  # bad body
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.create(agent="agent_x", environment_id="env_x")

    # The SDK retries 429 itself (retry-after obeyed) and then succeeds.
    emu.fail_next("GET", r"^/v1/agents$", 429, count=2, retry_after=0.01)
    retrying = anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=2)
    page = await retrying.beta.agents.list()
    assert page.data == []
    await retrying.close()
    statuses = [r["status"] for r in emu.state.request_log() if r["path"] == "/v1/agents"]
    assert statuses[-3:] == [429, 429, 200]


async def test_lost_response_makes_sdk_retry_duplicate_a_message(emu: AgentsEmulator) -> None:
    """`after=True` runs the request, then fails it: the SDK's retry sends the event again."""
    retrying = anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=1)
    _, session = await setup_session(retrying)
    emu.fail_next("POST", r"/events$", 500, retry_after=0.01, after=True)
    await retrying.beta.sessions.events.send(session.id, events=[text("once?")])
    received = emu.state.received_user_events(session.id)
    assert [e["content"][0]["text"] for e in received] == ["once?", "once?"]
    await retrying.close()


# -- resources ------------------------------------------------------------------------------


async def test_agent_versions_conflict_list_and_archive(client: Any) -> None:
    agent = await client.beta.agents.create(name="a", model={"id": "claude-sonnet-4-6", "effort": "high"})
    assert agent.version == 1 and agent.model.effort.type == "high"
    assert agent.tools == [] and agent.execution_identity.type == "service_account"
    v2 = await client.beta.agents.update(agent.id, system="Be brief.", version=1, metadata={"team": "x"})
    assert v2.version == 2 and v2.system == "Be brief." and v2.metadata == {"team": "x"}
    same = await client.beta.agents.update(agent.id, system="Be brief.")
    assert same.version == 2  # no change, no new version
    with pytest.raises(anthropic.ConflictError):
        await client.beta.agents.update(agent.id, system="stale", version=1)
    assert (await client.beta.agents.retrieve(agent.id, version=1)).system is None
    versions = [v.version async for v in client.beta.agents.versions.list(agent.id)]
    assert versions == [2, 1]
    with pytest.raises(anthropic.BadRequestError):  # an MCP server no toolset names
        await client.beta.agents.create(
            name="b", model="claude-sonnet-4-6", mcp_servers=[{"type": "url", "name": "kb", "url": MCP_URL}]
        )
    others = [await client.beta.agents.create(name=f"n{i}", model="claude-haiku-4-5") for i in range(3)]
    listed = [a.id async for a in client.beta.agents.list(limit=2)]
    assert listed == [a.id for a in reversed([agent, *others])]
    archived = await client.beta.agents.archive(agent.id)
    assert archived.archived_at is not None
    assert agent.id not in [a.id async for a in client.beta.agents.list()]
    assert agent.id in [a.id async for a in client.beta.agents.list(include_archived=True)]


async def test_environments_vaults_and_write_only_secrets(emu: AgentsEmulator, client: Any) -> None:
    env = await client.beta.environments.create(name="internal", metadata={"tier": "staff"})
    assert env.config.type == "cloud" and env.config.networking.type == "unrestricted"
    with pytest.raises(anthropic.ConflictError):
        await client.beta.environments.create(name="internal")
    env = await client.beta.environments.update(
        env.id, config={"type": "cloud", "networking": {"type": "limited", "allow_mcp_servers": True}}
    )
    assert env.config.networking.allow_mcp_servers is True
    assert [e.id async for e in client.beta.environments.list()] == [env.id]
    assert (await client.beta.environments.archive(env.id)).archived_at is not None
    deleted = await client.beta.environments.delete(env.id)
    assert deleted.type == "environment_deleted"

    vault = await client.beta.vaults.create(display_name="v", metadata={"owner": "ops"})
    cred = await client.beta.vaults.credentials.create(
        vault.id,
        display_name="kb",
        auth={"type": "static_bearer", "mcp_server_url": MCP_URL, "token": "s3cret-token"},
    )
    raw = await client.beta.vaults.credentials.with_raw_response.retrieve(cred.id, vault_id=vault.id)
    assert "s3cret-token" not in raw.http_response.text
    assert "s3cret" not in json.dumps(emu.state.request_log())
    assert emu.state.credential_token_for([vault.id], MCP_URL + "/") == "s3cret-token"
    with pytest.raises(anthropic.ConflictError):
        await client.beta.vaults.credentials.create(
            vault.id, auth={"type": "static_bearer", "mcp_server_url": MCP_URL, "token": "again"}
        )
    await client.beta.vaults.credentials.update(
        cred.id, vault_id=vault.id, auth={"type": "static_bearer", "token": "rotated"}
    )
    assert emu.state.credential_token_for([vault.id], MCP_URL) == "rotated"
    oauth = await client.beta.vaults.credentials.create(
        vault.id,
        auth={
            "type": "mcp_oauth",
            "mcp_server_url": "https://mcp.example.com/mcp",
            "access_token": "at",
            "refresh": {
                "client_id": "c",
                "refresh_token": "rt",
                "token_endpoint": "https://example.com/token",
                "token_endpoint_auth": {"type": "client_secret_post", "client_secret": "cs"},
            },
        },
    )
    no_extras(oauth)
    assert [c.id async for c in client.beta.vaults.credentials.list(vault.id)] == [cred.id, oauth.id]
    archived = await client.beta.vaults.credentials.archive(cred.id, vault_id=vault.id)
    assert archived.archived_at is not None
    assert emu.state.credential_token_for([vault.id], MCP_URL) is None
    assert (await client.beta.vaults.credentials.delete(oauth.id, vault_id=vault.id)).type == (
        "vault_credential_deleted"
    )
    assert (await client.beta.vaults.update(vault.id, display_name="w")).display_name == "w"
    assert (await client.beta.vaults.archive(vault.id)).archived_at is not None
    assert (await client.beta.vaults.delete(vault.id)).type == "vault_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.vaults.retrieve(vault.id)


async def test_session_forms_update_list_archive_delete(emu: AgentsEmulator, client: Any) -> None:
    agent, first = await setup_session(client, title="t1", metadata={"channel": "C1"})
    await client.beta.agents.update(agent.id, system="v2 prompt")
    pinned = await client.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1}, environment_id=first.environment_id
    )
    assert pinned.agent.version == 1 and pinned.agent.system == "You help."
    latest = await client.beta.sessions.create(agent=agent.id, environment_id=first.environment_id)
    assert latest.agent.version == 2
    overridden = await client.beta.sessions.create(
        agent={
            "type": "agent_with_overrides",
            "id": agent.id,
            "system": "override",
            "tools": [],
            "mcp_servers": [],
        },
        environment_id=first.environment_id,
    )
    assert overridden.agent.system == "override" and overridden.agent.mcp_servers == []

    page = await client.beta.sessions.list(limit=2)
    assert [s.id for s in page.data] == [overridden.id, latest.id] and page.prev_page is None
    later = await page.get_next_page()
    assert [s.id for s in later.data] == [pinned.id, first.id] and later.prev_page

    async with await client.beta.sessions.events.stream(first.id) as stream:
        updated = await client.beta.sessions.update(first.id, title="t2", metadata={"channel": None, "x": "y"})
        assert updated.title == "t2" and updated.metadata == {"x": "y"}
        [event] = await collect(stream, until=lambda e: e.type == "session.updated")
        assert event.title == "t2" and event.budget is None and event.agent is None
        with pytest.raises(anthropic.BadRequestError):
            await client.beta.sessions.update(first.id, vault_ids=[])

        archived = await client.beta.sessions.archive(first.id)
        assert archived.archived_at is not None
        with pytest.raises(anthropic.ConflictError):
            await client.beta.sessions.events.send(first.id, events=[text("hi")])
        assert first.id not in [s.id async for s in client.beta.sessions.list()]

        deleted = await client.beta.sessions.delete(first.id)
        assert deleted.type == "session_deleted"
        gone = await collect(stream, until=lambda e: e.type == "session.deleted")
        assert gone[-1].type == "session.deleted"
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.events.send(first.id, events=[text("hi")])
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.retrieve(first.id)

    emu.set_scenario(Scenario.reply({"sleep": 5}))
    await client.beta.sessions.events.send(latest.id, events=[text("busy")])
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.archive(latest.id)
    await client.beta.sessions.events.send(latest.id, events=[{"type": "user.interrupt"}])


async def test_initial_events_start_work_inside_create(emu: AgentsEmulator, client: Any) -> None:
    agent, first = await setup_session(client)
    session = await client.beta.sessions.create(
        agent=agent.id, environment_id=first.environment_id, initial_events=[text("from create")]
    )
    assert session.status == "running"
    async with await client.beta.sessions.events.stream(session.id) as stream:
        history = [e async for e in client.beta.sessions.events.list(session.id)]
        live = [] if any(ends_turn(e) for e in history) else await collect(stream)
    seen = {e.id: e for e in history + live}
    assert [e.content[0].text for e in seen.values() if e.type == "agent.message"] == ["You asked: from create"]
    parsed = TypeAdapter(BetaManagedAgentsSession).validate_python(
        (await client.beta.sessions.with_raw_response.retrieve(session.id)).http_response.json()
    )
    no_extras(parsed)


# -- control over HTTP and from other threads -----------------------------------------------


async def test_http_control_endpoints(emu: AgentsEmulator, client: Any) -> None:
    async with httpx2.AsyncClient(base_url=emu.url + "/_emulator", timeout=5) as control:
        scenario = {"rules": [{"match": None, "steps": [{"message": "scripted over HTTP"}]}]}
        assert (await control.post("/scenario", json={"scenario": scenario})).status_code == 200
        bad = await control.post("/scenario", json={"scenario": {"rules": [{"steps": [{"nope": 1}]}]}})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        fault = {"method": "GET", "path": "^/v1/vaults$", "status": 503, "count": 1}
        assert (await control.post("/faults", json=fault)).json()["faults"][0]["status"] == 503
        with pytest.raises(anthropic.InternalServerError):
            await client.beta.vaults.list()

        _, session = await setup_session(client)
        async with await client.beta.sessions.events.stream(session.id) as stream:
            await client.beta.sessions.events.send(session.id, events=[text("hi")])
            events = await collect(stream)
        assert events[-3].content[0].text == "scripted over HTTP"

        sessions = (await control.get("/sessions")).json()["data"]
        assert sessions[0]["processed_messages"] == ["hi"] and sessions[0]["pending_action_ids"] == []
        processed = (await control.get(f"/sessions/{session.id}/processed")).json()
        assert processed == {"messages": ["hi"]}
        all_events = (await control.get(f"/sessions/{session.id}/events")).json()["data"]
        assert [e["id"] for e in all_events] == [e.id for e in events]
        user_events = (await control.get("/user_events", params={"session_id": session.id})).json()
        assert [e["type"] for e in user_events["data"]] == ["user.message"]
        requests = (await control.get("/requests")).json()["data"]
        assert {"method": "GET", "path": "/v1/vaults", "status": 503}.items() <= requests[0].items()
        assert all(not r["path"].startswith("/_emulator") for r in requests)

        async with await client.beta.sessions.events.stream(session.id) as stream:
            await collect_started(emu, session.id)
            dropped = (await control.post("/drop_streams", json={"session_id": session.id})).json()
            assert dropped == {"dropped": 1}
            assert [e async for e in stream] == []
        assert (await control.post("/reset")).json() == {"ok": True}
        assert (await control.get("/sessions")).json() == {"data": []}


async def collect_started(emu: AgentsEmulator, session_id: str) -> None:
    for _ in range(100):
        if any(s["open_streams"] for s in emu.state.sessions_snapshot() if s["id"] == session_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("stream never registered")


async def test_control_methods_are_thread_safe(emu: AgentsEmulator, client: Any) -> None:
    emu.set_scenario(Scenario.reply({"sleep": 0.02}, {"message": "ok"}))
    _, session = await setup_session(client)
    errors: list[BaseException] = []

    def poke() -> None:
        try:
            for _ in range(50):
                emu.state.sessions_snapshot()
                emu.state.events(session.id)
                emu.state.request_log()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poke) for _ in range(4)]
    for thread in threads:
        thread.start()
    async with await client.beta.sessions.events.stream(session.id) as stream:
        for i in range(3):
            await client.beta.sessions.events.send(session.id, events=[text(f"m{i}")])
        for _ in range(3):
            await collect(stream)
    for thread in threads:
        await asyncio.to_thread(thread.join)
    assert errors == []
    assert emu.state.processed_messages(session.id) == ["m0", "m1", "m2"]
