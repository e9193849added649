"""The Managed Agents emulator's outcome rules (issue 18), through the real anthropic client:
an outcome defined mid-turn is accepted on receipt (docs events-and-streaming; the SDK echo's
`processed_at` is required) and worked on after the turn; `evaluate` reports the grader's usage
(SDK span_outcome_evaluation_end_event.py) and grades nothing when no outcome is being worked on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import pytest

from app.sandbox.agents import AgentsEmulator
from tests.test_agents_emulator import KEY, collect, setup_session, text


@pytest.fixture(scope="module")
def server() -> Iterator[AgentsEmulator]:
    emulator = AgentsEmulator(api_key=KEY).start()
    yield emulator
    emulator.stop()


@pytest.fixture
async def client(server: AgentsEmulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    server.state.reset()
    server.state.set_scenario({"rules": [
        {"match": "slow", "steps": [{"sleep": 0.3}, {"message": "slow answer"},
                                    {"evaluate": "satisfied", "grader_usage": {"input_tokens": 99}}]},
        {"match": "refund", "steps": [
            {"message": "Draft."},
            {"evaluate": "needs_revision", "explanation": "no window",
             "grader_usage": {"input_tokens": 1200, "output_tokens": 80, "cache_read_input_tokens": 7}},
            {"message": "Final."},
            {"evaluate": "satisfied", "grader_usage": {"input_tokens": 1300, "output_tokens": 90}},
        ]},
    ]})
    c = anthropic.AsyncAnthropic(api_key=KEY, base_url=server.url, max_retries=0, _strict_response_validation=True)
    yield c
    await c.close()


def outcome(description: str) -> Any:
    return {"type": "user.define_outcome", "description": description,
            "rubric": {"type": "text", "content": "States the refund window."}, "max_iterations": 3}


async def test_grader_usage_and_no_grading_without_an_outcome(client: anthropic.AsyncAnthropic) -> None:
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("slow please")])
        plain = await collect(stream)
    # A plain message: the scenario's evaluate step has no outcome to grade.
    assert not [e for e in plain if e.type.startswith("span.outcome_evaluation")]
    assert (await client.beta.sessions.retrieve(session.id)).outcome_evaluations == []
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[outcome("Can I get a refund?")])
        events = await collect(stream)
    ends = [e for e in events if e.type == "span.outcome_evaluation_end"]
    assert [(e.iteration, e.result) for e in ends] == [(0, "needs_revision"), (1, "satisfied")]
    assert (ends[0].usage.input_tokens, ends[0].usage.output_tokens, ends[0].usage.cache_read_input_tokens) == (
        1200, 80, 7)
    assert ends[1].usage.input_tokens == 1300 and ends[0].explanation == "no window"
    starts = [e for e in events if e.type == "span.outcome_evaluation_start"]
    assert [e.id for e in starts] == [e.outcome_evaluation_start_id for e in ends]


async def test_an_outcome_sent_mid_turn_is_accepted_at_once_and_worked_on_next(
    client: anthropic.AsyncAnthropic,
) -> None:
    _, session = await setup_session(client)
    async with await client.beta.sessions.events.stream(session.id) as stream:
        await client.beta.sessions.events.send(session.id, events=[text("slow please")])
        sent = await client.beta.sessions.events.send(session.id, events=[outcome("A refund?")])
        [waiting] = (await client.beta.sessions.retrieve(session.id)).outcome_evaluations
        assert waiting.result == "pending"  # "before the agent begins work" (the slow turn still runs)
        events = await collect(stream, until=lambda e: e.type == "span.outcome_evaluation_end"
                               and e.result == "satisfied" and e.iteration == 1)
    echo: Any = sent.data[0]
    assert echo.type == "user.define_outcome" and echo.processed_at is not None
    [entry] = (await client.beta.sessions.retrieve(session.id)).outcome_evaluations
    assert (entry.outcome_id, entry.result, entry.iteration) == (echo.outcome_id, "satisfied", 1)
    echoes = [e for e in events if e.type == "user.define_outcome"]
    assert len(echoes) == 1 and echoes[0].processed_at is not None  # once, never as queued
    order = [e.type for e in events if e.type in ("agent.message", "user.define_outcome")]
    assert order[:2] == ["user.define_outcome", "agent.message"]  # accepted before the slow answer
    texts = [e.content[0].text for e in events if e.type == "agent.message"]
    assert texts == ["slow answer", "Draft.", "Final."]  # its work came after the turn in progress
    listed = [e async for e in client.beta.sessions.events.list(session.id, types=["user.define_outcome"])]
    assert len(listed) == 1
