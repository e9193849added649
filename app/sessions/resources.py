"""Find (or create) the Managed Agents agent and environment the config names.

The ids live in Redis under `sa:provisioned`, so the running bot uses what `provision` made
without anyone copying ids around. When nothing was provisioned yet, the first session
creates a minimal agent and environment from the config, by name, reusing existing ones.
"""

from __future__ import annotations

import logging
from typing import Any

import redis.asyncio as aioredis
from anthropic import AsyncAnthropic

from app.config.model import AppConfig

log = logging.getLogger(__name__)
PROVISIONED = "sa:provisioned"


async def recorded_id(redis: aioredis.Redis, kind: str, name: str) -> str | None:
    value = await redis.hget(PROVISIONED, f"{kind}:{name}")
    return str(value) if value else None


async def record_id(redis: aioredis.Redis, kind: str, name: str, resource_id: str) -> None:
    await redis.hset(PROVISIONED, f"{kind}:{name}", resource_id)


def environment_config(config: AppConfig, env_name: str) -> dict[str, Any]:
    managed = config.environments[env_name].managed_environment
    networking: dict[str, Any]
    if managed.networking == "limited":
        networking = {
            "type": "limited",
            "allowed_hosts": managed.allowed_hosts,
            "allow_mcp_servers": managed.allow_mcp_servers,
            "allow_package_managers": managed.allow_package_managers,
        }
    else:
        networking = {"type": "unrestricted"}
    return {"type": "cloud", "networking": networking}


async def agent_id(client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, env_name: str) -> str:
    """The agent for an environment (`<agent name>-<environment>`)."""
    name = f"{config.agent.name}-{env_name}"
    found = await recorded_id(redis, "agent", name)
    if found:
        return found
    async for agent in client.beta.agents.list(limit=100):
        if agent.name == name and not agent.archived_at:
            await record_id(redis, "agent", name, agent.id)
            return agent.id
    created = await client.beta.agents.create(
        name=name,
        model=config.model_for(env_name),
        system=config.agent.system,
        metadata={"managed_by": "support-agent", "environment": env_name},
    )
    log.info("agent created", extra={"agent_id": created.id, "environment": env_name})
    await record_id(redis, "agent", name, created.id)
    return created.id


async def environment_id(
    client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, env_name: str
) -> str:
    managed = config.environments[env_name].managed_environment
    if managed.id:
        return managed.id
    assert managed.name is not None
    found = await recorded_id(redis, "environment", managed.name)
    if found:
        return found
    async for env in client.beta.environments.list(limit=100):
        if env.name == managed.name and not env.archived_at:
            await record_id(redis, "environment", managed.name, env.id)
            return env.id
    created = await client.beta.environments.create(
        name=managed.name,
        config=environment_config(config, env_name),  # type: ignore[arg-type]
        metadata={"managed_by": "support-agent"},
    )
    log.info("environment created", extra={"environment_id": created.id, "environment": env_name})
    await record_id(redis, "environment", managed.name, created.id)
    return created.id


async def vault_ids(redis: aioredis.Redis, env_name: str) -> list[str]:
    found = await recorded_id(redis, "vault", env_name)
    return [found] if found else []
