"""Credential-shaped text never reaches Slack: a redactor for everything we post, and the client
that applies it.

The agent's answer, tool results it quotes, a user's own question echoed back, ticket titles:
any of them may carry a token (a user pasting `xoxb-...` while asking for help, a tool result
with a key in it). Slack keeps what it is sent, so the redaction happens at the last step, in
the Slack client itself, on every content field of every call; a visible "[redacted]" says
something was removed.
"""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from app.observability.scrub import REDACTED, SECRET_PATTERN, Scrubber

# Fields of Slack Web API calls that hold what people read (messages, streams, views, statuses).
CONTENT_FIELDS = frozenset(
    {
        "text",
        "markdown_text",
        "blocks",
        "attachments",
        "chunks",
        "view",
        "status",
        "loading_messages",
        "title",
        "initial_comment",
        "user_auth_blocks",
        "user_auth_message",
        "prompts",
    }
)
MAX_DEPTH = 40


def redact(text: str) -> str:
    """Replace every credential-shaped substring with "[redacted]"."""
    return SECRET_PATTERN.sub(REDACTED, text) if text else text


def redact_content(value: Any, scrubber: Scrubber | None = None, _depth: int = 0) -> Any:
    """A copy of a JSON-like value with every string redacted (keys and non-strings kept)."""
    if isinstance(value, str):
        return scrubber.text(value) if scrubber is not None else redact(value)
    if _depth > MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: redact_content(v, scrubber, _depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_content(v, scrubber, _depth + 1) for v in value]
    return value


def redact_fields(payload: dict[str, Any] | None, scrubber: Scrubber | None = None) -> dict[str, Any] | None:
    if not payload:
        return payload
    return {k: redact_content(v, scrubber) if k in CONTENT_FIELDS else v for k, v in payload.items()}


class RedactingWebClient(AsyncWebClient):
    """`AsyncWebClient` whose every call has its content fields redacted before it is sent.

    Every typed method (`chat_postMessage`, `chat_appendStream`, `views_publish`, ...) ends in
    `api_call`, so overriding it covers them all, including methods added later."""

    scrubber: Scrubber | None = None

    async def api_call(  # type: ignore[override]
        self,
        api_method: str,
        *,
        json: dict[str, Any] | None = None,
        data: Any = None,
        params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> AsyncSlackResponse:
        json = redact_fields(json, self.scrubber)
        params = redact_fields(params, self.scrubber)
        if isinstance(data, dict):
            data = redact_fields(data, self.scrubber)
        return await super().api_call(api_method, json=json, data=data, params=params, **kwargs)
