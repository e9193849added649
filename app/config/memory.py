"""Memory config: which memory stores a ticket's session gets (issue 19).

Per environment, `memory` may attach
- a **product** store: one per environment, always read-only to the agent (staff curate it);
- a **customer** store: one per customer organisation, shared by that organisation's tickets.

A customer organisation is a channel listed under a top-level `customers` entry, or a Slack
Connect team (the requester's home team when it is not our workspace). An environment without
`memory.customers` never sees any customer's memory: that is how internal tickets stay apart,
unless an admin gives that environment `customers` too (read-only, typically).

Pure: no I/O. `app/sessions/memory.py` makes and attaches the stores.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ORG_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Slack team ids as a customer key: "team-T0123" (kept apart from configured names).
TEAM_PREFIX = "team-"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductMemory(_Strict):
    """The environment's product store: what every ticket there may read, never write."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    # SDK memory_store_create_params: description <= 1,024, "included in the agent's system prompt".
    description: str = Field(default="Product facts curated by the support team.", max_length=1024)
    # SDK BetaManagedAgentsMemoryStoreResourceParam.instructions: "Max 4096 chars".
    instructions: str | None = Field(default=None, max_length=4096)


class CustomerMemory(_Strict):
    """A store per customer organisation, attached to that organisation's tickets."""

    access: Literal["read_write", "read_only"] = "read_write"
    description: str = Field(
        default="What the support team learned about this customer's setup in earlier tickets.",
        max_length=1024,
    )
    instructions: str | None = Field(
        default=(
            "Read this customer's notes before answering. When you learn a durable fact about their "
            "setup (plan, integrations, configuration), write it as a short file. Never store "
            "passwords, tokens or personal data."
        ),
        max_length=4096,
    )
    slack_connect: bool = Field(
        default=True, description="A Slack Connect requester's home team is a customer organisation"
    )


class EnvironmentMemory(_Strict):
    enabled: bool = True
    product: ProductMemory | None = None
    customers: CustomerMemory | None = None
    forget_with_retention: bool = Field(
        default=False,
        description="When retention deletes a ticket's session, delete and redact what it taught",
    )


class CustomerOrg(_Strict):
    """A customer organisation named in config: its channels and Slack teams."""

    name: str | None = Field(default=None, max_length=200)
    channels: list[str] = Field(default_factory=list)
    teams: list[str] = Field(default_factory=list)


def check_customers(customers: dict[str, CustomerOrg]) -> None:
    """Keys are short slugs; a channel or team belongs to one organisation only."""
    seen: dict[str, str] = {}
    for key, org in customers.items():
        if not ORG_KEY.match(key) or key.startswith(TEAM_PREFIX):
            raise ValueError(
                f"customers: {key!r} must be lowercase letters, digits, - or _ (at most 64), "
                f"not starting with {TEAM_PREFIX!r}"
            )
        for ident in [*org.channels, *org.teams]:
            if ident in seen and seen[ident] != key:
                raise ValueError(f"customers: {ident} is listed under both {seen[ident]!r} and {key!r}")
            seen[ident] = key


def customer_key(
    customers: dict[str, CustomerOrg],
    memory: EnvironmentMemory | None,
    *,
    channel_id: str,
    requester_team: str | None,
    our_team: str,
) -> str | None:
    """The customer organisation whose store a ticket gets, or None (no customer memory).

    A channel mapped in config wins; else the requester's Slack Connect team (configured under a
    name, or, with `slack_connect`, as `team-<id>`). A requester from our own workspace in an
    unmapped channel has no customer: failing closed, never a guess."""
    if memory is None or not memory.enabled or memory.customers is None:
        return None
    for key, org in customers.items():
        if channel_id in org.channels:
            return key
    if requester_team and requester_team != our_team:
        for key, org in customers.items():
            if requester_team in org.teams:
                return key
        if memory.customers.slack_connect:
            return TEAM_PREFIX + requester_team
    return None


def customer_label(customers: dict[str, CustomerOrg], key: str) -> str:
    org = customers.get(key)
    if org is not None and org.name:
        return org.name
    return key


def customer_store_name(customers: dict[str, CustomerOrg], key: str) -> str:
    """1-255 characters (SDK); the mount path's slug comes from it."""
    return f"customer {customer_label(customers, key)}"[:255]


def product_store_name(agent_name: str, env_name: str, product: ProductMemory) -> str:
    return (product.name or f"{agent_name} product {env_name}")[:255]


# The agent reaches its memory stores with the agent toolset's file tools (Docs
# managed-agents/memory: mounted under /mnt/memory/, read and written with the file tools); only
# those are turned on, always allowed: bash, web fetch and search stay off.
MEMORY_FILE_TOOLS = ("read", "write", "edit", "glob", "grep")


def memory_toolset(memory: EnvironmentMemory | None) -> list[dict[str, Any]]:
    """The `agent_toolset_20260401` entry an agent with memory needs (SDK
    `BetaManagedAgentsAgentToolset20260401Params`), or nothing."""
    if memory is None or not memory.enabled or (memory.product is None and memory.customers is None):
        return []
    return [{
        "type": "agent_toolset_20260401",
        "default_config": {"enabled": False, "permission_policy": {"type": "always_allow"}},
        "configs": [
            {"name": name, "enabled": True, "permission_policy": {"type": "always_allow"}}
            for name in MEMORY_FILE_TOOLS
        ],
    }]


def toolset_signature(tools: list[Any]) -> tuple[bool, list[str]] | None:
    """What of an agent's `agent_toolset_20260401` we manage, comparable between a spec and an
    agent as the API returns it (defaults filled in): default on/off and the tools turned on."""
    for tool in tools:
        if tool.get("type") != "agent_toolset_20260401":
            continue
        default_on = bool((tool.get("default_config") or {}).get("enabled", True))
        enabled = {str(c.get("name")): bool(c.get("enabled", default_on)) for c in tool.get("configs") or []}
        return default_on, sorted(name for name, on in enabled.items() if on)
    return None
