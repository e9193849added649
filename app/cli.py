"""`support-agent`: the command line. Each subcommand is a thin shell over the app."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from app.config.settings import Settings, SettingsError, describe_missing, load_settings
from app.config.yaml_lines import ConfigError

if TYPE_CHECKING:
    from app.config.model import AppConfig

EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def _boot(
    need_slack: bool = True, need_anthropic: bool = True, receives_slack: bool | None = None
) -> tuple[Settings, AppConfig]:
    # Imported here: `--help` and light commands should not pay for the SDKs.
    from app.config.model import load_config
    from app.observability.logs import configure_logging
    from app.observability.sentry import init_sentry
    from app.runtime import make_scrubber

    settings = load_settings()
    missing = settings.missing(need_slack=need_slack, need_anthropic=need_anthropic, receives_slack=receives_slack)
    if missing:
        raise SettingsError(describe_missing(missing))
    config = load_config(settings.config_path)
    scrubber = make_scrubber(settings, config)
    configure_logging(scrubber, settings.log_level)
    init_sentry(
        settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None,
        scrubber,
        settings.sentry_environment,
    )
    return settings, config


def _serve(web: bool, worker: bool) -> Command:
    def command(args: argparse.Namespace) -> int:
        from app.runtime import build_services
        from app.service import serve

        # Both roles post to Slack and call Anthropic (the web role's buttons stop, resolve and
        # approve); only the web role receives Slack's signed requests.
        settings, config = _boot(need_slack=True, need_anthropic=True, receives_slack=web)
        if getattr(args, "port", None):
            settings.port = args.port
        if getattr(args, "host", None):
            settings.host = args.host
        services = build_services(settings, config)
        # serve() says 0 only after SIGTERM/SIGINT; any other end of a role is a failure.
        return asyncio.run(serve(services, web=web, worker=worker))

    return command


def cmd_check_config(args: argparse.Namespace) -> int:
    from app.config.model import load_config

    settings = load_settings()
    path = Path(args.path) if args.path else settings.config_path
    config = load_config(path)
    print(f"{path}: ok ({len(config.environments)} environments: {', '.join(config.environments)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="support-agent",
        description="Slack support tickets worked by Claude Managed Agents sessions.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    for name, text, web, worker in (
        ("run", "run web + worker in one process (Socket Mode when SLACK_APP_TOKEN is set)", True, True),
        ("web", "run the web role: Slack events, MCP servers, webhooks", True, False),
        ("worker", "run the worker role: session followers", False, True),
    ):
        p = add(name, text, _serve(web, worker))
        if web:
            p.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
            p.add_argument("--port", type=int, help="port to listen on (default 3000)")

    p = add("check-config", "validate the agent config file", cmd_check_config)
    p.add_argument("path", nargs="?", help="config file (default: SUPPORT_AGENT_CONFIG or support-agent.yml)")
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    """Subcommands contributed by other modules (provision, costs, trace, ...)."""
    from app import commands

    return commands.registrars()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        return fail(str(exc))
    except ConfigError as exc:
        return fail(f"support-agent: {exc}")
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _redis_problem(exc)
        if message is None:
            raise
        return fail(message)


def _redis_problem(exc: BaseException) -> str | None:
    """One line for an unreachable or refused Redis, instead of a traceback."""
    from redis.exceptions import RedisError

    from app.redis_conn import safe_url
    from app.redis_health import RedisUnavailable

    if isinstance(exc, RedisUnavailable):
        return f"support-agent: {exc}"
    # Only Redis's own errors: an OSError from elsewhere (a file, a socket) is not Redis's.
    if not isinstance(exc, RedisError):
        return None
    try:
        url = load_settings().redis_url
        where = f" at {safe_url(url.get_secret_value())}" if url else " (embedded)"
    except SettingsError:
        where = ""
    return f"support-agent: cannot use Redis{where}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
