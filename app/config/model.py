"""The checked-in agent config (`support-agent.yml`) as pydantic models."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.config.memory import CustomerOrg, EnvironmentMemory, check_customers
from app.config.outcomes import Outcomes, check_rubric_files
from app.config.specialists import Specialists
from app.config.yaml_lines import ConfigError, line_for, load_yaml_with_lines, read_text

PermissionPolicy = Literal["always_allow", "always_ask", "auto"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentConfig(Strict):
    name: str = Field(min_length=1, max_length=255)
    model: str = Field(min_length=1)
    system: str = Field(min_length=1, max_length=100_000)
    description: str | None = None


class ModelPrice(Strict):
    """USD per million tokens."""

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cache_read: Decimal | None = Field(default=None, ge=0)
    cache_write_5m: Decimal | None = Field(default=None, ge=0)
    cache_write_1h: Decimal | None = Field(default=None, ge=0)

    # Anthropic's standard multipliers, used when the table leaves a cache column out.
    @model_validator(mode="after")
    def _fill_cache_prices(self) -> ModelPrice:
        if self.cache_read is None:
            self.cache_read = self.input * Decimal("0.1")
        if self.cache_write_5m is None:
            self.cache_write_5m = self.input * Decimal("1.25")
        if self.cache_write_1h is None:
            self.cache_write_1h = self.input * Decimal("2")
        return self


def _p(i: str, o: str) -> ModelPrice:
    return ModelPrice(input=Decimal(i), output=Decimal(o))


DEFAULT_MODEL_PRICES: dict[str, ModelPrice] = {
    "claude-opus-5-5": ModelPrice(
        input=Decimal(4), output=Decimal(20), cache_read=Decimal("0.20"),
        cache_write_5m=Decimal(5), cache_write_1h=Decimal(8),
    ),
    "claude-opus-5": _p("5", "25"),
    "claude-opus-4-8": _p("5", "25"),
    "claude-opus-4-7": _p("5", "25"),
    "claude-opus-4-6": _p("5", "25"),
    "claude-opus-4-5": _p("5", "25"),
    "claude-sonnet-5-5": _p("2", "10"),
    "claude-sonnet-5": _p("2", "10"),
    "claude-sonnet-4-6": _p("3", "15"),
    "claude-sonnet-4-5": _p("3", "15"),
    "claude-haiku-5-5": _p("0.10", "0.50"),
    "claude-haiku-4-5": _p("1", "5"),
}


class Pricing(Strict):
    runtime_usd_per_hour: Decimal = Field(default=Decimal("0.08"), ge=0)
    web_search_usd_per_1k: Decimal = Field(default=Decimal("10"), ge=0)
    models: dict[str, ModelPrice] = Field(default_factory=dict)

    def price_for(self, model: str) -> ModelPrice | None:
        return self.models.get(model) or DEFAULT_MODEL_PRICES.get(model)

    def known_models(self) -> list[str]:
        return sorted(set(DEFAULT_MODEL_PRICES) | set(self.models))


class ManagedEnvironment(Strict):
    """The Managed Agents environment a ticket's session runs in."""

    id: str | None = None
    name: str | None = None
    networking: Literal["limited", "unrestricted"] = "limited"
    allowed_hosts: list[str] = Field(default_factory=list)
    allow_mcp_servers: bool = True
    allow_package_managers: bool = False

    @model_validator(mode="after")
    def _id_or_name(self) -> ManagedEnvironment:
        if not self.id and not self.name:
            raise ValueError("give the Managed Agents environment an `id` or a `name`")
        return self


class McpServer(Strict):
    """An MCP server the agent may use in an environment."""

    url: str | None = Field(default=None, description="Full URL; omit for our own servers")
    # Our own servers are mounted at {public_base_url}/mcp/<name> when `url` is omitted.
    builtin: bool = False
    token_env: str | None = Field(default=None, description="Env var holding the bearer token")
    default_policy: PermissionPolicy = "always_ask"
    tools: dict[str, PermissionPolicy] = Field(default_factory=dict)
    bridged: bool = Field(default=False, description="Cloud cannot reach it: the worker calls it")

    @model_validator(mode="after")
    def _reachable(self) -> McpServer:
        if self.bridged and not self.url:
            raise ValueError("a bridged MCP server needs the `url` the worker calls it at")
        if not self.url and not self.builtin:
            raise ValueError("give the MCP server a `url`, or `builtin: true` for one of ours")
        return self


class Approvers(Strict):
    users: list[str] = Field(default_factory=list)
    usergroups: list[str] = Field(default_factory=list)


class ChannelRule(Strict):
    ids: list[str] = Field(default_factory=list)
    names: list[str] = Field(default_factory=list)
    shared: bool = Field(
        default=False,
        description="Marks the environment for external parties: the only kind that serves shared channels",
    )

    @field_validator("names")
    @classmethod
    def _strip_hash(cls, names: list[str]) -> list[str]:
        return [n.lstrip("#") for n in names]


class Environment(Strict):
    channels: ChannelRule = Field(default_factory=ChannelRule)
    managed_environment: ManagedEnvironment
    model: str | None = None
    mcp_servers: dict[str, McpServer] = Field(default_factory=dict)
    budget_usd: Decimal | None = Field(default=None, gt=0)
    show_cost: bool = True
    customer_facing: bool = False
    approvers: Approvers = Field(default_factory=Approvers)
    retention_days: int | None = Field(default=None, gt=0)
    triage_channel: str | None = None
    triage_usergroup: str | None = None
    # Subagents the environment's agent coordinates (issue 19); after mcp_servers, which it checks.
    specialists: Specialists = Field(default_factory=dict)
    # Rubrics the grader checks answers against, per ticket category (issue 18).
    outcomes: Outcomes | None = None
    # Memory stores attached to its tickets' sessions: product, per customer (issue 19).
    memory: EnvironmentMemory | None = None

    @property
    def external(self) -> bool:
        """Marked for external parties: may serve shared (Slack Connect) channels and DMs."""
        return self.channels.shared


class SlackPolicy(Strict):
    staff: Approvers = Field(default_factory=Approvers)
    admins: list[str] = Field(default_factory=list)
    allow_bots: list[str] = Field(default_factory=list, description="Bot ids whose messages count")
    max_question_chars: int = Field(default=4000, gt=0)


class AppConfig(Strict):
    agent: AgentConfig
    environments: dict[str, Environment] = Field(min_length=1)
    default_environment: str | None = None
    pricing: Pricing = Field(default_factory=Pricing)
    slack: SlackPolicy = Field(default_factory=SlackPolicy)
    public_base_url: str | None = Field(default=None, description="Where the cloud reaches our MCP servers")
    # Customer organisations by channel or Slack team, for per-customer memory (app/config/memory.py).
    customers: dict[str, CustomerOrg] = Field(default_factory=dict)

    @field_validator("customers")
    @classmethod
    def _check_customers(cls, customers: dict[str, CustomerOrg]) -> dict[str, CustomerOrg]:
        check_customers(customers)
        return customers

    @model_validator(mode="after")
    def _check_refs(self) -> AppConfig:
        if self.default_environment and self.default_environment not in self.environments:
            raise ValueError(
                f"default_environment {self.default_environment!r} is not one of: "
                + ", ".join(sorted(self.environments))
            )
        return self

    def model_for(self, environment: str) -> str:
        return self.environments[environment].model or self.agent.model

    def external_environments(self) -> list[str]:
        return [name for name, env in self.environments.items() if env.external]

    def environment_for_channel(
        self, channel_id: str, channel_name: str | None = None, is_shared: bool = False
    ) -> str | None:
        """The environment serving a channel, failing closed for shared ones.

        A shared or external channel (Slack Connect, a DM with someone from another
        organisation) is only ever served by an environment marked for external parties
        (`channels.shared: true`), whatever its id or name say: a Slack Connect channel can be
        named `#support` by the other side, and listing its id under `internal` by mistake must
        not hand the customer internal tools. None means "not configured here".
        """
        candidates = {
            name: env for name, env in self.environments.items() if env.external or not is_shared
        }
        for name, env in candidates.items():
            if channel_id in env.channels.ids:
                return name
        if channel_name:
            for name, env in candidates.items():
                if channel_name.lstrip("#") in env.channels.names:
                    return name
        if is_shared:
            externals = self.external_environments()
            # The first environment for external parties takes shared channels nobody named.
            return externals[0] if externals else None
        return self.default_environment


def parse_config(text: str, source: str = "support-agent.yml") -> AppConfig:
    data, lines = load_yaml_with_lines(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: the config must be a mapping with `agent` and `environments`")
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = line_for(lines, loc)
            where = f"{source}:{line}" if line else source
            field = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{where}: {field}: {err['msg']}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems)) from None
    # Rubric files are read now, so a missing one is named with its file and line (issue 18).
    problems = check_rubric_files(config.environments, Path(source).parent, lines, source)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return config


def load_config(path: Path) -> AppConfig:
    return parse_config(read_text(path), str(path))
