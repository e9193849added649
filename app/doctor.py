"""`support-agent doctor`: check what the service needs and say what to fix, one line each.

Checks settings, the agent config, Redis, Slack (`auth.test`, the granted scopes against
`manifest.yml` when Slack reports them), the Anthropic key, and each MCP server's token.
Exit 0 only when every check holds, so it can gate a deploy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app.config.settings import Settings, load_settings

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


def check_config(settings: Settings, report: Report) -> bool:
    from app.config.model import load_config
    from app.config.yaml_lines import ConfigError

    try:
        config = load_config(settings.config_path)
    except ConfigError as exc:
        report.fix(f"Config: {exc}")
        return False
    report.good(f"Config: {settings.config_path} ok")
    for env_name, env in config.environments.items():
        for name, server in env.mcp_servers.items():
            var = getattr(server, "token_env", None)
            if var and not os.environ.get(var, "").strip():
                report.fix(f"MCP: {env_name}/{name}: {var} is not set; set the server's bearer token")
    return True


async def diagnose(settings: Settings) -> Report:
    report = Report()
    check_config(settings, report)
    await asyncio.gather(check_redis(settings, report), check_slack(settings, report),
                         check_anthropic(settings, report))
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
    text = "check settings, config, Redis, Slack, Anthropic and MCP tokens; print what to fix"
    p = sub.add_parser("doctor", help=text, description=text)
    p.set_defaults(func=cmd_doctor)
