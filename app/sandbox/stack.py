"""The emulated world the app runs in for tests, benchmarks and the local sandbox.

A `Stack` owns the Slack and Managed Agents emulators and knows how to point the app at
them: as settings for an in-process app, or as environment variables for a subprocess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.config.model import AppConfig, load_config
from app.config.settings import Settings
from app.sandbox.agents import AgentsEmulator
from app.sandbox.app_runner import ROOT, AppProcess, InProcessApp
from app.sandbox.slack import SlackEmulator

BOT_TOKEN = "xoxb-emulated-bot-token"
SIGNING_SECRET = "emulated-signing-secret"
ANTHROPIC_KEY = "sk-ant-emulated-key"


class Stack:
    def __init__(
        self,
        redis_url: str,
        *,
        config_path: Path | None = None,
        data_dir: Path | None = None,
        slack_options: dict[str, Any] | None = None,
        agents_options: dict[str, Any] | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.config_path = config_path or ROOT / "support-agent.yml"
        self.data_dir = data_dir or ROOT / "var"
        self.slack = SlackEmulator(bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, **(slack_options or {}))
        self.agents = AgentsEmulator(api_key=ANTHROPIC_KEY, **(agents_options or {}))
        self.apps: list[InProcessApp | AppProcess] = []

    def start(self) -> Stack:
        self.slack.start()
        self.agents.start()
        return self

    def stop(self) -> None:
        for app in reversed(self.apps):
            try:
                app.stop()
            except Exception:
                pass
        self.apps.clear()
        self.agents.stop()
        self.slack.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def config(self) -> AppConfig:
        return load_config(self.config_path)

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "slack_bot_token": SecretStr(BOT_TOKEN),
            "slack_signing_secret": SecretStr(SIGNING_SECRET),
            "slack_api_url": self.slack.api_url,
            "anthropic_api_key": SecretStr(ANTHROPIC_KEY),
            "anthropic_base_url": self.agents.url,
            "redis_url": SecretStr(self.redis_url),
            "redis_data_dir": self.data_dir,
            "config_path": self.config_path,
            "lease_seconds": 3.0,
            **overrides,
        }
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    def env(self, **overrides: str) -> dict[str, str]:
        return {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": self.slack.api_url,
            "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
            "ANTHROPIC_BASE_URL": self.agents.url,
            "REDIS_URL": self.redis_url,
            "REDIS_DATA_DIR": str(self.data_dir),
            "SUPPORT_AGENT_CONFIG": str(self.config_path),
            "LEASE_SECONDS": "3",
            **overrides,
        }

    def start_app(self, *, web: bool = True, worker: bool = True, **settings: Any) -> InProcessApp:
        app = InProcessApp(self.settings(**settings), self.config, web=web, worker=worker).start()
        self.apps.append(app)
        if web:
            self.slack.set_app_url(f"{app.url}/slack/events")
        return app

    def start_process(self, role: str = "run", log_path: Path | None = None, **env: str) -> AppProcess:
        proc = AppProcess(self.env(**env), role=role, log_path=log_path)
        self.apps.append(proc)  # before it is up: one that never becomes healthy is stopped too
        proc.start()
        if proc.port:
            self.slack.set_app_url(f"{proc.url}/slack/events")
        return proc
