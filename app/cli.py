"""`support-agent`: the command line. Each subcommand is a thin shell over the app."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Settings (pydantic) and the SDKs are imported where a command needs them: `--help` and the
# listing of commands stay fast.
if TYPE_CHECKING:
    from app.config.model import AppConfig
    from app.config.settings import Settings

EXIT_USAGE = 2

Command = Callable[[argparse.Namespace], int]


# A running sandbox (`support-agent sandbox`) writes how to reach it here, under its data folder;
# `costs` and `trace` read it (see `cli_settings`).
SANDBOX_DIR = Path("var/sandbox")
SANDBOX_CONNECTION = "connection.env"
SANDBOX_LOCK = "sandbox.lock"
# Variables of the connection file -> Settings fields.
SANDBOX_VARS = {
    "REDIS_URL": "redis_url",
    "SLACK_API_URL": "slack_api_url",
    "SLACK_BOT_TOKEN": "slack_bot_token",
    "ANTHROPIC_BASE_URL": "anthropic_base_url",
    "ANTHROPIC_API_KEY": "anthropic_api_key",
    "SUPPORT_AGENT_CONFIG": "config_path",
}


def fail(message: str, code: int = 1) -> int:
    print(message, file=sys.stderr)
    return code


def _boot(
    need_slack: bool = True, need_anthropic: bool = True, receives_slack: bool | None = None,
    log_level: str | None = None,
) -> tuple[Settings, AppConfig]:
    """Settings, config, logging and Sentry for a command. One-shot commands pass
    `log_level="WARNING"`: their output is what they print, not INFO log lines (LOG_LEVEL=DEBUG
    still shows everything)."""
    # Imported here: `--help` and light commands should not pay for the SDKs.
    from app.config.model import load_config
    from app.config.settings import SettingsError, describe_missing, load_settings
    from app.observability.logs import configure_logging
    from app.observability.sentry import init_sentry
    from app.runtime import make_scrubber

    settings = load_settings()
    missing = settings.missing(need_slack=need_slack, need_anthropic=need_anthropic, receives_slack=receives_slack)
    if missing:
        raise SettingsError(describe_missing(missing))
    config = load_config(settings.config_path)
    scrubber = make_scrubber(settings, config)
    level = settings.log_level
    if log_level is not None and level.upper() != "DEBUG":
        level = log_level
    configure_logging(scrubber, level)
    init_sentry(
        settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None,
        scrubber,
        settings.sentry_environment,
    )
    return settings, config


def running_sandbox(data_dir: Path) -> dict[str, str] | None:
    """The connection settings of the sandbox running with `data_dir`, or None when none runs
    there (no file, or a file left by a sandbox that died: nobody holds its lock)."""
    import fcntl

    path, lock_path = data_dir / SANDBOX_CONNECTION, data_dir / SANDBOX_LOCK
    if not path.is_file() or not lock_path.is_file():
        return None
    with open(lock_path, encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            pass  # held: the sandbox is running
        else:
            return None
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#") and name in SANDBOX_VARS:
            values[name] = value.strip()
    return values


def add_sandbox_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sandbox", metavar="DIR", nargs="?", const=str(SANDBOX_DIR),
        help=f"read the sandbox running with data folder DIR (default {SANDBOX_DIR}); without REDIS_URL "
             f"a sandbox running in {SANDBOX_DIR} is read anyway",
    )


def cli_settings(sandbox: str | None = None) -> Settings:
    """Settings for a command that reads what the bot recorded (`costs`, `trace`).

    With `--sandbox [DIR]`, or with no REDIS_URL set while a sandbox runs in `var/sandbox`, the
    sandbox's own Redis, emulated Slack and (demo mode) Managed Agents emulator: what a newcomer
    who just tried the sandbox wants to look at. Says so on stderr."""
    from app.config.settings import SettingsError, load_settings

    settings = load_settings()
    if sandbox is None and settings.redis_url is not None:
        return settings
    data_dir = Path(sandbox) if sandbox is not None else SANDBOX_DIR
    values = running_sandbox(data_dir)
    if values is None:
        if sandbox is not None:
            raise SettingsError(f"support-agent: no sandbox is running with data folder {data_dir} "
                                "(start one with `support-agent sandbox`)")
        return settings
    print(f"support-agent: reading the sandbox running in {data_dir} (set REDIS_URL to read another Redis)",
          file=sys.stderr)
    return load_settings(**{SANDBOX_VARS[name]: value for name, value in values.items()})


def _serve(web: bool, worker: bool) -> Command:
    def command(args: argparse.Namespace) -> int:
        import asyncio

        from app.runtime import build_services
        from app.service import serve

        # Both roles post to Slack and call Anthropic (the web role's buttons stop, resolve and
        # approve); only the web role receives Slack's signed requests.
        settings, config = _boot(need_slack=True, need_anthropic=True, receives_slack=web)
        if getattr(args, "port", None):
            settings.port = args.port
        if getattr(args, "host", None):
            settings.host = args.host
        listen_socket = None
        if getattr(args, "fd", None) is not None:
            import socket

            # A socket the parent bound and holds: no window between choosing a free port and
            # binding it in which another process can take it (test and benchmark harnesses).
            listen_socket = socket.socket(fileno=args.fd)
        services = build_services(settings, config)
        # serve() says 0 only after SIGTERM/SIGINT; any other end of a role is a failure.
        return asyncio.run(serve(services, web=web, worker=worker, listen_socket=listen_socket))

    return command


def cmd_check_config(args: argparse.Namespace) -> int:
    from app.config.model import load_config
    from app.config.settings import load_settings

    settings = load_settings()
    path = Path(args.path) if args.path else settings.config_path
    config = load_config(path)
    print(f"{path}: ok ({len(config.environments)} environments: {', '.join(config.environments)})")
    return 0


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `argv`, only the feature modules its command needs are imported
    (the others' commands are listed by name and help, see `app.commands`)."""
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
            p.add_argument("--fd", type=int, help="listen on this inherited, already bound socket instead")

    p = add("check-config", "validate the agent config file", cmd_check_config)
    p.add_argument("path", nargs="?", help="config file (default: SUPPORT_AGENT_CONFIG or support-agent.yml)")
    from app import commands

    def stub(name: str, help_text: str) -> None:
        add(name, help_text, lambda _args: EXIT_USAGE)

    commands.register_commands(sub, None if argv is None else chosen_command(argv), stub)
    return parser


def chosen_command(argv: Sequence[str]) -> str:
    """The command `argv` runs: its first word (the top level has no options but -h)."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = _known_problem(exc)
        if message is None:
            raise
        return fail(message)


def _known_problem(exc: BaseException) -> str | None:
    """One line for a problem the operator fixes (settings, config, Redis), else None."""
    from app.config.settings import SettingsError
    from app.config.yaml_lines import ConfigError

    if isinstance(exc, SettingsError):
        return str(exc)
    if isinstance(exc, ConfigError):
        return f"support-agent: {exc}"
    return _redis_problem(exc)


def _redis_problem(exc: BaseException) -> str | None:
    """One line for an unreachable or refused Redis, instead of a traceback."""
    from redis.exceptions import RedisError

    from app.config.settings import SettingsError, load_settings
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
