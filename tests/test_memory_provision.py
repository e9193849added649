"""Issue 19: an environment with memory gets an agent with the agent toolset's file tools only
(how the agent reaches its stores); provision stays idempotent with it, and turning memory off
takes the tools away again. Real anthropic client against the emulator; real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis
import yaml

from app.config.memory import MEMORY_FILE_TOOLS
from app.config.model import AppConfig, parse_config
from app.provision import Provisioner, agent_differences, agent_spec
from app.sandbox.agents import AgentsEmulator
from tests.conftest import ROOT


def config(memory: bool) -> AppConfig:
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    data["environments"]["customers"]["memory"]["enabled"] = memory
    return parse_config(yaml.safe_dump(data))


async def test_memory_needs_the_file_tools_and_provision_stays_idempotent(redis: aioredis.Redis) -> None:
    on, off = config(True), config(False)
    off_tools = agent_spec(off, "customers", strict=False)["tools"]
    assert all(t["type"] != "agent_toolset_20260401" for t in off_tools)
    with AgentsEmulator() as emulator:
        client = emulator.client()
        agent_id = await Provisioner(client, redis, on, strict=False).ensure_agent("customers")
        assert agent_id
        again = Provisioner(client, redis, on, strict=False)
        assert await again.ensure_agent("customers") == agent_id
        agent = await client.beta.agents.retrieve(agent_id)
        assert agent.version == 1
        assert agent_differences(agent, agent_spec(on, "customers", strict=False)) == []
        [toolset] = [t for t in agent.tools if t.type == "agent_toolset_20260401"]
        assert toolset.default_config is not None and toolset.default_config.enabled is False
        assert sorted(c.name for c in toolset.configs if c.enabled) == sorted(MEMORY_FILE_TOOLS)
        # Memory off: the file tools go (a new version), and a second run changes nothing.
        await Provisioner(client, redis, off, strict=False).ensure_agent("customers")
        agent = await client.beta.agents.retrieve(agent_id)
        assert agent.version == 2 and all(t.type != "agent_toolset_20260401" for t in agent.tools)
        await Provisioner(client, redis, off, strict=False).ensure_agent("customers")
        assert (await client.beta.agents.retrieve(agent_id)).version == 2


async def test_stores_are_made_once_and_found_again_when_redis_forgot(redis: aioredis.Redis) -> None:
    from app.sessions.memory import ensure_store, known_stores

    with AgentsEmulator() as emulator:
        client = emulator.client()
        args = {"kind": "customer", "key": "acme", "label": "Acme", "name": "customer Acme", "description": "d"}
        first = await ensure_store(client, redis, **args)
        assert await ensure_store(client, redis, **args) == first
        await redis.flushall()  # ids lost: found again by the store's metadata, not made twice
        assert await ensure_store(client, redis, **args) == first
        assert (await known_stores(redis))[first]["label"] == "Acme"
        other = await ensure_store(client, redis, **{**args, "key": "globex", "name": "customer Globex"})
        assert other != first
        stores = [s async for s in client.beta.memory_stores.list()]
        assert sorted(s.id for s in stores) == sorted([first, other])
        assert stores[0].metadata["managed_by"] == "support-agent"
