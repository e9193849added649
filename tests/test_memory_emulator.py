"""The emulator's memory stores through the real `anthropic` client: stores, memories with the
content-hash precondition, versions (filters, redaction), and an agent's read and write through
a session's mount (scenario `memory` step), attributed to the session."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from app.sandbox.agents.api import AgentsEmulator


@pytest.fixture
def emulator() -> Iterator[AgentsEmulator]:
    with AgentsEmulator() as emu:
        yield emu


async def _agent_env(client: Any, tools: list[Any] | None = None) -> tuple[str, str]:
    toolset = [{"type": "agent_toolset_20260401"}] if tools is None else tools
    agent = await client.beta.agents.create(name="a", model="claude-sonnet-4-6", tools=toolset)
    env = await client.beta.environments.create(name="e", config={"type": "cloud"})
    return agent.id, env.id


async def test_memories_hash_precondition_and_versions(emulator: AgentsEmulator) -> None:
    client = emulator.client()
    store = await client.beta.memory_stores.create(name="Acme Corp: what we learned", metadata={"org": "acme"})
    assert store.id.startswith("memstore_") and store.metadata == {"org": "acme"}
    mem = await client.beta.memory_stores.memories.create(store.id, path="/setup.md", content="SSO via Okta")
    assert mem.content is None  # view=basic by default on create
    assert mem.content_sha256 == hashlib.sha256(b"SSO via Okta").hexdigest()
    with pytest.raises(anthropic.ConflictError) as conflict:
        await client.beta.memory_stores.memories.create(store.id, path="/setup.md", content="x")
    assert conflict.value.body["error"]["type"] == "memory_path_conflict_error"
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.memory_stores.memories.create(store.id, path="no-slash.md", content="x")
    stale = {"type": "content_sha256", "content_sha256": hashlib.sha256(b"other").hexdigest()}
    with pytest.raises(anthropic.ConflictError) as failed:
        await client.beta.memory_stores.memories.update(
            mem.id, memory_store_id=store.id, content="SSO via Azure AD", precondition=stale
        )
    assert failed.value.body["error"]["type"] == "memory_precondition_failed_error"
    fresh = {"type": "content_sha256", "content_sha256": mem.content_sha256}
    updated = await client.beta.memory_stores.memories.update(
        mem.id, memory_store_id=store.id, content="SSO via Azure AD", precondition=fresh
    )
    assert updated.memory_version_id != mem.memory_version_id
    # The same content again writes no version.
    same = await client.beta.memory_stores.memories.update(mem.id, memory_store_id=store.id, content="SSO via Azure AD")
    assert same.memory_version_id == updated.memory_version_id
    got = await client.beta.memory_stores.memories.retrieve(mem.id, memory_store_id=store.id)
    assert got.content == "SSO via Azure AD"  # view=full on retrieve

    versions = [v async for v in client.beta.memory_stores.memory_versions.list(store.id)]
    assert [v.operation for v in versions] == ["modified", "created"]  # newest first
    assert all(v.content is None for v in versions) and versions[0].created_by is not None
    assert versions[0].created_by.type == "api_actor"
    full = [v async for v in client.beta.memory_stores.memory_versions.list(store.id, view="full", operation="created")]
    assert [v.content for v in full] == ["SSO via Okta"]
    redacted = await client.beta.memory_stores.memory_versions.redact(full[0].id, memory_store_id=store.id)
    assert redacted.redacted_at is not None and redacted.content is None and redacted.path is None
    assert redacted.content_sha256 is None and redacted.redacted_by is not None
    again = await client.beta.memory_stores.memory_versions.retrieve(full[0].id, memory_store_id=store.id)
    assert again.content is None and again.created_by is not None  # created_by survives redaction

    with pytest.raises(anthropic.ConflictError):
        await client.beta.memory_stores.memories.delete(
            mem.id, memory_store_id=store.id, expected_content_sha256=mem.content_sha256
        )
    await client.beta.memory_stores.memories.delete(mem.id, memory_store_id=store.id)
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.memory_stores.memories.retrieve(mem.id, memory_store_id=store.id)
    lineage = [v async for v in client.beta.memory_stores.memory_versions.list(store.id, memory_id=mem.id)]
    assert lineage[0].operation == "deleted" and lineage[0].content_sha256 is None

    await client.beta.memory_stores.archive(store.id)
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.memory_stores.memories.create(store.id, path="/late.md", content="x")
    agent_id, env_id = await _agent_env(client)
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.sessions.create(
            agent=agent_id, environment_id=env_id, resources=[{"type": "memory_store", "memory_store_id": store.id}]
        )
    assert (await client.beta.memory_stores.delete(store.id)).type == "memory_store_deleted"
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.memory_stores.retrieve(store.id)


async def test_list_prefix_and_depth(emulator: AgentsEmulator) -> None:
    client = emulator.client()
    store = await client.beta.memory_stores.create(name="s")
    for path in ("/a.md", "/notes/x.md", "/notes/deep/y.md", "/notes-archive/z.md"):
        await client.beta.memory_stores.memories.create(store.id, path=path, content=path)
    under = [m.path async for m in client.beta.memory_stores.memories.list(store.id, path_prefix="/notes/")]
    assert under == ["/notes/deep/y.md", "/notes/x.md"]
    top = [(m.type, m.path) async for m in client.beta.memory_stores.memories.list(store.id, depth=1)]
    assert ("memory_prefix", "/notes/") in top and ("memory", "/a.md") in top
    with pytest.raises(anthropic.BadRequestError):
        await client.beta.memory_stores.memories.list(store.id, path_prefix="/notes")
    paged = [m.path async for m in client.beta.memory_stores.memories.list(store.id, limit=1)]
    assert len(paged) == 4


async def _idle(client: Any, session_id: str) -> None:
    for _ in range(200):
        session = await client.beta.sessions.retrieve(session_id)
        if session.status == "idle":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("session never went idle")


async def test_agent_reads_and_writes_through_its_mount(emulator: AgentsEmulator) -> None:
    client = emulator.client()
    agent_id, env_id = await _agent_env(client)
    customer = await client.beta.memory_stores.create(name="Acme Corp")
    product = await client.beta.memory_stores.create(name="Product facts")
    await client.beta.memory_stores.memories.create(product.id, path="/limits.md", content="10 seats")
    emulator.set_scenario({"rules": [
        {"match": "learn", "steps": [
            {"memory": "write", "path": "/setup.md", "content": "Acme uses Okta"},
            {"memory": "write", "path": "/hack.md", "content": "x", "store": "Product facts"},
        ]},
        {"match": "recall", "steps": [
            {"memory": "read", "path": "/setup.md"},
            {"memory": "read", "path": "/limits.md"},
            {"message": "Remembered: {last_tool_result}"},
        ]},
    ]})
    resources = [
        {"type": "memory_store", "memory_store_id": customer.id, "access": "read_write", "instructions": "per org"},
        {"type": "memory_store", "memory_store_id": product.id, "access": "read_only"},
    ]
    first = await client.beta.sessions.create(agent=agent_id, environment_id=env_id, resources=resources)
    mounts = {r.memory_store_id: r for r in first.resources}
    assert mounts[customer.id].mount_path == "/mnt/memory/acme-corp"
    assert mounts[product.id].access == "read_only" and mounts[product.id].name == "Product facts"
    await client.beta.sessions.events.send(
        first.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "learn this"}]}]
    )
    await _idle(client, first.id)
    events = [e async for e in client.beta.sessions.events.list(first.id)]
    uses = [e for e in events if e.type == "agent.tool_use"]
    assert [u.name for u in uses] == ["write", "write"]
    assert uses[0].input == {"file_path": "/mnt/memory/acme-corp/setup.md", "content": "Acme uses Okta"}
    results = [e for e in events if e.type == "agent.tool_result"]
    assert [r.is_error for r in results] == [False, True]  # the product store is mounted read-only
    taught = [v async for v in client.beta.memory_stores.memory_versions.list(customer.id, session_id=first.id)]
    assert len(taught) == 1 and taught[0].created_by is not None
    assert taught[0].created_by.type == "session_actor" and taught[0].created_by.session_id == first.id
    assert [v async for v in client.beta.memory_stores.memory_versions.list(product.id, session_id=first.id)] == []

    second = await client.beta.sessions.create(agent=agent_id, environment_id=env_id, resources=resources)
    await client.beta.sessions.events.send(
        second.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "recall"}]}]
    )
    await _idle(client, second.id)
    events = [e async for e in client.beta.sessions.events.list(second.id)]
    reads = [e.input["file_path"] for e in events if e.type == "agent.tool_use"]
    assert reads == ["/mnt/memory/acme-corp/setup.md", "/mnt/memory/product-facts/limits.md"]
    texts = [e.content[0].text for e in events if e.type == "agent.tool_result"]
    assert texts == ["Acme uses Okta", "10 seats"]
    listed = [s.id async for s in client.beta.sessions.list(memory_store_id=customer.id)]
    assert sorted(listed) == sorted([first.id, second.id])
    # Another session without the customer's store cannot read it.
    other = await client.beta.sessions.create(agent=agent_id, environment_id=env_id, resources=resources[1:])
    await client.beta.sessions.events.send(
        other.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "recall"}]}]
    )
    await _idle(client, other.id)
    events = [e async for e in client.beta.sessions.events.list(other.id)]
    first_result = next(e for e in events if e.type == "agent.tool_result")
    assert first_result.is_error and "Acme" not in first_result.content[0].text


async def test_an_agent_without_file_tools_cannot_use_its_memory(emulator: AgentsEmulator) -> None:
    client = emulator.client()
    no_write = [{"type": "agent_toolset_20260401", "configs": [{"name": "write", "enabled": False}]}]
    agent_id, env_id = await _agent_env(client, no_write)
    store = await client.beta.memory_stores.create(name="s")
    emulator.set_scenario([{"match": None, "steps": [{"memory": "write", "path": "/a.md", "content": "x"}]}])
    session = await client.beta.sessions.create(
        agent=agent_id, environment_id=env_id, resources=[{"type": "memory_store", "memory_store_id": store.id}]
    )
    await client.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]
    )
    await _idle(client, session.id)
    events = [e async for e in client.beta.sessions.events.list(session.id)]
    assert not [e for e in events if e.type == "agent.tool_use"]
    assert [e.error.type for e in events if e.type == "session.error"] == ["unknown_error"]
    assert [m async for m in client.beta.memory_stores.memories.list(store.id)] == []


async def test_reset_forgets_stores_and_new_ones_attach(emulator: AgentsEmulator) -> None:
    client = emulator.client()
    old = await client.beta.memory_stores.create(name="old")
    emulator.state.reset()
    with pytest.raises(anthropic.NotFoundError):
        await client.beta.memory_stores.retrieve(old.id)
    agent_id, env_id = await _agent_env(client)
    store = await client.beta.memory_stores.create(name="new")
    session = await client.beta.sessions.create(
        agent=agent_id, environment_id=env_id, resources=[{"type": "memory_store", "memory_store_id": store.id}]
    )
    assert [r.memory_store_id for r in session.resources if r.type == "memory_store"] == [store.id]


async def test_objects_carry_exactly_the_sdk_fields(emulator: AgentsEmulator) -> None:
    from anthropic.types.beta import BetaManagedAgentsMemoryStore
    from anthropic.types.beta.memory_stores import BetaManagedAgentsMemory, BetaManagedAgentsMemoryVersion

    client = emulator.client()
    store = await client.beta.memory_stores.create(name="s")
    await client.beta.memory_stores.memories.create(store.id, path="/a.md", content="x")
    raw_store = await (await client.beta.memory_stores.with_raw_response.retrieve(store.id)).json()
    mems = [m async for m in client.beta.memory_stores.memories.list(store.id)]
    raw_mem = await (await client.beta.memory_stores.memories.with_raw_response.retrieve(
        mems[0].id, memory_store_id=store.id)).json()
    versions = [v async for v in client.beta.memory_stores.memory_versions.list(store.id)]
    raw_version = await (await client.beta.memory_stores.memory_versions.with_raw_response.retrieve(
        versions[0].id, memory_store_id=store.id)).json()
    for raw, model in ((raw_store, BetaManagedAgentsMemoryStore), (raw_mem, BetaManagedAgentsMemory),
                       (raw_version, BetaManagedAgentsMemoryVersion)):
        assert set(raw) == set(model.model_fields), model.__name__
        model.model_validate(raw)
