"""The cost model: session usage -> money, in `Decimal`, rounded only for display.

Managed Agents bills the session runtime (`usage.active_seconds`, time with at least one
thread `running`) at a per-hour rate, plus tokens at the model's prices, plus server-side web
searches. `session.usage` is cumulative over the session; `Usage.minus` gives a turn's delta.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field

from app.config.model import ModelPrice, Pricing

ZERO = Decimal(0)
MILLION = Decimal(1_000_000)
SECONDS_PER_HOUR = Decimal(3600)

# Categories of token spend, in display order: (field on CostBreakdown, label, field on Usage).
TOKEN_CATEGORIES: tuple[tuple[str, str, str], ...] = (
    ("input_usd", "input", "input_tokens"),
    ("output_usd", "output", "output_tokens"),
    ("cache_read_usd", "cache read", "cache_read_input_tokens"),
    ("cache_write_5m_usd", "cache write 5m", "cache_write_5m_tokens"),
    ("cache_write_1h_usd", "cache write 1h", "cache_write_1h_tokens"),
)


class UnknownModel(ValueError):
    """No price is known for a model, neither in the config nor in the built-in table."""

    def __init__(self, model: str, known: list[str]) -> None:
        self.model = model
        self.known = known
        super().__init__(
            f"no prices for model {model!r}; known models: {', '.join(known)}. "
            "Add it under `pricing.models` in support-agent.yml."
        )


def _get(obj: Any, name: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(value: Any) -> int:
    return int(value) if value is not None else 0


def to_decimal(value: Any) -> Decimal:
    """A Decimal from an int, str, Decimal or float (floats via their shortest repr)."""
    if value is None:
        return ZERO
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


class Usage(BaseModel):
    """Cumulative (or, after `minus`, per-turn) usage of one session."""

    model_config = ConfigDict(frozen=True)

    active_seconds: Decimal = ZERO
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    web_search_requests: int = 0
    # Cost at public list prices as the API reports it, in US cents; absent until tracked.
    list_cost_cents: int | None = None

    @classmethod
    def from_sdk(cls, usage: Any) -> Usage:
        """From an SDK usage object or its dict form.

        Accepts `BetaManagedAgentsSessionUsage`, a `session.usage` event's snapshot, and for
        convenience the event itself or a session object (anything with a `usage` member).
        """
        if usage is None:
            return cls()
        if isinstance(usage, Usage):
            return usage
        inner = _get(usage, "usage")
        if inner is not None and _get(usage, "input_tokens") is None:
            usage = inner
        cache = _get(usage, "cache_creation")
        tools = _get(usage, "server_tool_use")
        return cls(
            active_seconds=to_decimal(_get(usage, "active_seconds")),
            input_tokens=_int(_get(usage, "input_tokens")),
            output_tokens=_int(_get(usage, "output_tokens")),
            cache_read_input_tokens=_int(_get(usage, "cache_read_input_tokens")),
            cache_write_5m_tokens=_int(_get(cache, "ephemeral_5m_input_tokens")),
            cache_write_1h_tokens=_int(_get(cache, "ephemeral_1h_input_tokens")),
            web_search_requests=_int(_get(tools, "web_search_requests")),
            list_cost_cents=_list_cost_cents(_get(usage, "list_cost")),
        )

    def minus(self, other: Usage) -> Usage:
        """The usage added since `other` (an earlier cumulative snapshot)."""
        list_cost: int | None = None
        if self.list_cost_cents is not None:
            list_cost = self.list_cost_cents - (other.list_cost_cents or 0)
        return Usage(
            active_seconds=self.active_seconds - other.active_seconds,
            input_tokens=self.input_tokens - other.input_tokens,
            output_tokens=self.output_tokens - other.output_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens - other.cache_read_input_tokens,
            cache_write_5m_tokens=self.cache_write_5m_tokens - other.cache_write_5m_tokens,
            cache_write_1h_tokens=self.cache_write_1h_tokens - other.cache_write_1h_tokens,
            web_search_requests=self.web_search_requests - other.web_search_requests,
            list_cost_cents=list_cost,
        )

    def maximum(self, other: Usage) -> Usage:
        """Field-wise maximum: cumulative counters never go back, whatever order snapshots come in."""

        def top(a: int | None, b: int | None) -> int | None:
            if a is None:
                return b
            return a if b is None else max(a, b)

        return Usage(
            active_seconds=max(self.active_seconds, other.active_seconds),
            input_tokens=max(self.input_tokens, other.input_tokens),
            output_tokens=max(self.output_tokens, other.output_tokens),
            cache_read_input_tokens=max(self.cache_read_input_tokens, other.cache_read_input_tokens),
            cache_write_5m_tokens=max(self.cache_write_5m_tokens, other.cache_write_5m_tokens),
            cache_write_1h_tokens=max(self.cache_write_1h_tokens, other.cache_write_1h_tokens),
            web_search_requests=max(self.web_search_requests, other.web_search_requests),
            list_cost_cents=top(self.list_cost_cents, other.list_cost_cents),
        )

    def negative_fields(self) -> list[str]:
        return [
            name
            for name in (
                "active_seconds", "input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_write_5m_tokens", "cache_write_1h_tokens", "web_search_requests",
            )
            if getattr(self, name) < 0
        ]

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens + self.output_tokens + self.cache_read_input_tokens
            + self.cache_write_5m_tokens + self.cache_write_1h_tokens
        )

    @property
    def is_zero(self) -> bool:
        return self.active_seconds == 0 and self.total_tokens == 0 and self.web_search_requests == 0


def _list_cost_cents(amount: Any) -> int | None:
    if amount is None:
        return None
    currency = _get(amount, "currency")
    if currency not in (None, "USD"):
        return None
    raw = _get(amount, "amount")
    if raw is None:
        return None
    try:
        return int(Decimal(str(raw)).to_integral_value(ROUND_HALF_UP))
    except InvalidOperation:
        return None


class CostBreakdown(BaseModel):
    """What a usage costs, in USD, unrounded."""

    model_config = ConfigDict(frozen=True)

    model: str
    runtime_usd: Decimal = ZERO
    input_usd: Decimal = ZERO
    output_usd: Decimal = ZERO
    cache_read_usd: Decimal = ZERO
    cache_write_5m_usd: Decimal = ZERO
    cache_write_1h_usd: Decimal = ZERO
    web_search_usd: Decimal = ZERO

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tokens_usd(self) -> Decimal:
        return (
            self.input_usd + self.output_usd + self.cache_read_usd
            + self.cache_write_5m_usd + self.cache_write_1h_usd
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_usd(self) -> Decimal:
        return self.runtime_usd + self.tokens_usd + self.web_search_usd

    def tokens_by_category(self) -> dict[str, Decimal]:
        return {label: getattr(self, name) for name, label, _ in TOKEN_CATEGORIES}


def price_for(model: str, pricing: Pricing) -> ModelPrice:
    price = pricing.price_for(model)
    if price is None:
        raise UnknownModel(model, pricing.known_models())
    return price


def compute_cost(usage: Usage, model: str, pricing: Pricing | None = None) -> CostBreakdown:
    """Price a usage at `model`'s token prices and the runtime and web-search rates."""
    pricing = pricing or Pricing()
    price = price_for(model, pricing)
    assert price.cache_read is not None and price.cache_write_5m is not None
    assert price.cache_write_1h is not None
    with localcontext() as ctx:
        ctx.prec = 50  # exact for any realistic count; only runtime / 3600 can recur
        return CostBreakdown(
            model=model,
            runtime_usd=usage.active_seconds * pricing.runtime_usd_per_hour / SECONDS_PER_HOUR,
            input_usd=usage.input_tokens * price.input / MILLION,
            output_usd=usage.output_tokens * price.output / MILLION,
            cache_read_usd=usage.cache_read_input_tokens * price.cache_read / MILLION,
            cache_write_5m_usd=usage.cache_write_5m_tokens * price.cache_write_5m / MILLION,
            cache_write_1h_usd=usage.cache_write_1h_tokens * price.cache_write_1h / MILLION,
            web_search_usd=usage.web_search_requests * pricing.web_search_usd_per_1k / 1000,
        )


def check_list_cost(breakdown: CostBreakdown, list_cost_cents: int | None) -> str | None:
    """A warning when our figure and the API's list cost differ by more than 1 cent + 2%.

    The API's `list_cost` is cumulative, rounded to the cent and at public list prices; compare
    it with the breakdown of the same cumulative usage.
    """
    if list_cost_cents is None:
        return None
    ours = breakdown.total_usd * 100
    theirs = Decimal(list_cost_cents)
    diff = abs(ours - theirs)
    tolerance = 1 + theirs * Decimal("0.02")
    if diff <= tolerance:
        return None
    return (
        f"computed cost {format_usd(breakdown.total_usd)} differs from the API's list cost "
        f"{format_usd(theirs / 100)} by {format_usd(diff / 100)} (more than 1 cent + 2%)"
    )


# -- money as integers and for display ----------------------------------------------------

NANOS_PER_USD = 10**9


def to_nanos(usd: Decimal) -> int:
    """Integer nano-dollars, for exact sums in Redis."""
    return int((usd * NANOS_PER_USD).to_integral_value(ROUND_HALF_EVEN))


def from_nanos(nanos: int) -> Decimal:
    return Decimal(nanos).scaleb(-9)


def usd_number(usd: Decimal, places: int = 6) -> float:
    """A JSON number for machine-readable output: rounded to `places` decimals (micro-dollars)."""
    return float(round_usd(usd, places))


def round_usd(usd: Decimal, places: int = 6) -> Decimal:
    return usd.quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def format_usd(usd: Decimal) -> str:
    """`$1.23`; amounts under a cent keep four decimals (`$0.0040`), tiny ones `<$0.0001`."""
    sign = "-" if usd < 0 else ""
    usd = abs(usd)
    if usd == 0:
        return "$0.00"
    if usd >= Decimal("0.01"):
        return f"{sign}${round_usd(usd, 2):,}"
    small = round_usd(usd, 4)
    if small == 0:
        return f"{sign}<$0.0001"
    return f"{sign}${small}"


def format_duration(seconds: Decimal | float) -> str:
    """`45s`, `3m 20s`, `2h 05m`, `30h 00m`."""
    total = int(to_decimal(seconds).to_integral_value(ROUND_HALF_UP))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_tokens(n: int) -> str:
    """`950`, `45.2k`, `1.3M`."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k".replace(".0k", "k")
    return f"{n / 1_000_000:.1f}M".replace(".0M", "M")
