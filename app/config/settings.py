"""Process settings from the environment (and `.env`), validated once at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where an operator finds each setting: named in the start-up error so nobody has to guess.
WHERE_TO_GET: dict[str, str] = {
    "SLACK_BOT_TOKEN": "Slack app settings -> OAuth & Permissions -> Bot User OAuth Token (xoxb-...)",
    "SLACK_SIGNING_SECRET": "Slack app settings -> Basic Information -> App Credentials -> Signing Secret",
    "SLACK_APP_TOKEN": "Slack app settings -> Basic Information -> App-Level Tokens (xapp-..., connections:write)",
    "ANTHROPIC_API_KEY": "Claude Console -> Settings -> API keys",
}


def is_placeholder(value: object) -> bool:
    """A value left as `.env.example` shows it (`xoxb-...`, `sk-ant-...`, `...`)."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return isinstance(text, str) and text.strip().endswith("...")


class Settings(BaseSettings):
    """Everything the service reads from its environment."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = Field(
        default=None, description="Base URL of the Slack Web API (the emulator in tests)"
    )

    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    anthropic_webhook_signing_key: SecretStr | None = None
    # The Console workspace of the API key: session links in traces point into it.
    anthropic_console_workspace: str = "default"

    redis_url: SecretStr | None = None
    redis_data_dir: Path = Path("var")
    # The pool waits this long for a free connection before a command fails (never at once).
    redis_max_connections: int = Field(default=200, ge=2)
    redis_pool_timeout: float = Field(default=10.0, gt=0)
    # How long a role retries an unreachable Redis at start before exiting non-zero.
    redis_start_timeout: float = Field(default=60.0, ge=0)

    sentry_dsn: SecretStr | None = None
    sentry_environment: str = "production"

    config_path: Path = Field(
        default=Path("support-agent.yml"),
        validation_alias=AliasChoices("SUPPORT_AGENT_CONFIG", "CONFIG_PATH"),
    )
    host: str = "127.0.0.1"
    port: int = 3000
    log_level: str = "INFO"
    worker_id: str | None = None
    # Lease on a ticket held by one worker; renewed at a third of this. A dead worker's tickets
    # move within this plus the reaper's 0.5 s poll (5 s: taken over in under 6 s after a SIGKILL;
    # `support-agent bench takeover` measures it).
    lease_seconds: float = Field(default=5.0, gt=0)
    # A turn still working after this long gets a message with Stop beside it (removed at its end).
    stop_button_after_seconds: float = Field(default=15.0, ge=0)

    @field_validator(
        "slack_bot_token", "slack_signing_secret", "slack_app_token", "anthropic_api_key",
        "anthropic_webhook_signing_key", mode="before",
    )
    @classmethod
    def _placeholder_is_unset(cls, value: object) -> object:
        # `.env.example`'s `sk-ant-...` copied as is is not a key: treating it as one would start
        # the real agent with a key that fails, and tell the user turns cost money.
        return None if is_placeholder(value) else value

    @model_validator(mode="after")
    def _no_blank_secrets(self) -> Settings:
        # A blank signing secret would be a key anyone can sign with (HMAC with an empty key):
        # refuse it rather than serve a route whose check means nothing.
        for name in ("slack_signing_secret", "anthropic_webhook_signing_key", "slack_bot_token", "slack_app_token"):
            value = getattr(self, name)
            if value is not None and not value.get_secret_value().strip():
                raise ValueError(f"{name.upper()} is set but empty; unset it or give the real value")
        return self

    @property
    def serves_slack_http(self) -> bool:
        """Slack's HTTP routes are served only when their requests can be verified."""
        return self.slack_signing_secret is not None

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    def missing(
        self, *, need_slack: bool = True, need_anthropic: bool = True, receives_slack: bool | None = None
    ) -> list[str]:
        """Names of required variables that are not set.

        Every role that talks to Slack needs the bot token; only the one that receives Slack's
        requests (web) also needs the signing secret, or an app token for Socket Mode.
        """
        receives_slack = need_slack if receives_slack is None else receives_slack
        names: list[str] = []
        if need_slack and self.slack_bot_token is None:
            names.append("SLACK_BOT_TOKEN")
        if receives_slack and self.slack_signing_secret is None and self.slack_app_token is None:
            names.append("SLACK_SIGNING_SECRET")
        if need_anthropic and self.anthropic_api_key is None:
            names.append("ANTHROPIC_API_KEY")
        return names


class SettingsError(Exception):
    """Settings are missing or malformed; the message is meant for the operator."""


def describe_missing(names: list[str]) -> str:
    lines = ["support-agent cannot start: missing required settings."]
    for name in names:
        lines.append(f"  {name}: {WHERE_TO_GET.get(name, 'see README.md')}")
    lines.append("Set them in the environment or in a .env file (see .env.example).")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"support-agent cannot start: invalid settings: {problems}") from None
