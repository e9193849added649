"""An SDK upgrade that adds a Managed Agents event type fails here until the app decides (issue 15)."""

from __future__ import annotations

import typing

from anthropic.types.beta.sessions.beta_managed_agents_stream_session_events import (
    BetaManagedAgentsStreamSessionEvents,
)

from app.sessions.event_table import HANDLED, IGNORED


def sdk_event_types() -> set[str]:
    (union, *_) = typing.get_args(BetaManagedAgentsStreamSessionEvents)  # Annotated[Union[...], ...]
    return {typing.get_args(model.model_fields["type"].annotation)[0] for model in typing.get_args(union)}


def test_every_sdk_event_type_is_handled_or_deliberately_ignored() -> None:
    types = sdk_event_types()
    assert len(types) > 40
    assert not set(HANDLED) & set(IGNORED)
    assert types - set(HANDLED) - set(IGNORED) == set(), "new SDK event types: handle or ignore them"
    assert set(HANDLED) | set(IGNORED) == types, "the table names types the SDK no longer has"
    assert all(IGNORED.values()) and all(HANDLED.values())
