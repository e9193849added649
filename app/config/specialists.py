"""Specialists in `support-agent.yml`: subagents the environment's agent coordinates.

Per environment, `specialists` names saved agents the main agent (the coordinator) may hand a
part of a ticket to (Managed Agents multiagent, SDK `multiagent_20261001` with
`subagents.predefined_agents`). Each has its own model, system prompt and MCP servers.

All agents of a session share its sandbox and its vault credentials (docs
managed-agents/multiagent-orchestration), so what a specialist can reach is decided by the MCP
servers it declares, not by the vault: a specialist names servers of its own environment (the
vault holds their credentials) and sets their tool policies for itself. Bridged servers are
not offered to specialists: their tools are custom tools the worker runs for the coordinator.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

if TYPE_CHECKING:
    from app.config.model import AppConfig

PermissionPolicy = Annotated[str, Field(pattern="^(always_allow|always_ask|auto)$")]
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# SDK beta_managed_agents_multiagent_subagents_enabled_params.py: predefined_agents "At most 20".
MAX_SPECIALISTS = 20
# Between a specialist's own name and its coordinator's in the saved agent's name: the timeline
# shows the part before it (app/render/threads.py), provision finds the agent by the whole.
NAME_SEPARATOR = "@"


class SpecialistServer(BaseModel):
    """One of the environment's MCP servers, as this specialist uses it."""

    model_config = ConfigDict(extra="forbid")

    default_policy: PermissionPolicy = "always_ask"
    tools: dict[str, PermissionPolicy] = Field(default_factory=dict)


class Specialist(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field(min_length=1, max_length=2048)
    """What the specialist is for: the coordinator reads it when it chooses whom to ask."""
    model: str | None = None
    """Defaults to the environment's model."""
    system: str = Field(min_length=1, max_length=100_000)
    mcp_servers: dict[str, SpecialistServer] = Field(default_factory=dict)

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _names_only(cls, value: Any) -> Any:
        # `mcp_servers: [kb, tickets]` is short for each server with its default policy.
        if isinstance(value, list):
            return {str(name): {} for name in value}
        return value


def _check(specialists: dict[str, Specialist], info: ValidationInfo) -> dict[str, Specialist]:
    if len(specialists) > MAX_SPECIALISTS:
        raise ValueError(f"at most {MAX_SPECIALISTS} specialists per environment (Managed Agents' limit)")
    servers = info.data.get("mcp_servers") or {}
    for name, spec in specialists.items():
        if not NAME.match(name):
            raise ValueError(f"specialist {name!r}: use lowercase letters, digits, - and _ (at most 63)")
        for server in spec.mcp_servers:
            if server not in servers:
                known = ", ".join(sorted(servers)) or "none"
                raise ValueError(
                    f"specialist {name!r} names MCP server {server!r}, which this environment does not "
                    f"declare (its servers: {known}); the session's vault holds only those credentials"
                )
            if servers[server].bridged:
                raise ValueError(
                    f"specialist {name!r}: MCP server {server!r} is bridged (the worker calls it for the "
                    "main agent); a specialist can only use servers the cloud reaches"
                )
    return specialists


Specialists = Annotated[dict[str, Specialist], AfterValidator(_check)]


def agent_name_for(coordinator_name: str, specialist: str) -> str:
    """The saved agent's name: `<specialist>@<coordinator agent name>`, unique per environment."""
    return f"{specialist}{NAME_SEPARATOR}{coordinator_name}"


def display_name(agent_name: str | None) -> str:
    """How the thread shows a subagent: its specialist name (an inline agent: its own name)."""
    if not agent_name:
        return "specialist"
    return agent_name.split(NAME_SEPARATOR, 1)[0] or agent_name


def model_for(config: AppConfig, env_name: str, specialist: Specialist) -> str:
    return specialist.model or config.model_for(env_name)
