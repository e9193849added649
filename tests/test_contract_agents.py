"""The Managed Agents emulator against the published contract (issue 15, Must deliver 2).

Every event type of the installed SDK's union is produced by the emulator and parsed back by
the real SDK; the documented sequences of Anthropic's guides (events-and-streaming "Live
previews", anthropics/skills managed-agents-client-patterns.md sections 2, 3 and 6) are played
and checked; `user.define_outcome` and session `resources` are accepted in the SDK's shapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from app.sandbox.agents import AgentsEmulator
from app.sandbox.agents.events import PREVIEW_TYPES, sample_event, sdk_event_types, validate_with_union
from app.sessions.event_table import HANDLED, IGNORED
from tests.test_agents_emulator import KEY, collect, no_extras, setup_session, text


@pytest.fixture(scope="module")
def server() -> Iterator[AgentsEmulator]:
    emulator = AgentsEmulator(api_key=KEY).start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emu(server: AgentsEmulator) -> AgentsEmulator:
    server.state.reset()
    server.state.set_scenario(None)
    return server


@pytest.fixture
async def client(emu: AgentsEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    c = anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.url, max_retries=0, _strict_response_validation=True)
    yield c
    await c.close()

# Produced by the emulator's own flow (turns, errors, deletes) rather than by `event` steps.
NATIVE = {"session.status_idle", "session.status_terminated", "session.deleted"}


def event_steps(types: set[str]) -> list[dict[str, Any]]:
    return [{"event": t} for t in sorted(types)]


def test_every_union_type_has_a_sample_the_sdk_parses() -> None:
    types = sdk_event_types()
    assert set(HANDLED) | set(IGNORED) == types  # the app's table covers the same union
    for event_type in types:
        parsed = validate_with_union(sample_event(event_type))
        assert parsed.type == event_type  # type: ignore[attr-defined]


async def test_the_emulator_emits_every_sdk_event_type(emu: AgentsEmulator, client: anthropic.AsyncAnthropic) -> None:
    stepped = sdk_event_types() - PREVIEW_TYPES - NATIVE
    emu.set_scenario({"rules": [{"steps": [
        *event_steps(stepped), {"message": "done", "deltas": 2}, {"event": "session.status_terminated"},
    ]}]})
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("go")])
        events = await collect(stream, until=lambda e: e.type == "session.status_terminated")
    listed = [e async for e in client.beta.sessions.events.list(session.id)]
    for event in listed:
        no_extras(event)
    # A turn's natural end and a delete give the last two.
    emu.set_scenario(None)
    _, other = await setup_session(client)
    async with await client.beta.sessions.events.stream(other.id) as stream:
        await client.beta.sessions.events.send(other.id, events=[text("hi")])
        more = await collect(stream)
        await client.beta.sessions.delete(other.id)
        more += await collect(stream, until=lambda e: e.type == "session.deleted")
    seen = {e.type for e in [*events, *listed, *more]}
    assert sdk_event_types() - seen == set()
    # Each arrived as the SDK's own model for its type (not a fallback).
    for event in [*events, *more]:
        assert type(event).__name__.startswith("BetaManagedAgents"), event.type


async def test_a_failed_attempt_is_previewed_cut_off_and_retried(
    emu: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emu.set_scenario(Scenario_reply({"message": "The answer is 42.", "deltas": 4, "fail_attempts": 1,
                                     "fail_after": 2, "fail_error": "model_overloaded_error"}))
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("q")])
        events = await collect(stream)
    types = [e.type for e in events]
    first_start = types.index("event_start")
    failed_id = events[first_start].event.id
    assert types[first_start:first_start + 8] == [
        "event_start", "event_delta", "event_delta",
        "span.model_request_end",  # closes the cut-off preview; no agent.message for it
        "session.error", "session.status_rescheduled", "session.status_running", "span.model_request_start",
    ]
    ended = events[first_start + 3]
    assert ended.is_error and ended.model_request_start_id == events[first_start - 1].id
    assert events[first_start + 4].error.retry_status.type == "retrying"
    messages = [e for e in events if e.type == "agent.message"]
    assert [m.content[0].text for m in messages] == ["The answer is 42."]
    assert messages[0].id != failed_id
    assert failed_id not in {e.id async for e in client.beta.sessions.events.list(session.id)}
    partial = "".join(e.delta.content.text for e in events if e.type == "event_delta" and e.event_id == failed_id)
    assert partial and "The answer is 42.".startswith(partial) and partial != "The answer is 42."


async def test_idle_reaches_the_stream_before_retrieve_and_archive_say_so(
    emu: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emu.set_scenario({"status_lag": 0.6, "rules": [{"steps": [{"message": "hi"}]}]})
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("q")])
        await collect(stream)
    idle_at = time.monotonic()
    assert (await client.beta.sessions.retrieve(session.id)).status == "running"
    with pytest.raises(anthropic.BadRequestError, match=r"while running|running session"):
        await client.beta.sessions.archive(session.id)
    while (await client.beta.sessions.retrieve(session.id)).status == "running":
        assert time.monotonic() - idle_at < 3
        await asyncio.sleep(0.1)
    archived = await client.beta.sessions.archive(session.id)
    assert archived.archived_at is not None


async def test_an_interrupt_completes_at_a_safe_boundary(emu: AgentsEmulator, client: anthropic.AsyncAnthropic) -> None:
    emu.set_scenario({"interrupt": "boundary", "rules": [{"steps": [
        {"message": "A slow but whole sentence.", "deltas": 5, "delta_delay": 0.08},
        {"message": "never said"},
    ]}]})
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id, event_deltas=["agent.message"]) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("q")])
        events = await collect(stream, until=lambda e: e.type == "event_delta")
        await client.beta.sessions.events.send(session.id, events=[{"type": "user.interrupt"}])
        events += await collect(stream)
    types = [e.type for e in events]
    # The step in progress finished after the interrupt was echoed; the next one never ran.
    assert types.index("user.interrupt") < types.index("agent.message")
    assert [e.content[0].text for e in events if e.type == "agent.message"] == ["A slow but whole sentence."]
    assert types[-2:] == ["span.model_request_end", "session.status_idle"]
    assert events[-1].stop_reason.type == "end_turn"


async def test_a_queued_message_is_echoed_twice(emu: AgentsEmulator, client: anthropic.AsyncAnthropic) -> None:
    emu.set_scenario({"rules": [{"match": "first", "steps": [{"sleep": 0.2}, {"message": "one"}]}]})
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("first")])
        sent = await client.beta.sessions.events.send(session.id, events=[text("second")])
        events = await collect(stream, until=lambda e: e.type == "agent.message" and e.content[0].text != "one")
    assert sent.data
    queued_id = sent.data[0].id
    echoes = [e for e in events if e.id == queued_id]
    assert [e.processed_at is None for e in echoes] == [True, False]


async def test_define_outcome_and_session_resources(emu: AgentsEmulator, client: anthropic.AsyncAnthropic) -> None:
    emu.set_scenario({"rules": [{"match": "refund", "steps": [
        {"message": "Draft."}, {"evaluate": "needs_revision"}, {"message": "Final."}, {"evaluate": "satisfied"},
    ]}]})
    # A memory store must exist to be attached (SDK: "Must belong to the caller's organization").
    store = await client.beta.memory_stores.create(name="Product facts")
    _, session = await setup_session(
        client,
        resources=[
            {"type": "github_repository", "url": "https://github.com/acme/docs", "authorization_token": "ghp_x"},
            {"type": "file", "file_id": "file_123"},
            {"type": "memory_store", "memory_store_id": store.id, "access": "read_only"},
        ],
    )
    no_extras(session)
    assert [r.type for r in session.resources] == ["github_repository", "file", "memory_store"]
    assert session.resources[0].mount_path == "/workspace/docs"
    assert "ghp_x" not in session.model_dump_json()
    async with await client.beta.sessions.events.stream(session.id) as stream:
        sent = await client.beta.sessions.events.send(session.id, events=[{
            "type": "user.define_outcome", "description": "Explain refunds",
            "rubric": {"type": "text", "content": "Mentions 5 days"},
        }])
        events = await collect(stream)
    assert sent.data
    echo: Any = sent.data[0]
    assert echo.type == "user.define_outcome" and echo.outcome_id.startswith("outc_") and echo.processed_at
    ends = [e for e in events if e.type == "span.outcome_evaluation_end"]
    assert [(e.result, e.iteration, e.outcome_id) for e in ends] == [
        ("needs_revision", 0, echo.outcome_id), ("satisfied", 1, echo.outcome_id)
    ]
    final = await client.beta.sessions.retrieve(session.id)
    no_extras(final)
    [evaluation] = final.outcome_evaluations
    assert evaluation.result == "satisfied" and evaluation.iteration == 1 and evaluation.completed_at
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.events.send(session.id, events=[{
            "type": "user.define_outcome", "description": "x", "rubric": {"type": "text", "content": "y"},
            "max_iterations": 21,
        }])


async def test_a_stop_reason_newer_than_the_sdk_can_be_emitted(
    emu: AgentsEmulator, client: anthropic.AsyncAnthropic
) -> None:
    emu.set_scenario(Scenario_reply({"message": "hm"}, {"idle": "paused_for_maintenance"}))
    _, session = await setup_session(client)
    lenient = anthropic.AsyncAnthropic(api_key=emu.api_key, base_url=emu.url, max_retries=0)  # as the app's
    async with await lenient.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("q")])
        events = [e async for e in _until_idle(stream)]
    await lenient.close()
    assert events[-1].stop_reason.type == "paused_for_maintenance"


async def _until_idle(stream: Any) -> Any:
    async with asyncio.timeout(5):
        async for event in stream:
            yield event
            if event.type == "session.status_idle":
                return


def Scenario_reply(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"rules": [{"steps": list(steps)}]}
