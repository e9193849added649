"""The cost model on hand-computed cases, budgets and the budget-reached message."""

from __future__ import annotations

from decimal import Decimal

import pytest
from anthropic.types.beta import BetaManagedAgentsSessionUsage, BetaManagedAgentsSessionUsageEvent

from app.config.model import AppConfig, Environment, ManagedEnvironment, Pricing
from app.cost.budget import (
    ESCALATE_ACTION,
    RAISE_BUDGET_ACTION,
    BudgetAction,
    budget_cents_of,
    budget_param,
    budget_param_cents,
    budget_reached_message,
)
from app.cost.model import (
    CostBreakdown,
    UnknownModel,
    Usage,
    check_list_cost,
    compute_cost,
    format_duration,
    format_tokens,
    format_usd,
    from_nanos,
    to_nanos,
)

D = Decimal
SONNET = "claude-sonnet-4-6"


def cost(model: str = SONNET, pricing: Pricing | None = None, **usage: object) -> CostBreakdown:
    return compute_cost(Usage(**usage), model, pricing)  # type: ignore[arg-type]


# -- runtime only -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "usd"),
    [
        ("1800", "0.04"),  # half an hour at $0.08/h
        ("3600", "0.08"),
        ("180", "0.004"),  # 3 minutes
        ("45", "0.001"),
        ("108000", "2.40"),  # a long-running session: 30 active hours
        ("0", "0"),
    ],
)
def test_runtime_only(seconds: str, usd: str) -> None:
    c = cost(active_seconds=D(seconds))
    assert c.runtime_usd == D(usd)
    assert c.tokens_usd == 0 and c.web_search_usd == 0
    assert c.total_usd == D(usd)


def test_runtime_rate_is_configurable() -> None:
    c = cost(active_seconds=D(1800), pricing=Pricing(runtime_usd_per_hour=D("0.10")))
    assert c.runtime_usd == D("0.05")


def test_runtime_of_one_second_is_not_rounded_early() -> None:
    one = cost(active_seconds=D(1)).runtime_usd
    assert one > 0
    assert round(one * 3600, 20) == D("0.08")


# -- tokens only ---------------------------------------------------------------------------


def test_tokens_only_sonnet_4_6_at_3_and_15_per_million() -> None:
    c = cost(input_tokens=1_000_000, output_tokens=200_000)
    assert c.input_usd == D(3)
    assert c.output_usd == D(3)
    assert c.tokens_usd == D(6)
    assert c.runtime_usd == 0
    assert c.total_usd == D(6)


def test_tokens_only_odd_counts_are_exact() -> None:
    # 12,345 x 3 / 1M = 0.037035; 6,789 x 15 / 1M = 0.101835
    c = cost(input_tokens=12_345, output_tokens=6_789)
    assert c.input_usd == D("0.037035")
    assert c.output_usd == D("0.101835")
    assert c.total_usd == D("0.13887")


def test_cache_categories_at_config_prices(app_config: AppConfig) -> None:
    # support-agent.yml: sonnet 4.6 cache_read 0.30, write 5m 3.75, write 1h 6 per million.
    c = compute_cost(
        Usage(cache_read_input_tokens=1_000_000, cache_write_5m_tokens=200_000, cache_write_1h_tokens=100_000),
        SONNET,
        app_config.pricing,
    )
    assert c.cache_read_usd == D("0.30")
    assert c.cache_write_5m_usd == D("0.75")
    assert c.cache_write_1h_usd == D("0.6")
    assert c.tokens_usd == D("1.65")
    assert c.tokens_by_category() == {
        "input": 0, "output": 0, "cache read": D("0.30"), "cache write 5m": D("0.75"), "cache write 1h": D("0.6"),
    }


def test_cache_prices_default_to_the_standard_multipliers() -> None:
    # claude-haiku-4-5 is 1 / 5 per million: read 0.1x, write 5m 1.25x, write 1h 2x the input price.
    c = cost(
        "claude-haiku-4-5",
        cache_read_input_tokens=1_000_000,
        cache_write_5m_tokens=1_000_000,
        cache_write_1h_tokens=1_000_000,
    )
    assert (c.cache_read_usd, c.cache_write_5m_usd, c.cache_write_1h_usd) == (D("0.1"), D("1.25"), D(2))


def test_explicit_cache_prices_win() -> None:
    # claude-opus-5-5: 4 / 20, read 0.20, write 5m 5, write 1h 8.
    c = cost(
        "claude-opus-5-5",
        input_tokens=500_000,
        output_tokens=100_000,
        cache_read_input_tokens=1_000_000,
        cache_write_5m_tokens=1_000_000,
        cache_write_1h_tokens=500_000,
    )
    assert c.tokens_usd == D(2) + D(2) + D("0.20") + D(5) + D(4)


def test_config_table_overrides_the_defaults() -> None:
    pricing = Pricing.model_validate({"models": {SONNET: {"input": 2, "output": 10}}})
    assert cost(pricing=pricing, input_tokens=1_000_000).input_usd == D(2)


def test_web_searches_at_10_per_thousand() -> None:
    c = cost(web_search_requests=250)
    assert c.web_search_usd == D("2.50")
    assert c.total_usd == D("2.50")
    assert cost(web_search_requests=1).web_search_usd == D("0.01")


def test_mixed_long_running_session() -> None:
    c = cost(
        active_seconds=D(108_000),  # 30 h -> 2.40
        input_tokens=2_000_000,  # 6.00
        output_tokens=500_000,  # 7.50
        cache_read_input_tokens=10_000_000,  # 3.00
        cache_write_5m_tokens=1_000_000,  # 3.75
        web_search_requests=40,  # 0.40
    )
    assert c.runtime_usd == D("2.40")
    assert c.tokens_usd == D("20.25")
    assert c.total_usd == D("23.05")
    assert format_usd(c.total_usd) == "$23.05"


def test_money_is_decimal_and_exact() -> None:
    # Haiku 5.5 input is $0.10 per million: one token is exactly a ten-millionth of a dollar.
    c = cost("claude-haiku-5-5", input_tokens=1)
    assert isinstance(c.total_usd, Decimal)
    assert c.input_usd == D("0.0000001")
    # Three turns of deltas add up to the cumulative cost exactly (no float drift).
    turns = [Usage(input_tokens=n, output_tokens=n * 3) for n in (1, 7, 333_333)]
    summed = sum((compute_cost(u, "claude-haiku-5-5").total_usd for u in turns), D(0))
    whole = compute_cost(Usage(input_tokens=333_341, output_tokens=1_000_023), "claude-haiku-5-5").total_usd
    assert summed == whole == D("0.5333456")
    assert from_nanos(to_nanos(D("0.0000001"))) == D("0.0000001")


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModel) as info:
        cost("claude-nonesuch", input_tokens=1)
    message = str(info.value)
    assert "claude-nonesuch" in message
    assert SONNET in message and "claude-haiku-4-5" in message
    assert info.value.known == Pricing().known_models()


# -- usage from the SDK ----------------------------------------------------------------------

SDK_USAGE = {
    "active_seconds": 1234.567,
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_read_input_tokens": 30,
    "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 50},
    "server_tool_use": {"web_search_requests": 6, "web_fetch_requests": 0},
    "list_cost": {"amount": "2500", "currency": "USD"},
}
EXPECTED = Usage(
    active_seconds=D("1234.567"),
    input_tokens=1000,
    output_tokens=200,
    cache_read_input_tokens=30,
    cache_write_5m_tokens=40,
    cache_write_1h_tokens=50,
    web_search_requests=6,
    list_cost_cents=2500,
)


def test_usage_from_sdk_object_dict_and_event() -> None:
    sdk = BetaManagedAgentsSessionUsage.model_validate(SDK_USAGE)
    assert Usage.from_sdk(sdk) == EXPECTED
    assert Usage.from_sdk(SDK_USAGE) == EXPECTED
    event = BetaManagedAgentsSessionUsageEvent.model_validate(
        {"id": "sevt_1", "type": "session.usage", "processed_at": "2026-10-01T12:00:00Z", "usage": SDK_USAGE}
    )
    assert Usage.from_sdk(event) == EXPECTED
    assert Usage.from_sdk({"type": "session.usage", "usage": SDK_USAGE}) == EXPECTED


def test_usage_from_sdk_with_missing_parts() -> None:
    assert Usage.from_sdk(BetaManagedAgentsSessionUsage()) == Usage()
    assert Usage.from_sdk(None) == Usage()
    u = Usage.from_sdk({"input_tokens": 5, "cache_creation": None, "list_cost": None})
    assert u.input_tokens == 5 and u.list_cost_cents is None


def test_minus_gives_the_turn_delta() -> None:
    before = Usage(active_seconds=D("10.5"), input_tokens=100, output_tokens=10, list_cost_cents=3)
    after = Usage(
        active_seconds=D("40.25"), input_tokens=350, output_tokens=60, web_search_requests=2, list_cost_cents=9
    )
    delta = after.minus(before)
    assert delta == Usage(
        active_seconds=D("29.75"), input_tokens=250, output_tokens=50, web_search_requests=2, list_cost_cents=6
    )
    assert Usage().minus(Usage()).is_zero


# -- list cost cross-check ---------------------------------------------------------------


def test_list_cost_cross_check() -> None:
    one_dollar = CostBreakdown(model=SONNET, input_usd=D(1))
    assert check_list_cost(one_dollar, None) is None
    assert check_list_cost(one_dollar, 100) is None
    assert check_list_cost(one_dollar, 103) is None  # 3 cents <= 1 + 2% of 103
    warning = check_list_cost(one_dollar, 104)  # 4 cents > 1 + 2.08
    assert warning is not None and "$1.00" in warning and "$1.04" in warning
    assert check_list_cost(one_dollar, 97) is not None  # 3 cents > 1 + 1.94
    # Small tickets: within a cent is always fine.
    assert check_list_cost(CostBreakdown(model=SONNET, runtime_usd=D("0.004")), 1) is None


# -- display ------------------------------------------------------------------------------


def test_display_rounding() -> None:
    assert format_usd(D("23.045")) == "$23.05"
    assert format_usd(D("1234.5")) == "$1,234.50"
    assert format_usd(D("0.004")) == "$0.0040"
    assert format_usd(D("0.00001")) == "<$0.0001"
    assert format_usd(D(0)) == "$0.00"
    assert format_duration(D("45.4")) == "45s"
    assert format_duration(D(200)) == "3m 20s"
    assert format_duration(D(108_000)) == "30h 00m"
    assert format_tokens(950) == "950"
    assert format_tokens(45_210) == "45.2k"
    assert format_tokens(1_300_000) == "1.3M"


# -- budgets ---------------------------------------------------------------------------------


def _env(budget: str | None) -> Environment:
    return Environment(
        managed_environment=ManagedEnvironment(name="x"), budget_usd=D(budget) if budget else None
    )


def test_budget_param_from_environment_in_cents(app_config: AppConfig) -> None:
    assert budget_param(app_config.environments["internal"]) == {
        "type": "limit",
        "max_list_cost": {"amount": "500", "currency": "USD"},
    }
    assert budget_param(_env("2.5"))["max_list_cost"]["amount"] == "250"  # type: ignore[index]
    assert budget_param(_env(None)) is None
    assert budget_cents_of(budget_param_cents(1234)) == 1234
    with pytest.raises(ValueError):
        budget_param_cents(0)


def test_budget_reached_message_offers_raise_and_escalate() -> None:
    msg = budget_reached_message(
        ticket_id="T1-7", ticket_ref="#7", budget_cents=500, spent_usd=D("5.0312"), approver_mentions="<@U9>"
    )
    assert "#7" in msg["text"]
    section, actions = msg["blocks"]
    assert "$5.00" in section["text"]["text"] and "$5.03" in section["text"]["text"]
    assert "<@U9>" in section["text"]["text"]
    raise_button, escalate = actions["elements"]
    assert raise_button["action_id"] == RAISE_BUDGET_ACTION
    assert escalate["action_id"] == ESCALATE_ACTION
    assert BudgetAction.decode(raise_button["value"]) == BudgetAction(ticket_id="T1-7", budget_cents=1000)
    assert BudgetAction.decode(escalate["value"]).ticket_id == "T1-7"
    assert "$10.00" in raise_button["text"]["text"]
    assert len(raise_button["text"]["text"]) <= 75


def test_budget_reached_message_for_customers_shows_no_money() -> None:
    msg = budget_reached_message(ticket_id="T1-7", ticket_ref="#7", budget_cents=200, show_amounts=False)
    everything = str(msg)
    assert "$" not in everything
    assert RAISE_BUDGET_ACTION in everything
