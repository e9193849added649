"""Remove secrets from anything that leaves the process: log lines, Sentry events, traces.

Two nets: known secret values (every `SecretStr` the process holds, registered at start-up) are
replaced wherever they appear, and token-shaped strings are caught by pattern even when nobody
registered them. Keys that name secrets have their values replaced whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

REDACTED = "[redacted]"

# Credential shapes, each from its issuer's documented format: Slack (xoxb/xoxp/xoxa/xoxr/xoxe,
# xapp), Anthropic (sk-ant-), AWS access key ids (AKIA/ASIA + 16), GitHub (ghp_/gho_/ghu_/ghs_/
# ghr_ and fine-grained github_pat_), ours (sbk_mcp_), webhook secrets, bearer headers and JWTs.
SECRET_PATTERN = re.compile(
    r"xox[abposre]-[A-Za-z0-9-]+"
    r"|xapp-[A-Za-z0-9-]+"
    r"|sk-ant-[A-Za-z0-9_-]+"
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bgithub_pat_[A-Za-z0-9_]{20,}"
    r"|sbk_mcp_[A-Za-z0-9_-]+"
    r"|whsec_[A-Za-z0-9+/=_-]+"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]{4,}"
    r"|redis(?:s)?://[^\s@/]*:[^\s@/]+@"
)

SECRET_KEY_PARTS = (
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "api_key",
    "apikey",
    "x-api-key",
    "cookie",
    "credential",
    "dsn",
    "private_key",
    "signature",
)

# Keys that contain a secret-sounding word but hold counters or ids, not secrets.
NOT_SECRET_KEYS = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "ephemeral_5m_input_tokens",
        "ephemeral_1h_input_tokens",
        "max_tokens",
        "tokens",
        "token_cost",
        "tokens_usd",
        "credential_id",
        "vault_credential_id",
    }
)


def is_secret_key(key: str) -> bool:
    lowered = key.lower()
    if lowered in NOT_SECRET_KEYS or lowered.endswith("_tokens"):
        return False
    return any(part in lowered for part in SECRET_KEY_PARTS)


class Scrubber:
    """Replaces known secret values and secret-shaped strings with a marker."""

    def __init__(self, secrets: Iterable[str | SecretStr | None] = ()) -> None:
        self._values: set[str] = set()
        self._longest_first: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str | SecretStr | None) -> None:
        for secret in secrets:
            value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
            # Very short values would redact ordinary words; they are not real credentials.
            if value and len(value) >= 6:
                self._values.add(value)
        # Sorted once here, not per string scrubbed (every log line scrubs a dozen strings).
        self._longest_first = sorted(self._values, key=len, reverse=True)

    def text(self, value: str) -> str:
        for secret in self._longest_first:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return SECRET_PATTERN.sub(REDACTED, value)

    def data(self, value: Any, _depth: int = 0) -> Any:
        """Scrub a JSON-like structure (dicts, lists, strings), returning a new one."""
        if _depth > 20:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                k: (REDACTED if isinstance(k, str) and is_secret_key(k) and v else self.data(v, _depth + 1))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.data(v, _depth + 1) for v in value]
        if isinstance(value, SecretStr):
            return REDACTED
        return value
