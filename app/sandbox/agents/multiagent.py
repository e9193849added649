"""The `multiagent` field of emulated agents, and the session's copy of the roster.

Sources: SDK `types/beta/beta_managed_agents_multiagent20261001*.py` (params and resolved
shapes: defaults, "merged level by level", "A list that is sent replaces", at most 20,
predefined agents resolved to a version) and `beta_managed_agents_session_multiagent*.py` (the
session holds full agent definitions). Session threads themselves are in `threads.py`.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from app.sandbox.agents.resources import ApiError

if TYPE_CHECKING:
    from app.sandbox.agents.state import EmulatorState

# SDK beta_managed_agents_multiagent_subagents_enabled_params.py: predefined_agents "At most 20".
MAX_PREDEFINED = 20
THREAD_AGENT_KEYS = ("id", "type", "name", "description", "model", "system", "tools", "mcp_servers",
                     "skills", "execution_identity", "version")


# -- the agent's `multiagent` field -------------------------------------------------------------


def _member(raw: Any, stored: dict[str, Any] | None, what: str, kinds: tuple[str, ...]) -> dict[str, Any]:
    if raw is None:  # "A key sent as null takes its default"
        return {"type": kinds[0]}
    if not isinstance(raw, dict) or raw.get("type") not in kinds:
        raise ApiError(400, f"multiagent.{what}: type must be one of {', '.join(kinds)}")
    if stored is not None and stored.get("type") == raw["type"]:
        return {**stored, **raw}  # merged level by level
    return dict(raw)


def _roster(state: EmulatorState, raw: Any, what: str) -> list[dict[str, Any]]:
    entries = raw or []  # "Null and an empty list both mean no predefined agents"
    if not isinstance(entries, list) or len(entries) > MAX_PREDEFINED:
        raise ApiError(400, f"multiagent.{what}.predefined_agents: a list of at most {MAX_PREDEFINED}")
    out = []
    for entry in entries:
        if isinstance(entry, str):
            agent_id, version = entry, None
        elif isinstance(entry, dict) and entry.get("type") == "agent":
            agent_id, version = str(entry.get("id")), entry.get("version")
        else:
            # `{type: self}` exists in the SDK; what it resolves to is not documented.
            raise ApiError(400, f"multiagent.{what}.predefined_agents: the emulator takes agent ids only")
        agent = state.agent_version(agent_id, version)  # an unknown agent or version: 404
        out.append({"type": "agent", "id": agent["id"], "version": agent["version"]})
    return out


def _enabled(state: EmulatorState, raw: Any, stored: dict[str, Any] | None, what: str) -> dict[str, Any]:
    value = _member(raw, stored, what, ("enabled", "disabled"))
    if value["type"] == "disabled":
        return {"type": "disabled"}
    inline = _member(value.get("inline_agents"), None, f"{what}.inline_agents", ("enabled", "disabled"))
    roster = value.get("predefined_agents")
    if isinstance(raw, dict) and "predefined_agents" in raw:
        roster = _roster(state, raw["predefined_agents"], what)  # "A list that is sent replaces"
    roster = roster or []
    if inline["type"] == "disabled" and not roster:
        # SDK subagents_enabled_params: "If inline_agents is disabled, predefined_agents must
        # name at least one agent."
        raise ApiError(400, f"multiagent.{what}: with inline agents disabled, name at least one predefined agent")
    return {"type": "enabled", "inline_agents": {"type": inline["type"]}, "predefined_agents": roster}


def resolve_multiagent(state: EmulatorState, raw: Any, stored: Any) -> Any:
    """The stored (resolved) `multiagent` for an agent create or update body value."""
    if raw is None or not isinstance(raw, dict) or raw.get("type") != "multiagent_20261001":
        return raw  # null clears it; the legacy `coordinator` type is kept as sent
    prior = stored if isinstance(stored, dict) and stored.get("type") == "multiagent_20261001" else {}
    advisor = _member(raw.get("advisor", prior.get("advisor")), None, "advisor", ("disabled", "enabled"))
    if advisor["type"] == "enabled" and not advisor.get("model"):
        raise ApiError(400, "multiagent.advisor: an enabled advisor needs its model")
    return {
        "type": "multiagent_20261001",
        "advisor": advisor,
        "subagents": _enabled(state, raw.get("subagents"), prior.get("subagents"), "subagents")
        if "subagents" in raw or not prior else prior["subagents"],
        "workflows": _enabled(state, raw.get("workflows"), prior.get("workflows"), "workflows")
        if "workflows" in raw or not prior else prior["workflows"],
    }


def prepare_agent_body(state: EmulatorState, body: dict[str, Any], agent_id: str | None = None) -> None:
    """Resolve `multiagent` in an agents.create / update body before it is stored."""
    if "multiagent" in body:
        stored = state.agent_version(agent_id).get("multiagent") if agent_id else None
        body["multiagent"] = resolve_multiagent(state, body["multiagent"], stored)


def thread_agent(agent: dict[str, Any]) -> dict[str, Any]:
    """A `BetaManagedAgentsSessionThreadAgent`: the roster is not repeated in it."""
    return {key: copy.deepcopy(agent[key]) for key in THREAD_AGENT_KEYS if key in agent}


def session_snapshot(state: EmulatorState, snapshot: dict[str, Any]) -> dict[str, Any]:
    """The session's agent copy: predefined agents as full definitions (SDK session_multiagent*)."""
    multi = snapshot.get("multiagent")
    if not isinstance(multi, dict) or multi.get("type") != "multiagent_20261001":
        return snapshot
    multi = copy.deepcopy(multi)
    for member in ("subagents", "workflows"):
        part = multi.get(member) or {}
        if part.get("type") == "enabled":
            part["predefined_agents"] = [
                thread_agent(state.agent_version(a["id"], a["version"])) for a in part["predefined_agents"]
            ]
    return {**snapshot, "multiagent": multi}
