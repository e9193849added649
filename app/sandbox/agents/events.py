"""The installed SDK's Managed Agents event union, as the emulator's source of event shapes.

`sdk_event_types()` enumerates `BetaManagedAgentsStreamSessionEvents` (the union the SDK parses
SSE frames and `events.list` items into). `sample_event(type, **fields)` builds a wire-shaped
event of any of those types: every required field of the SDK's pydantic model gets a value of
its annotated type (literals take their first value, nested models recurse, unions take their
first member) unless given. `validate_event` parses a wire event with the SDK's own union, so
the emulator never emits a shape the SDK would not read. An SDK upgrade that adds a type is
covered without an edit here.
"""

from __future__ import annotations

import functools
import types
import typing
from datetime import UTC, datetime
from typing import Any

from anthropic.types.beta.sessions.beta_managed_agents_stream_session_events import (
    BetaManagedAgentsStreamSessionEvents,
)
from pydantic import BaseModel, TypeAdapter

__all__ = ["event_model", "sample_event", "sdk_event_types", "validate_event", "validate_with_union"]

# Stream-only preview frames: no id, no processed_at, never listed (docs: events-and-streaming,
# "Live previews"); the emulator produces them through `SessionRuntime.preview_*`.
PREVIEW_TYPES = frozenset({"event_start", "event_delta"})


def _members() -> tuple[type[BaseModel], ...]:
    (union, *_) = typing.get_args(BetaManagedAgentsStreamSessionEvents)  # Annotated[Union[...], ...]
    return tuple(typing.get_args(union))


@functools.cache
def _by_type() -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for model in _members():
        (literal,) = typing.get_args(model.model_fields["type"].annotation)
        out[str(literal)] = model
    return out


def sdk_event_types() -> set[str]:
    """Every `type` literal of the installed SDK's stream event union."""
    return set(_by_type())


@functools.cache
def session_error_types() -> frozenset[str]:
    """The `error.type` values of `session.error` the installed SDK knows."""
    annotation = event_model("session.error").model_fields["error"].annotation
    members = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return frozenset(str(typing.get_args(m.model_fields["type"].annotation)[0]) for m in members)


def event_model(event_type: str) -> type[BaseModel]:
    try:
        return _by_type()[event_type]
    except KeyError:
        raise ValueError(f"{event_type!r} is not an event type of the installed anthropic SDK") from None


@functools.cache
def _adapter() -> TypeAdapter[Any]:
    return TypeAdapter(BetaManagedAgentsStreamSessionEvents)


def validate_event(event: dict[str, Any]) -> BaseModel:
    """Parse a wire event with the SDK's model for its `type` (the member of the union the SDK
    picks by that discriminator); raises pydantic.ValidationError or ValueError."""
    return event_model(str(event.get("type"))).model_validate(event)


def validate_with_union(event: dict[str, Any]) -> BaseModel:
    """The same through the SDK's whole union (slower; for tests)."""
    parsed = _adapter().validate_python(event)
    if not isinstance(parsed, event_model(str(event.get("type")))):
        raise ValueError(f"the SDK parsed {event.get('type')!r} as {type(parsed).__name__}")
    return parsed


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _value(annotation: Any, name: str, depth: int = 0) -> Any:
    """A wire value of the annotated type (deterministic, minimal)."""
    if depth > 8:
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _value(args[0], name, depth + 1)
    if origin is typing.Literal:
        return args[0]
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _value(options[0], name, depth + 1) if options else None
    if origin in (list, typing.List, typing.Sequence, tuple):  # noqa: UP006
        return []
    if origin in (dict, typing.Dict, typing.Mapping):  # noqa: UP006
        return {}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_value(annotation, {}, depth + 1)
    if annotation is datetime:
        return _now()
    if annotation is str:
        if name.endswith("_id") or name == "id":
            return f"{name.removesuffix('_id') or 'id'}_emulated"
        return f"emulated {name}"
    if annotation is bool:
        return False
    if annotation is int:
        return 0
    if annotation is float:
        return 0.0
    return None


def _model_value(model: type[BaseModel], given: dict[str, Any], depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if key in given:
            out[key] = given[key]
        elif info.is_required():
            out[key] = _value(info.annotation, key, depth)
    for key, value in given.items():
        out.setdefault(key, value)
    return out


def sample_event(event_type: str, **fields: Any) -> dict[str, Any]:
    """A wire-shaped event of `event_type`, its required fields filled from the SDK's model.
    `fields` win over the generated values; `id` and `processed_at` are generated when absent."""
    body = _model_value(event_model(event_type), {"type": event_type, **fields})
    if event_type not in PREVIEW_TYPES:
        body.setdefault("id", "sevt_emulated")
        body.setdefault("processed_at", _now())
    return body
