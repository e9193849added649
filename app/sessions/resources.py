"""Find (or create) the Managed Agents agent and environment the config names.

The ids live in Redis under `sa:provisioned`, so the running bot uses what `provision` made
without anyone copying ids around. When nothing was provisioned yet, the first session
creates a minimal agent and environment from the config, by name, reusing existing ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
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
    """The agent for an environment (`<agent name>-<environment>`).

    Provision's when it ran; else found by name or created, with the environment's MCP servers
    and toolset policies (the same builder as `support-agent provision`)."""
    from app.provision import Provisioner, agent_name

    name = agent_name(config, env_name)
    found = await recorded_id(redis, "agent", name)
    if found:
        return found
    async with first_use_lock(redis, f"agent:{name}"):
        found = await recorded_id(redis, "agent", name)
        if found:
            return found
        made = await Provisioner(client, redis, config, strict=False).ensure_agent(env_name)
        assert made is not None
        log.info("agent ready without provision", extra={"agent_id": made, "environment": env_name})
        return made


async def environment_id(
    client: AsyncAnthropic, redis: aioredis.Redis, config: AppConfig, env_name: str
) -> str:
    """The environment's Managed Agents environment: the configured id, provision's, else found
    by name or created (the same code as `support-agent provision`, one process at a time)."""
    managed = config.environments[env_name].managed_environment
    if managed.id:
        return managed.id
    assert managed.name is not None
    found = await recorded_id(redis, "environment", managed.name)
    if found:
        return found
    from app.provision import Provisioner

    async with first_use_lock(redis, f"environment:{managed.name}"):
        found = await recorded_id(redis, "environment", managed.name)
        if found:
            return found
        made = await Provisioner(client, redis, config, strict=False).ensure_environment(env_name)
        assert made is not None
        log.info("environment ready without provision", extra={"environment_id": made, "environment": env_name})
        return made


async def vault_ids(
    redis: aioredis.Redis,
    env_name: str,
    client: AsyncAnthropic | None = None,
    config: AppConfig | None = None,
) -> list[str]:
    """The environment's vault: provision's, else (given a client and config) found or made
    from the `MCP_TOKEN_*` variables this process has."""
    found = await recorded_id(redis, "vault", env_name)
    if found or client is None or config is None:
        return [found] if found else []
    # Nothing to hold last time (no MCP token in this process): not asked again for a while.
    # Else every session created took the one first-use lock and listed the vaults, which made
    # session starts one at a time (issue 14: `bench workers --sessions 1000` started ~2 a second).
    known = _tokens_of(config, env_name)
    if _NO_VAULT.get(known, 0.0) > time.monotonic():
        return []
    from app.provision import Provisioner

    async with first_use_lock(redis, f"vault:{env_name}"):
        found = await recorded_id(redis, "vault", env_name)
        if not found:
            found = await Provisioner(client, redis, config, strict=False).ensure_vault(env_name)
    if not found:
        _NO_VAULT[known] = time.monotonic() + NO_VAULT_RECHECK_SECONDS
    return [found] if found else []


# Per environment and the tokens its servers would use: until when (monotonic) this process
# knows it has nothing to put in a vault.
_NO_VAULT: dict[tuple[str, tuple[str, ...]], float] = {}
NO_VAULT_RECHECK_SECONDS = 60.0


def _tokens_of(config: AppConfig, env_name: str) -> tuple[str, tuple[str, ...]]:
    """The environment's servers and a digest of the tokens they would use (never the tokens)."""
    env = config.environments.get(env_name)
    servers = env.mcp_servers.values() if env is not None else []
    return env_name, tuple(sorted(
        f"{s.url}={hashlib.sha256(os.environ.get(s.token_env or '', '').encode()).hexdigest()[:16]}"
        for s in servers
    ))


@contextlib.asynccontextmanager
async def first_use_lock(redis: aioredis.Redis, what: str, wait_seconds: float = 30.0) -> AsyncIterator[None]:
    """One process at a time makes a missing resource (the others then find its id)."""
    key = f"sa:provisioning:{what}"
    token = uuid.uuid4().hex
    deadline = time.monotonic() + wait_seconds
    while not await redis.set(key, token, nx=True, ex=int(wait_seconds) + 5):
        if time.monotonic() > deadline:
            break  # a crashed holder: go ahead (the lock expires soon anyway)
        await asyncio.sleep(0.1)
    try:
        yield
    finally:
        if await redis.get(key) == token:
            await redis.delete(key)
