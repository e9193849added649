"""The Slack app manifest is valid against Slack's own schema and matches what the app handles."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# Slack's published manifest schemas, kept in the repository so a clone validates too.
SCHEMAS = ROOT / "docs" / "schemas"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text())


def schema_for(manifest: dict) -> dict:
    major = manifest.get("_metadata", {}).get("major_version", 1)
    path = SCHEMAS / f"manifest.schema.{major}.0.0.json"
    assert path.is_file(), f"Slack manifest schema missing: {path}"
    return json.loads(path.read_text())


def test_manifest_is_valid_against_slacks_schema(manifest: dict) -> None:
    jsonschema.validate(manifest, schema_for(manifest))


def test_schema_catches_a_broken_manifest(manifest: dict) -> None:
    broken = dict(manifest, display_information={"name": "x" * 40})
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema_for(manifest))


def test_manifest_declares_what_the_app_uses(manifest: dict) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "channels:history", "chat:write", "commands", "reactions:write"} <= scopes
    events = set(manifest["settings"]["event_subscriptions"]["bot_events"])
    assert {"app_mention", "message.channels", "reaction_added", "app_home_opened"} <= events
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == ["/support"]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert "socket_mode_enabled" in manifest["settings"]
