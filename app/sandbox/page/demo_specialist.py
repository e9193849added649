"""The sandbox demo's specialist: a billing subagent the scripted agent hands questions to.

In demo mode the sandbox's config gets a `billing` specialist in its default environment
(`add_specialist`; README "Specialists"), so the first use provisions it and the coordinator's
roster in the Managed Agents emulator. Asking for the "specialist" in the thread then plays
`specialist_rule`: the agent says it asks billing, the specialist searches the knowledge base in
its own session thread (`app/sandbox/agents/threads.py`) and answers, and the agent passes the
answer on. The timeline shows the specialist's task and its search, the ledger its cost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from app.config.specialists import agent_name_for
from app.sandbox.page.demo import ANSWERS, KB_SEARCH, USAGE, reopen_rules

if TYPE_CHECKING:
    from app.config.model import AppConfig

SPECIALIST = "billing"
SPECIALIST_CONFIG: dict[str, Any] = {
    "description": "Invoices, refunds and plan changes.",
    "model": "claude-haiku-4-5",
    "system": "You are the billing specialist. Answer from the knowledge base, briefly.",
    "mcp_servers": {"knowledge_base": {"default_policy": "always_allow"}},
}
SPECIALIST_USAGE: dict[str, Any] = {"input_tokens": 2400, "output_tokens": 260, "active_seconds": 4.0}
MATCH = r"(?i)\bspecialists?\b"


def _default_environment(data: dict[str, Any]) -> str | None:
    envs = data.get("environments") or {}
    return data.get("default_environment") or next(iter(envs), None)


def add_specialist(text: str) -> str:
    """The sandbox config (YAML text) with the demo's specialist in its default environment,
    unless that environment has specialists of its own or no knowledge base to give it."""
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("# Written by"))
    data = yaml.safe_load(text) or {}
    name = _default_environment(data)
    env = (data.get("environments") or {}).get(name) if name else None
    if not env or env.get("specialists") or "knowledge_base" not in (env.get("mcp_servers") or {}):
        return text
    if (env["mcp_servers"]["knowledge_base"] or {}).get("bridged"):
        return text  # a bridged server is the worker's, not a specialist's (app/config/specialists.py)
    env["specialists"] = {SPECIALIST: dict(SPECIALIST_CONFIG)}
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def specialist_agent(config: AppConfig) -> str | None:
    """The agent name of the demo's specialist in `config`, if it has it."""
    from app.provision import agent_name

    env = config.default_environment or next(iter(config.environments), None)
    if env is None or SPECIALIST not in config.environments[env].specialists:
        return None
    return agent_name_for(agent_name(config, env), SPECIALIST)


def specialist_rule(agent: str) -> dict[str, Any]:
    return {
        "match": MATCH,
        "steps": [
            {"thinking": {}},
            {"message": "Let me ask our billing specialist.", "deltas": 4, "delta_delay": 0.1},
            {"subagent": agent, "task": "{user_text}", "steps": [
                {"sleep": 0.8},
                {**KB_SEARCH, "input": {"query": "invoices and refunds"}},
                {"sleep": 0.8},
                {"usage": SPECIALIST_USAGE},
            ], "reply": ANSWERS[4][1]},
            {"message": "\n\nOur billing specialist (its own model and tools, in its own thread of the session) "
                        "says:\n\n{last_tool_result}", "deltas": 10, "delta_delay": 0.12},
            {"usage": USAGE},
        ],
    }


def with_specialist(scenario: dict[str, Any], agent: str | None) -> dict[str, Any]:
    """The demo scenario with the specialist's rule right after the Reopen rules (a reopened
    thread's prompt may quote the word "specialist" and must still be handled as a reopen)."""
    if agent is None:
        return scenario
    rules = list(scenario.get("rules") or [])
    at = len(reopen_rules())
    return {**scenario, "rules": [*rules[:at], specialist_rule(agent), *rules[at:]]}
