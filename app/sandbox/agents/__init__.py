"""The Managed Agents emulator: the `/v1` API the real `anthropic` client's `beta` resources call.

`api.AgentsEmulator` is the entry point; `scenario.Scenario` scripts what a session's agent
does each turn (the steps of the installed SDK's event union, see `events.py`).
"""
from app.sandbox.agents.api import AgentsEmulator
from app.sandbox.agents.events import sdk_event_types
from app.sandbox.agents.scenario import Scenario

__all__ = ["AgentsEmulator", "Scenario", "sdk_event_types"]
