"""Issue 19: the memory config, and which customer's store a ticket gets (pure rules)."""

from __future__ import annotations

import pytest
import yaml

from app.config.memory import CustomerMemory, CustomerOrg, EnvironmentMemory, customer_key
from app.config.model import parse_config
from app.config.yaml_lines import ConfigError
from tests.conftest import ROOT

ORGS = {"acme": CustomerOrg(name="Acme", channels=["C1"], teams=["TACME"])}
ON = EnvironmentMemory(customers=CustomerMemory())


def key(memory: EnvironmentMemory | None, channel: str, team: str | None) -> str | None:
    return customer_key(ORGS, memory, channel_id=channel, requester_team=team, our_team="T0001")


def test_which_customer_a_ticket_belongs_to() -> None:
    assert key(ON, "C1", "T0001") == "acme"  # a mapped channel, even when our staff asks
    assert key(ON, "C1", "TOTHER") == "acme"  # the channel wins over the requester's team
    assert key(ON, "C9", "TACME") == "acme"  # a mapped Slack Connect team
    assert key(ON, "C9", "TOTHER") == "team-TOTHER"  # an unmapped Slack Connect team: its own
    assert key(ON, "C9", "T0001") is None  # our own workspace, unmapped channel: nobody's memory
    assert key(ON, "C9", None) is None  # the team could not be asked: fail closed
    no_connect = EnvironmentMemory(customers=CustomerMemory(slack_connect=False))
    assert key(no_connect, "C9", "TOTHER") is None and key(no_connect, "C1", None) == "acme"
    assert key(EnvironmentMemory(), "C1", "TACME") is None  # no `customers`: never a customer's store
    assert key(None, "C1", "TACME") is None
    assert key(EnvironmentMemory(enabled=False, customers=CustomerMemory()), "C1", "TACME") is None


def shipped(**changes: object) -> str:
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for part in parents:
            target = target[part]
        target[last] = value
    return yaml.safe_dump(data, sort_keys=False)


def test_config_errors_name_the_line() -> None:
    config = parse_config(shipped())
    memory = config.environments["customers"].memory
    assert memory is not None and not memory.enabled and memory.forget_with_retention
    text = shipped(environments__customers__memory__customers__access="read_sometimes")
    with pytest.raises(ConfigError) as bad_access:
        parse_config(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "read_sometimes" in t)
    assert f"support-agent.yml:{line}: environments.customers.memory.customers.access" in str(bad_access.value)
    with pytest.raises(ConfigError) as twice:
        parse_config(shipped(customers={"a": {"channels": ["C1"]}, "b": {"channels": ["C1"]}}))
    assert "C1 is listed under both 'a' and 'b'" in str(twice.value)
    with pytest.raises(ConfigError) as bad_key:
        parse_config(shipped(customers={"team-x": {"channels": ["C2"]}}))
    assert "customers" in str(bad_key.value)
    with pytest.raises(ConfigError) as long_instructions:
        parse_config(shipped(environments__customers__memory__product={"instructions": "x" * 4097}))
    assert "instructions" in str(long_instructions.value)
