"""Provisioning of an environment's specialists, and the coordinator's `multiagent` field.

`provision` (and the bot's first use, through `Provisioner.ensure_agent`) calls `coordinate`
before it writes an environment's agent: each specialist in the config becomes a saved agent
`<specialist>@<agent>-<environment>` (created, updated to a new version only when something we
manage differs, else left alone), and the coordinator's spec gets

    multiagent: {type: multiagent_20261001,
                 subagents: {type: enabled, inline_agents: {type: disabled},
                             predefined_agents: [{type: agent, id, version}, ...]},
                 advisor: {type: disabled}, workflows: {type: disabled}}

(SDK `types/beta/beta_managed_agents_multiagent20261001_params.py` and the subagents, advisor
and workflows params beside it). Versions are pinned: a specialist's new version is a change
of the coordinator too, so a running session keeps the roster it started with.

Inline agents and workflows are disabled on purpose: an inline agent is defined by the model at
spawn time and could declare any of the session's MCP servers with any policy, and the config's
specialists are the only reach we grant (the vault is shared by every agent of a session, docs
managed-agents/multiagent-orchestration). Workflow runs are not shown by this app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.config.specialists import Specialist, agent_name_for, model_for

if TYPE_CHECKING:
    from app.config.model import AppConfig
    from app.provision import Provisioner

# What a dry run names a specialist that does not exist yet by, in the coordinator's roster.
PLANNED_ID = "<{name}: not created yet>"


def specialist_spec(
    config: AppConfig, env_name: str, name: str, spec: Specialist, *, strict: bool = True
) -> dict[str, Any]:
    """The `agents.create` parameters of one specialist (policies written out explicitly).

    Its MCP servers get the URLs the environment's agent uses (`strict=False`: a server whose
    URL cannot be worked out is left off, as for the main agent on the bot's first use)."""
    from app.provision import MANAGED_BY, agent_name, cloud_servers

    known = cloud_servers(config, env_name, strict=strict)
    urls = {server: known[server] for server in spec.mcp_servers if server in known}
    tools = [
        {
            "type": "mcp_toolset",
            "mcp_server_name": server,
            "default_config": {"enabled": True, "permission_policy": {"type": use.default_policy}},
            "configs": [
                {"name": tool, "enabled": True, "permission_policy": {"type": policy}}
                for tool, policy in sorted(use.tools.items())
            ],
        }
        for server, use in spec.mcp_servers.items()
        if server in urls
    ]
    return {
        "name": agent_name_for(agent_name(config, env_name), name),
        "description": spec.description,
        "model": model_for(config, env_name, spec),
        "system": spec.system,
        "mcp_servers": [{"type": "url", "name": server, "url": url} for server, url in urls.items()],
        "tools": tools,
        "metadata": {"managed_by": MANAGED_BY, "environment": env_name, "specialist": name},
    }


def multiagent_param(roster: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "multiagent_20261001",
        "advisor": {"type": "disabled"},
        "subagents": {
            "type": "enabled",
            "inline_agents": {"type": "disabled"},
            "predefined_agents": roster,
        },
        "workflows": {"type": "disabled"},
    }


def _shape(value: Any) -> Any:
    """The parts of a `multiagent` value we manage, comparable between a spec and an agent."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    if not isinstance(value, dict):
        return None
    sub = value.get("subagents") or {}
    roster = sorted(
        (str(a.get("id")), a.get("version")) if isinstance(a, dict) else (str(a), None)
        for a in sub.get("predefined_agents") or []
    )
    return (
        value.get("type"),
        (value.get("advisor") or {}).get("type"),
        sub.get("type"),
        (sub.get("inline_agents") or {}).get("type"),
        roster,
        (value.get("workflows") or {}).get("type"),
    )


def multiagent_differences(agent: dict[str, Any], spec: dict[str, Any]) -> list[str]:
    """`["multiagent"]` when the agent's roster is not the spec's (no key in spec: none wanted)."""
    return ["multiagent"] if _shape(agent.get("multiagent")) != _shape(spec.get("multiagent")) else []


async def coordinate(prov: Provisioner, env_name: str, spec: dict[str, Any], current: Any | None) -> None:
    """Make the environment's specialists match the config and put their roster in `spec`.

    With no specialists, `spec` gets `multiagent: None` only if the current agent has one (so
    the update clears it); a new agent is created without the field."""
    specialists = prov.config.environments[env_name].specialists
    if not specialists:
        if current is not None and _shape(getattr(current, "multiagent", None)) is not None:
            spec["multiagent"] = None
        return
    roster = [await _ensure_specialist(prov, env_name, name, s) for name, s in specialists.items()]
    spec["multiagent"] = multiagent_param(roster)


async def _ensure_specialist(prov: Provisioner, env_name: str, name: str, specialist: Specialist) -> dict[str, Any]:
    """One specialist's saved agent, as a roster entry `{type: agent, id, version}`."""
    from app.provision import agent_differences

    spec = specialist_spec(prov.config, env_name, name, specialist, strict=prov.strict)
    label = spec["name"]
    servers = ", ".join(s["name"] for s in spec["mcp_servers"]) or "no MCP servers"
    current = await prov._find_agent(label)
    if current is None:
        prov._note("specialist", label, "create", f"{spec['model']}; {servers}")
        if prov.dry_run:
            return {"type": "agent", "id": PLANNED_ID.format(name=name), "version": 1}
        created = await prov._api().beta.agents.create(**spec)
        await prov._record("agent", label, created.id)
        return {"type": "agent", "id": created.id, "version": created.version}
    version = current.version
    diffs = agent_differences(current, spec)
    if not diffs:
        prov._note("specialist", label, "ok", f"version {version}")
    elif prov.dry_run:
        prov._note("specialist", label, "update", ", ".join(diffs))
        version += 1
    else:
        body = {k: v for k, v in spec.items() if k != "name"}
        updated = await prov._api().beta.agents.update(current.id, version=current.version, **body)
        version = updated.version
        prov._note("specialist", label, "update", f"{', '.join(diffs)}; version {version}")
    await prov._record("agent", label, current.id)
    return {"type": "agent", "id": str(current.id), "version": version}
