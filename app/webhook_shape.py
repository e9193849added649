"""What a verified Managed Agents webhook must look like before anything acts on it.

`client.beta.webhooks.unwrap` checks the signature, then builds its model leniently: a signed
`[1,2]`, `{}` or `{"data": 5}` comes back as an object whose fields are missing or of the wrong
type, and acting on it raised (a 500 with a traceback). The envelope is the SDK's
`BetaWebhookEvent`: `type: "event"`, an `id`, and `data` with the event's `type` and the
session's `id`, all strings.
"""

from __future__ import annotations

from typing import Any


def malformed_reason(event: Any) -> str | None:
    """None for a well-formed event; else why it is refused (never quoting the body)."""
    if getattr(event, "type", None) != "event":
        return "not an event envelope"
    event_id = getattr(event, "id", None)
    if not isinstance(event_id, str) or not event_id:
        return "event id missing"
    data = getattr(event, "data", None)
    if not isinstance(getattr(data, "type", None), str):
        return "event data type missing"
    session = getattr(data, "id", None)
    if session is not None and not isinstance(session, str):
        return "event data id is not a string"
    return None
