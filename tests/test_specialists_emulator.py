"""The emulator's session threads, driven by the real `anthropic.AsyncAnthropic` over HTTP.

Responses are parsed with the SDK's strict validation and checked for fields the SDK does not
know, so the thread objects, their events and the resolved `multiagent` stay in the SDK's shapes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest
from pydantic import BaseModel

from app.sandbox.agents import AgentsEmulator
from app.sandbox.agents.threads import INTERRUPTED

KEY = "test-key"
SPECIALIST = "billing@coordinator"


@pytest.fixture(scope="module")
def server() -> Iterator[AgentsEmulator]:
    emulator = AgentsEmulator(api_key=KEY).start()
    yield emulator
    emulator.stop()


@pytest.fixture
async def client(server: AgentsEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    server.state.reset()
    server.state.set_scenario(None)
    c = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.url, max_retries=0, _strict_response_validation=True)
    yield c
    await c.close()


def no_extra(model: Any, path: str = "") -> None:
    """No field the SDK does not know, anywhere in the model."""
    if isinstance(model, BaseModel):
        assert not model.model_extra, f"{path}: unknown fields {sorted(model.model_extra or {})}"
        for name in type(model).model_fields:
            no_extra(getattr(model, name), f"{path}.{name}")
    elif isinstance(model, list):
        for i, item in enumerate(model):
            no_extra(item, f"{path}[{i}]")


async def coordinated_session(client: anthropic.AsyncAnthropic) -> tuple[str, str]:
    env = await client.beta.environments.create(
        name="e", config={"type": "cloud", "networking": {"type": "unrestricted"}})
    spec = await client.beta.agents.create(
        name=SPECIALIST, model="claude-haiku-4-5", system="billing",
        mcp_servers=[{"type": "url", "name": "kb", "url": "http://kb.internal/mcp"}],
        tools=[{"type": "mcp_toolset", "mcp_server_name": "kb",
                "default_config": {"permission_policy": {"type": "always_ask"}}}],
    )
    coord = await client.beta.agents.create(name="coordinator", model="claude-sonnet-4-6", multiagent={
        "type": "multiagent_20261001",
        "subagents": {"type": "enabled", "inline_agents": {"type": "disabled"}, "predefined_agents": [spec.id]},
    })
    no_extra(coord)
    assert coord.multiagent is not None and coord.multiagent.type == "multiagent_20261001"
    # Defaults filled in (SDK params docstrings): no advisor, workflows enabled; the id pinned.
    assert coord.multiagent.advisor.type == "disabled" and coord.multiagent.workflows.type == "enabled"
    assert [(a.id, a.version) for a in coord.multiagent.subagents.predefined_agents] == [(spec.id, 1)]
    session = await client.beta.sessions.create(agent=coord.id, environment_id=env.id)
    no_extra(session)
    return session.id, spec.id


async def wait_for(check: Any, timeout: float = 10.0) -> Any:
    for _ in range(int(timeout / 0.02)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def test_multiagent_is_validated_and_merged_as_the_sdk_says(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="name at least one predefined agent"):
        await client.beta.agents.create(name="c", model="claude-sonnet-4-6", multiagent={
            "type": "multiagent_20261001", "subagents": {"type": "enabled", "inline_agents": {"type": "disabled"}}})
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.agents.create(name="c", model="claude-sonnet-4-6", multiagent={
            "type": "multiagent_20261001", "subagents": {"type": "enabled", "predefined_agents": ["agent_nope"]}})
    made = await client.beta.agents.create(name="c", model="claude-sonnet-4-6",
                                           multiagent={"type": "multiagent_20261001"})
    # An update merges level by level: a key left out keeps its stored value.
    updated = await client.beta.agents.update(made.id, version=made.version, multiagent={
        "type": "multiagent_20261001", "workflows": {"type": "disabled"}})
    assert updated.multiagent is not None and updated.multiagent.type == "multiagent_20261001"
    assert updated.multiagent.workflows.type == "disabled" and updated.multiagent.subagents.type == "enabled"
    cleared = await client.beta.agents.update(made.id, version=updated.version, multiagent=None)
    assert cleared.multiagent is None


async def test_a_subagent_runs_in_its_own_thread_and_its_approval_is_routed_by_id(
    server: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    session_id, _ = await coordinated_session(client)
    server.state.set_scenario({"rules": [{"steps": [
        {"subagent": SPECIALIST, "task": "check {user_text}", "steps": [
            {"mcp_tool": "lookup", "server": "kb", "result": "paid"},
            {"usage": {"input_tokens": 2000, "output_tokens": 100, "active_seconds": 4}}],
         "reply": "It was {last_tool_result}"},
        {"message": "Billing: {last_tool_result}"}]}]}, session_id=None)
    await client.beta.sessions.events.send(session_id, events=[
        {"type": "user.message", "content": [{"type": "text", "text": "invoice 7"}]}])

    async def idle_waiting() -> Any:
        page = await client.beta.sessions.events.list(session_id, limit=1000)
        last = page.data[-1] if page.data else None
        return last if last is not None and last.type == "session.status_idle" else None

    idle = await wait_for(idle_waiting)
    assert idle.stop_reason.type == "requires_action"
    primary = [e async for e in client.beta.sessions.events.list(session_id, limit=1000)]
    created = next(e for e in primary if e.type == "session.thread_created")
    ask = next(e for e in primary if e.type == "agent.mcp_tool_use")
    assert ask.session_thread_id == created.session_thread_id and idle.stop_reason.event_ids == [ask.id]
    sent = next(e for e in primary if e.type == "agent.thread_message_sent")
    assert (sent.to_session_thread_id, sent.to_agent_name) == (created.session_thread_id, SPECIALIST)
    # The confirmation names the tool use only (SDK params: no thread id) and the thread goes on.
    await client.beta.sessions.events.send(session_id, events=[
        {"type": "user.tool_confirmation", "tool_use_id": ask.id, "result": "allow"}])

    async def answered() -> Any:
        events = [e async for e in client.beta.sessions.events.list(session_id, limit=1000)]
        last = events[-1]
        return events if last.type == "session.status_idle" and last.stop_reason.type == "end_turn" else None

    events = await wait_for(answered)
    assert any(e.type == "agent.message" and e.content[0].text == "Billing: It was paid" for e in events)
    received = next(e for e in events if e.type == "agent.thread_message_received")
    assert (received.from_session_thread_id, received.from_agent_name) == (created.session_thread_id, SPECIALIST)
    # Its own stream holds what the primary did not: the result of the call.
    own = [e async for e in client.beta.sessions.threads.events.list(created.session_thread_id, session_id=session_id)]
    for e in own:
        no_extra(e)
    result = next(e for e in own if e.type == "agent.mcp_tool_result")
    assert result.mcp_tool_use_id == ask.id and not result.is_error
    assert not any(e.type == "agent.mcp_tool_result" for e in events)
    # The thread objects: the primary (no parent) and the subagent with its usage and stats.
    threads = [t async for t in client.beta.sessions.threads.list(session_id)]
    for t in threads:
        no_extra(t)
    main, child = threads
    assert main.parent_thread_id is None and child.parent_thread_id == main.id
    assert child.agent.type == "agent" and child.agent.name == SPECIALIST and child.agent.model.id == "claude-haiku-4-5"
    assert child.usage is not None and (child.usage.input_tokens, child.usage.active_seconds) == (2000, 4.0)
    assert child.stats is not None and child.stats.active_seconds == 4.0 and child.status == "idle"
    one = await client.beta.sessions.threads.retrieve(child.id, session_id=session_id)
    assert one.id == child.id
    idle_only = [t async for t in client.beta.sessions.threads.list(session_id, statuses=["running"])]
    assert idle_only == []
    archived = await client.beta.sessions.threads.archive(child.id, session_id=session_id)
    assert archived.archived_at is not None


async def test_an_interrupt_stops_the_subagent_and_closes_its_pending_call(
    server: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    session_id, _ = await coordinated_session(client)
    server.state.set_scenario({"rules": [{"steps": [
        {"subagent": SPECIALIST, "steps": [{"mcp_tool": "lookup", "server": "kb", "result": "x"}]},
        {"message": "never shown"}]}]})
    await client.beta.sessions.events.send(session_id, events=[
        {"type": "user.message", "content": [{"type": "text", "text": "go"}]}])

    async def waiting() -> Any:
        return server.state.sessions[session_id].pending

    await wait_for(waiting)
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.sessions.events.send(session_id, events=[
            {"type": "user.interrupt", "session_thread_id": "sthr_unknown"}])
    # No thread id: "every non-archived thread" (SDK user_interrupt_event_params.py).
    await client.beta.sessions.events.send(session_id, events=[{"type": "user.interrupt"}])

    async def stopped() -> Any:
        events = [e async for e in client.beta.sessions.events.list(session_id, limit=1000)]
        return events if events[-1].type == "session.status_idle" else None

    events = await wait_for(stopped)
    assert events[-1].stop_reason.type == "end_turn" and not any(e.type == "agent.message" for e in events)
    thread_idle = [e for e in events if e.type == "session.thread_status_idle"]
    assert thread_idle[-1].stop_reason.type == "end_turn"
    [child] = [t async for t in client.beta.sessions.threads.list(session_id) if t.parent_thread_id]
    own = [e async for e in client.beta.sessions.threads.events.list(child.id, session_id=session_id)]
    result = next(e for e in own if e.type == "agent.mcp_tool_result")
    # Docs session-threads: pending calls closed with this error result, no model sampling.
    assert result.is_error and result.content[0].text == INTERRUPTED


async def test_interrupting_one_thread_lets_the_coordinator_go_on(
    server: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    session_id, _ = await coordinated_session(client)
    server.state.set_scenario({"rules": [{"steps": [
        {"subagent": SPECIALIST, "steps": [{"sleep": 30}], "reply": "late"},
        {"message": "Going on without billing."}]}]})
    await client.beta.sessions.events.send(session_id, events=[
        {"type": "user.message", "content": [{"type": "text", "text": "go"}]}])

    async def running_child() -> Any:
        threads = server.state.sessions[session_id].threads.children
        return next((t for t in threads.values() if t.status == "running"), None)

    child = await wait_for(running_child)
    # The thread's own stream (no `/events/` segment, SDK threads/events.py) sees it stop.
    stream = await client.beta.sessions.threads.events.stream(child.id, session_id=session_id)
    await wait_for(lambda: _true(bool(child.subscribers)))
    await client.beta.sessions.events.send(session_id, events=[
        {"type": "user.interrupt", "session_thread_id": child.id}])
    async with stream:
        seen = [event async for event in _until_idle(stream)]
    assert seen[-1].type == "session.thread_status_idle" and seen[-1].session_thread_id == child.id

    async def answered() -> Any:
        events = [e async for e in client.beta.sessions.events.list(session_id, limit=1000)]
        return events if events[-1].type == "session.status_idle" else None

    events = await wait_for(answered)
    assert any(e.type == "agent.message" and e.content[0].text == "Going on without billing." for e in events)
    echo = next(e for e in events if e.type == "user.interrupt")
    assert echo.session_thread_id == child.id
    assert child.status == "idle"


async def _true(value: bool) -> bool:
    return value


async def _until_idle(stream: Any) -> AsyncIterator[Any]:
    async for event in stream:
        no_extra(event)
        yield event
        if event.type == "session.thread_status_idle":
            return
