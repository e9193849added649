"""`support-agent doctor`: check what the service needs and say what to fix, one line each.

Checks settings, the agent config, Redis, Slack (`auth.test`, the granted scopes against
`manifest.yml` when Slack reports them, and that the manifest's event, interactivity and slash
command URLs point at this service, which answers there), the Anthropic key, that Managed Agents
holds the agents, environments and vaults the config describes (what `provision --dry-run`
would change), and that each MCP server answers with its token. Exit 0 only when every check
holds, so it can gate a deploy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from app.config.settings import Settings, load_settings

if TYPE_CHECKING:
    from app.config.model import AppConfig

MANIFEST = Path(__file__).resolve().parents[1] / "manifest.yml"


@dataclass
class Report:
    ok: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def good(self, text: str) -> None:
        self.ok.append(text)

    def fix(self, text: str) -> None:
        self.problems.append(text)


def manifest_scopes(path: Path = MANIFEST) -> set[str]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return set(((data.get("oauth_config") or {}).get("scopes") or {}).get("bot") or [])


async def check_redis(settings: Settings, report: Report) -> None:
    if settings.redis_url is None:
        report.good("Redis: embedded (no REDIS_URL)")
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.redis_url.get_secret_value(), socket_connect_timeout=2)
    try:
        await asyncio.wait_for(client.ping(), 3)
        report.good("Redis: reachable")
    except Exception as exc:  # any failure is the operator's to fix; name it
        report.fix(f"Redis: cannot reach REDIS_URL ({type(exc).__name__}); start Redis or fix REDIS_URL")
    finally:
        await client.aclose()


async def check_slack(settings: Settings, report: Report) -> None:
    if settings.slack_bot_token is None:
        report.fix("Slack: SLACK_BOT_TOKEN is not set; Slack app -> OAuth & Permissions -> Bot User OAuth Token")
        return
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    client = AsyncWebClient(token=settings.slack_bot_token.get_secret_value())
    if settings.slack_api_url:  # the emulator in tests
        client.base_url = settings.slack_api_url
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        report.fix(f"Slack: auth.test failed ({exc.response.get('error')}); check SLACK_BOT_TOKEN")
        return
    except Exception as exc:
        report.fix(f"Slack: cannot reach the Slack API ({type(exc).__name__}); check SLACK_API_URL and the network")
        return
    report.good(f"Slack: signed in as @{response.get('user')} in {response.get('team')}")
    granted = response.headers.get("x-oauth-scopes") if response.headers else None
    if granted is not None:
        missing = sorted(manifest_scopes() - {s.strip() for s in granted.split(",") if s.strip()})
        if missing:
            report.fix(f"Slack: scopes missing from the installed app: {', '.join(missing)}; "
                       "reinstall the app from manifest.yml")
    if settings.slack_signing_secret is None and settings.slack_app_token is None:
        report.fix("Slack: neither SLACK_SIGNING_SECRET (HTTP) nor SLACK_APP_TOKEN (Socket Mode) is set")


async def check_anthropic(settings: Settings, report: Report) -> None:
    if settings.anthropic_api_key is None:
        report.fix("Anthropic: ANTHROPIC_API_KEY is not set; Claude Console -> Settings -> API keys")
        return
    import anthropic

    client = anthropic.AsyncAnthropic(api_key=settings.anthropic_api_key.get_secret_value(),
                                      base_url=settings.anthropic_base_url, max_retries=0, timeout=10)
    try:
        await client.beta.agents.list(limit=1)
        report.good("Anthropic: the key works (Managed Agents reachable)")
    except anthropic.AuthenticationError:
        report.fix("Anthropic: ANTHROPIC_API_KEY is rejected; make a new key in the Claude Console")
    except Exception as exc:
        report.fix(f"Anthropic: Managed Agents unreachable ({type(exc).__name__}); check ANTHROPIC_BASE_URL")
    finally:
        await client.close()


def manifest_urls(path: Path = MANIFEST) -> list[tuple[str, str]]:
    """(where, url) for each URL the manifest gives Slack for this app."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    conf = data.get("settings") or {}
    out = []
    for key in ("event_subscriptions", "interactivity"):
        url = (conf.get(key) or {}).get("request_url")
        if url:
            out.append((key.replace("_", " "), str(url)))
    for command in (data.get("features") or {}).get("slash_commands") or []:
        if command.get("url"):
            out.append((f"slash command {command.get('command')}", str(command["url"])))
    return out


async def check_slack_urls(settings: Settings, config: AppConfig, report: Report, manifest: Path) -> None:
    if settings.slack_app_token is not None and settings.slack_signing_secret is None:
        report.good("Slack: Socket Mode, no request URLs needed")
        return
    if not config.public_base_url:
        report.fix("Slack: `public_base_url` is not set in the config; set it to the https URL of this service "
                   "(Slack's request URLs and our MCP servers live under it)")
        return
    base = config.public_base_url.rstrip("/")
    want = f"{base}/slack/events"
    for where, url in manifest_urls(manifest):
        if url.rstrip("/") != want:
            report.fix(f"Slack: manifest.yml sends {where} to {url}; this service takes them at {want}")
    import httpx2

    try:
        async with httpx2.AsyncClient(timeout=5) as http:
            response = await http.get(f"{base}/healthz")
        if response.status_code == 200:
            report.good(f"Slack: this service answers at {base}")
        else:
            report.fix(f"Slack: {base}/healthz answered {response.status_code}; is the web role running there?")
    except httpx2.HTTPError as exc:
        report.fix(f"Slack: {base} is not reachable ({type(exc).__name__}); start the web role or fix public_base_url")


async def check_provisioned(settings: Settings, config: AppConfig, report: Report) -> None:
    if settings.anthropic_api_key is None:
        return  # check_anthropic says so
    import anthropic

    from app.provision import Provisioner, ProvisionError

    client = anthropic.AsyncAnthropic(api_key=settings.anthropic_api_key.get_secret_value(),
                                      base_url=settings.anthropic_base_url, max_retries=0, timeout=10)
    try:
        changes = await Provisioner(client, None, config, dry_run=True).run()
    except ProvisionError as exc:
        report.fix(f"Managed Agents: {exc}")
        return
    except anthropic.APIError:
        return  # check_anthropic names the key or the connection
    finally:
        await client.close()
    pending = [c for c in changes if c.changed or c.action == "error"]
    for change in pending:
        what = f"would {change.action}" if change.changed else change.detail
        report.fix(f"Managed Agents: {change.kind} {change.name} {what}; run `support-agent provision`")
    if not pending:
        report.good(f"Managed Agents: {len(changes)} agents, environments and vaults as configured")


async def check_mcp(config: AppConfig, report: Report) -> None:
    from app.provision import ProvisionError, server_url
    from app.sessions.bridge import count_tools

    async def one(env_name: str, name: str, server: Any) -> None:
        try:
            url = server.url or server_url(config, name, server)
        except ProvisionError:
            return  # check_slack_urls names the missing public_base_url
        token = os.environ.get(server.token_env or "", "").strip() or None
        if server.token_env and token is None:
            return  # check_config names the missing token
        try:
            tools = await count_tools(url, token, timeout=8)
        except Exception as exc:  # any failure to answer is the operator's to fix; name it
            report.fix(f"MCP: {env_name}/{name} does not answer at {url} ({_reason(exc)}); "
                       "check the URL, that it runs, and its token")
            return
        report.good(f"MCP: {env_name}/{name} answers at {url} ({tools} tools)")

    await asyncio.gather(*(
        one(env_name, name, server)
        for env_name, env in config.environments.items() for name, server in env.mcp_servers.items()
    ))


def _reason(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return f"HTTP {status}" if status else type(exc).__name__


def check_config(settings: Settings, report: Report) -> AppConfig | None:
    from app.config.model import load_config
    from app.config.yaml_lines import ConfigError

    try:
        config = load_config(settings.config_path)
    except ConfigError as exc:
        report.fix(f"Config: {exc}")
        return None
    report.good(f"Config: {settings.config_path} ok")
    for env_name, env in config.environments.items():
        for name, server in env.mcp_servers.items():
            var = getattr(server, "token_env", None)
            if var and not os.environ.get(var, "").strip():
                report.fix(f"MCP: {env_name}/{name}: {var} is not set; set the server's bearer token")
    return config


async def diagnose(settings: Settings, manifest: Path = MANIFEST) -> Report:
    report = Report()
    config = check_config(settings, report)
    checks = [check_redis(settings, report), check_slack(settings, report), check_anthropic(settings, report)]
    if config is not None:
        checks += [check_slack_urls(settings, config, report, manifest), check_provisioned(settings, config, report),
                   check_mcp(config, report)]
    await asyncio.gather(*checks)
    return report


def cmd_doctor(args: argparse.Namespace) -> int:
    report = asyncio.run(diagnose(load_settings()))
    for line in report.ok:
        print(f"ok   {line}")
    for line in report.problems:
        print(f"FIX  {line}")
    print("all good" if not report.problems else f"{len(report.problems)} problem(s) to fix")
    return 0 if not report.problems else 1


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = ("check settings, config, Redis, Slack (token, scopes, request URLs), Anthropic (key, provisioned "
            "agents), MCP servers (reachable, token); print what to fix")
    p = sub.add_parser("doctor", help=text, description=text)
    p.set_defaults(func=cmd_doctor)
