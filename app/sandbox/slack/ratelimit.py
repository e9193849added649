"""Token-bucket rate limits for the Slack emulator, per workspace and method (and channel).

Defaults follow Slack's published tiers: Tier 1 1/min, Tier 2 20/min, Tier 3 50/min, Tier 4
100/min; `chat.postMessage` about 1/s per channel with a short burst. A bucket holds `burst`
tokens and refills at `per_minute / 60 * scale` tokens a second. An empty bucket answers 429
with `Retry-After` = whole seconds until the next token (at least 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

TIER_PER_MINUTE: dict[int, float] = {1: 1.0, 2: 20.0, 3: 50.0, 4: 100.0}


@dataclass(frozen=True)
class MethodLimit:
    """One method's limit. `burst=None` means a full minute's budget (`per_minute`)."""

    per_minute: float
    burst: float | None = None
    per_channel: bool = False

    @property
    def capacity(self) -> float:
        return self.burst if self.burst is not None else self.per_minute

    @classmethod
    def tier(cls, n: int, burst: float | None = None) -> MethodLimit:
        return cls(TIER_PER_MINUTE[n], burst)

    def to_dict(self) -> dict[str, Any]:
        return {"per_minute": self.per_minute, "burst": self.burst, "per_channel": self.per_channel}


def default_method_limits() -> dict[str, MethodLimit]:
    # Slack: tiers from contracts/slack_methods.json `rate_limits` (docs.slack.dev method pages).
    # "Special" methods whose numbers are not published (auth.test, chat.getPermalink,
    # assistant.threads.setStatus) are not limited; reactions.remove is documented t2, kept at t3 (looser).
    t2, t3, t4 = MethodLimit.tier(2), MethodLimit.tier(3), MethodLimit.tier(4)
    return {
        "chat.postMessage": MethodLimit(60.0, burst=3.0, per_channel=True),
        "chat.update": t3,
        "chat.delete": t3,
        "chat.postEphemeral": t4,
        "chat.startStream": t2,
        "chat.appendStream": t4,
        "chat.stopStream": t2,
        "reactions.add": t3,
        "reactions.remove": t3,
        "conversations.replies": t3,
        "conversations.history": t3,
        "conversations.info": t3,
        "conversations.join": t3,
        "users.info": t4,
        "usergroups.users.list": t2,
        "views.open": t4,
        "views.update": t4,
        "views.publish": t4,
    }


@dataclass
class RateLimitConfig:
    """What the emulator enforces.

    `scale` multiplies every refill rate (60 -> a per-minute limit becomes per-second, 0.5 ->
    twice as tight); `burst_scale` multiplies bucket capacity (never below 1 token).
    `enabled=False` turns all limits off. Methods missing from `methods` are unlimited.
    """

    enabled: bool = True
    scale: float = 1.0
    burst_scale: float = 1.0
    methods: dict[str, MethodLimit] = field(default_factory=default_method_limits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "scale": self.scale,
            "burst_scale": self.burst_scale,
            "methods": {m: lim.to_dict() for m, lim in self.methods.items()},
        }

    def updated(self, data: dict[str, Any]) -> RateLimitConfig:
        """A copy with the fields of a JSON control request applied."""
        new = replace(self, methods=dict(self.methods))
        if "enabled" in data:
            new.enabled = bool(data["enabled"])
        if "scale" in data:
            new.scale = float(data["scale"])
        if "burst_scale" in data:
            new.burst_scale = float(data["burst_scale"])
        for method, spec in (data.get("methods") or {}).items():
            if spec is None:
                new.methods.pop(method, None)
                continue
            old = new.methods.get(method)
            new.methods[method] = MethodLimit(
                per_minute=float(spec.get("per_minute", old.per_minute if old else 60.0)),
                burst=spec.get("burst", old.burst if old else None),
                per_channel=bool(spec.get("per_channel", old.per_channel if old else False)),
            )
        return new


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Buckets keyed by (team, method[, channel]). Not thread-safe: the caller holds a lock."""

    def __init__(self, config: RateLimitConfig | None = None) -> None:
        self.config = config or RateLimitConfig()
        self._buckets: dict[tuple[str, ...], _Bucket] = {}

    def configure(self, config: RateLimitConfig) -> None:
        self.config = config
        self._buckets.clear()

    def reset(self) -> None:
        self._buckets.clear()

    def check(self, team: str, method: str, channel: str | None = None) -> int | None:
        """Take a token; return None if allowed, else the Retry-After seconds."""
        cfg = self.config
        limit = cfg.methods.get(method)
        if not cfg.enabled or limit is None or limit.per_minute <= 0:
            return None
        rate = limit.per_minute / 60.0 * cfg.scale
        capacity = max(1.0, limit.capacity * cfg.burst_scale)
        key = (team, method, channel or "") if limit.per_channel else (team, method)
        now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        if rate <= 0:
            return 60
        return max(1, math.ceil((1.0 - bucket.tokens) / rate))
