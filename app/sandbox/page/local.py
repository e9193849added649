"""`support-agent sandbox`: the whole bot on this machine, with Slack emulated and a web page.

Started on 127.0.0.1: the Slack emulator, the app (web + worker in this process, an embedded
Redis under the data folder, our MCP servers mounted in the web app) and the sandbox page
(`web_ui`), which looks and behaves like a Slack channel and drives the emulator.

Two modes:

- **demo** (no `ANTHROPIC_API_KEY`): the Managed Agents emulator runs the scripted demo agent
  (`demo.py`); its MCP calls reach the real knowledge_base / ticket_history servers here.
- **real** (`ANTHROPIC_API_KEY` set): the real Managed Agents API; only Slack is emulated. The
  cloud cannot reach MCP servers on 127.0.0.1, so unless `public_url` says where a tunnel
  exposes the app, our servers are marked `bridged` with their local URL: the worker calls them
  for the agent when this build has the bridge (`app.sessions.bridge`); without it they are
  left off the cloud agent and the page says MCP tools are unavailable in this mode.

The sandbox is disposable: its Redis is wiped at start (the emulated workspace and agents live
in memory, so nothing kept from an earlier run would still match them), and its agent and
Managed Agents environment carry a `-sandbox` suffix so a real-mode run never reuses
production's.
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as sync_redis
import yaml
from pydantic import SecretStr

from app.cli import SANDBOX_CONNECTION, SANDBOX_LOCK
from app.config.model import load_config
from app.config.settings import Settings
from app.observability.logs import configure_logging
from app.redis_conn import EmbeddedRedis
from app.runtime import make_scrubber
from app.sandbox.app_runner import ROOT, InProcessApp
from app.sandbox.page import demo_specialist
from app.sandbox.page.demo import demo_config, demo_scenario, demo_workspace
from app.sandbox.server import ServerThread
from app.sandbox.stack import Stack
from mcp_servers.auth import mint_token

log = logging.getLogger(__name__)

SANDBOX_SUFFIX = "-sandbox"
CHANNEL = "C0001"  # #support in the emulator's seeded workspace, served by the `internal` environment
STAFF_USER = "U0001"  # alice: staff in the sandbox, so she may approve tool calls
MCP_TOKEN_VARS = ("MCP_TOKEN_INTERNAL", "MCP_TOKEN_CUSTOMERS")


class SandboxBusy(OSError):
    """Another sandbox holds this data folder or page port; nothing was changed."""


@dataclass
class SandboxInfo:
    """What the page tells its user about this sandbox."""

    mode: str  # "demo" | "real"
    agent_note: str
    mcp_note: str
    mcp_available: bool
    channel: str = CHANNEL
    staff: list[str] = field(default_factory=lambda: [STAFF_USER])
    app_url: str = ""
    slack_url: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def bridge_available() -> bool:
    """Whether this build can bridge MCP servers the cloud cannot reach (the worker calls them)."""
    return importlib.util.find_spec("app.sessions.bridge") is not None


def sandbox_config(
    source: Path, *, public_base_url: str | None, bridge_to: str | None, staff: list[str]
) -> str:
    """The sandbox's copy of the agent config (YAML text).

    Names get the sandbox suffix; `public_base_url` is where the cloud reaches our MCP servers
    (the app itself in demo mode, a tunnel with the real agent); with `bridge_to` (the app's
    local URL) our own servers are bridged instead: left off the cloud agent, called by the
    worker at `<bridge_to>/mcp/<name>`."""
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    agent = data.setdefault("agent", {})
    agent["name"] = f"{agent.get('name', 'support-agent')}{SANDBOX_SUFFIX}"
    for env in (data.get("environments") or {}).values():
        managed = env.get("managed_environment") or {}
        if managed.get("name") and not managed.get("id"):
            managed["name"] = f"{managed['name']}{SANDBOX_SUFFIX}"
        if bridge_to:
            for name, server in (env.get("mcp_servers") or {}).items():
                if server.get("builtin") and not server.get("url"):
                    server["bridged"] = True
                    server["url"] = f"{bridge_to.rstrip('/')}/mcp/{name}"
    slack = data.setdefault("slack", {})
    people = slack.setdefault("staff", {})
    people["users"] = list(dict.fromkeys([*(people.get("users") or []), *staff]))
    if public_base_url:
        data["public_base_url"] = public_base_url
    else:
        data.pop("public_base_url", None)
    header = f"# Written by `support-agent sandbox` from {source.name}; rewritten at every start.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


class LocalSandbox:
    """Emulated Slack + the app + the sandbox page. `start()`, then `stop()`."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int = 0,
        data_dir: Path = Path("var/sandbox"),
        real_agent: bool | None = None,
        public_url: str | None = None,
        app_port: int = 0,
        log_level: str = "INFO",
    ) -> None:
        self.settings = settings
        self.port = port
        self.data_dir = data_dir
        self.real_agent = settings.anthropic_api_key is not None if real_agent is None else real_agent
        if self.real_agent and settings.anthropic_api_key is None:
            raise ValueError("the real agent needs ANTHROPIC_API_KEY")
        self.public_url = public_url.rstrip("/") if public_url else None
        self.app_port = app_port
        self.log_level = log_level
        self.redis: EmbeddedRedis | None = None
        self.stack: Stack | None = None
        self.app: InProcessApp | None = None
        self.ui: ServerThread | None = None
        self.info: SandboxInfo | None = None
        self.log_path = data_dir / "sandbox.log"
        self._log_stream: Any = None
        self._lock: Any = None

    @property
    def url(self) -> str:
        if self.ui is None:
            raise RuntimeError("the sandbox is not started")
        return self.ui.url

    @property
    def bridged(self) -> bool:
        """Real agent, no tunnel: our MCP servers are bridged (reached by the worker, not the cloud)."""
        return self.real_agent and self.public_url is None

    @property
    def mcp_available(self) -> bool:
        return not self.bridged or bridge_available()

    def start(self) -> LocalSandbox:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        from app.sandbox.page.web import build_web_ui

        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Everything that can refuse comes before the wipe below: a second sandbox on the same
        # data folder or page port must fail without touching the running one's Redis.
        self._take_lock()
        self._check_page_port()
        source = self.config_source()
        # The user's own file is validated first, so an error names their file and line (as
        # `check-config` does), never the generated copy or a YAML traceback.
        load_config(source)
        for var in MCP_TOKEN_VARS:  # the MCP servers mount only when their tokens are set
            if not os.environ.get(var, "").strip():
                os.environ[var] = mint_token()
        self.redis = EmbeddedRedis(self.data_dir)
        sync_redis.Redis.from_url(self.redis.url).flushall()
        config_path = self.data_dir / "support-agent.yml"
        self.stack = Stack(self.redis.url, data_dir=self.data_dir, config_path=config_path)
        # The agents emulator starts in both modes (the stack's settings name it), but with the
        # real agent the app is pointed at the real API and nothing calls the emulator.
        self.stack.start()
        if not self.real_agent:
            self.stack.agents.set_scenario(demo_scenario())
            demo_workspace(self.stack.slack.state)  # #help, where the demo shows an outcome check
        # A first config without the app's URL: the app's port is only known once it exists.
        config_path.write_text(self._config_text(source, None), encoding="utf-8")
        settings = self.stack.settings(**self._overrides())
        self._configure_logging(settings)
        self.app = InProcessApp(settings, self.stack.config, port=self.app_port)
        config_path.write_text(self._config_text(source, self.app.url), encoding="utf-8")
        self.app.config = self.stack.config
        if not self.real_agent:  # "specialist" questions go to the demo's billing specialist
            agent = demo_specialist.specialist_agent(self.app.config)
            self.stack.agents.set_scenario(demo_specialist.with_specialist(demo_scenario(), agent))
        self.app.start()
        self.stack.apps.append(self.app)
        self.stack.slack.set_app_url(f"{self.app.url}/slack/events")
        self.info = self._info()
        self.ui = ServerThread(build_web_ui(self.stack.slack, self.info), port=self.port).start()
        self._write_connection(settings)
        log.info("sandbox started", extra={"url": self.ui.url, "mode": self.info.mode, "app_url": self.app.url})

    @property
    def connection_path(self) -> Path:
        return self.data_dir / SANDBOX_CONNECTION

    def _write_connection(self, settings: Settings) -> None:
        """How the CLI reaches this sandbox (`costs`, `trace` read it; a shell can source it).

        Only emulator credentials are written: in real mode the API key stays where the user
        keeps it, and the file names only the endpoints."""
        values = {
            "REDIS_URL": settings.redis_url.get_secret_value() if settings.redis_url else "",
            "SLACK_API_URL": settings.slack_api_url or "",
            "SLACK_BOT_TOKEN": settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else "",
            "SUPPORT_AGENT_CONFIG": str(settings.config_path.resolve()),
        }
        if not self.real_agent:
            assert self.stack is not None
            values["ANTHROPIC_BASE_URL"] = self.stack.agents.url
            values["ANTHROPIC_API_KEY"] = self.stack.agents.api_key
        lines = [
            "# Written by `support-agent sandbox` while it runs; removed when it stops.",
            "# `support-agent costs` and `support-agent trace` read it (from the folder the sandbox was",
            "# started in, or with --sandbox <data folder>). To point any command at the sandbox:",
            f"#   set -a; . {self.connection_path}; set +a",
            *(f"{name}={value}" for name, value in values.items()),
        ]
        self.connection_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def config_source(self) -> Path:
        source = self.settings.config_path
        if not source.is_file() and "SUPPORT_AGENT_CONFIG" not in os.environ:
            return ROOT / "support-agent.yml"  # started outside a checkout: the project's own config
        return source

    def _take_lock(self) -> None:
        lock = open(self.data_dir / SANDBOX_LOCK, "w", encoding="utf-8")  # held (locked) until stop()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            raise SandboxBusy(
                f"another sandbox is running with data folder {self.data_dir}; stop it, or use --data-dir"
            ) from None
        self._lock = lock

    def _check_page_port(self) -> None:
        if not self.port:
            return
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", self.port))
        except OSError:
            raise SandboxBusy(f"port {self.port} is in use (another sandbox?); try --port") from None
        finally:
            probe.close()

    def _config_text(self, source: Path, app_url: str | None) -> str:
        text = sandbox_config(
            source,
            public_base_url=None if self.bridged else self.public_url or app_url,
            bridge_to=app_url if self.bridged else None,
            staff=[STAFF_USER],
        )
        if self.real_agent:
            return text
        # Outcomes on in #help (issue 18); a billing specialist in the default environment (19).
        return demo_specialist.add_specialist(demo_config(text))

    def _overrides(self) -> dict[str, Any]:
        """Settings the sandbox decides, whatever the environment or `.env` says."""
        overrides: dict[str, Any] = {
            "slack_app_token": None,  # never Socket Mode to a real workspace
            "sentry_dsn": None,
            "anthropic_webhook_signing_key": None,
            "worker_id": None,
            "log_level": self.log_level,
        }
        if self.real_agent:
            overrides["anthropic_api_key"] = self.settings.anthropic_api_key
            overrides["anthropic_base_url"] = self.settings.anthropic_base_url
        else:
            assert self.stack is not None
            overrides["anthropic_api_key"] = SecretStr(self.stack.agents.api_key)
        return overrides

    def _configure_logging(self, settings: Settings) -> None:
        """The app's JSON logs go to a file: the terminal shows only what a person needs."""
        assert self.stack is not None
        self._log_stream = open(self.log_path, "a", encoding="utf-8")
        configure_logging(make_scrubber(settings, self.stack.config), self.log_level, stream=self._log_stream)

    def _info(self) -> SandboxInfo:
        assert self.stack is not None and self.app is not None
        if self.real_agent:
            agent_note = (
                "The agent is real: Claude through the Managed Agents API (ANTHROPIC_API_KEY is set), "
                "so turns cost real money. Only Slack is emulated."
            )
        else:
            agent_note = (
                "No ANTHROPIC_API_KEY: the agent is a scripted demo running in the local Managed Agents "
                "emulator, so its answers are canned. Everything else is the real bot: tickets, "
                "streaming, tool timeline, buttons, costs, and real MCP calls to the knowledge base."
            )
        if not self.real_agent:
            mcp_note = f"MCP servers (served by the app; they want a bearer token): {self._mcp_urls(self.app.url)}."
        elif self.public_url:
            mcp_note = f"MCP servers, reached by the cloud through your tunnel: {self._mcp_urls(self.public_url)}."
        elif self.mcp_available:
            mcp_note = (
                "MCP servers are bridged: the cloud cannot reach 127.0.0.1, so the worker calls them for "
                f"the agent: {self._mcp_urls(self.app.url)}."
            )
        else:
            mcp_note = (
                "MCP tools are unavailable in this mode: the cloud cannot reach MCP servers on 127.0.0.1 and "
                "no bridge is available. Restart with --public-url https://<tunnel> --app-port <port> to "
                "expose them through a tunnel."
            )
        return SandboxInfo(
            mode="real" if self.real_agent else "demo",
            agent_note=agent_note,
            mcp_note=mcp_note,
            mcp_available=self.mcp_available,
            app_url=self.app.url,
            slack_url=self.stack.slack.url,
        )

    def mcp_servers(self) -> list[str]:
        """Our own MCP servers the sandbox's config serves (knowledge_base, ticket_history)."""
        assert self.stack is not None
        return list(dict.fromkeys(
            name for env in self.stack.config.environments.values()
            for name, server in env.mcp_servers.items() if server.builtin
        ))

    def _mcp_urls(self, base: str) -> str:
        return " and ".join(f"{name} at {base.rstrip('/')}/mcp/{name}" for name in self.mcp_servers())

    def stop(self) -> None:
        if self.ui is not None:
            self.ui.stop()
            self.ui = None
        if self.stack is not None:
            try:
                self.stack.stop()
            except Exception:
                log.exception("sandbox app stopped with an error")
            self.stack = None
        if self.redis is not None:
            self.redis.close()
            self.redis = None
        if self._log_stream is not None:
            for handler in list(logging.getLogger().handlers):
                if getattr(handler, "stream", None) is self._log_stream:
                    logging.getLogger().removeHandler(handler)
            self._log_stream.close()
            self._log_stream = None
        if self._lock is not None:
            self.connection_path.unlink(missing_ok=True)
            self._lock.close()  # closing the file releases the flock
            self._lock = None

    def __enter__(self) -> LocalSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
