"""`support-agent mcp ...`: run one of our MCP servers on its own, mint tokens.

    support-agent mcp serve knowledge_base --host 0.0.0.0 --port 8765 --docs docs/kb \
        --public-host mcp.example.com
    support-agent mcp serve ticket_history --port 8766        # Redis: REDIS_URL or embedded
    support-agent mcp new-token                               # value for MCP_TOKEN_*

The server answers at `http://HOST:PORT/mcp`. Tokens come from `MCP_TOKEN_INTERNAL` and
`MCP_TOKEN_CUSTOMERS`; extra allowed Host names from `--public-host` and `MCP_ALLOWED_HOSTS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

WILDCARD_BINDS = ("0.0.0.0", "::", "")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from mcp_servers.asgi import SERVER_NAMES

    text = "our MCP servers (knowledge_base, ticket_history): serve one standalone, mint tokens"
    parser = subparsers.add_parser("mcp", help=text, description=text)
    parser.set_defaults(func=lambda args: _usage(parser))
    actions = parser.add_subparsers(dest="mcp_action", metavar="ACTION")

    serve = actions.add_parser(
        "serve", help="serve one MCP server over streamable HTTP at /mcp",
        description="Serve one MCP server over streamable HTTP at http://HOST:PORT/mcp.",
    )
    serve.add_argument("name", choices=SERVER_NAMES, help="which server")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    serve.add_argument("--docs", type=Path, help="knowledge_base: docs folder (default KB_DOCS_DIR or docs/kb)")
    serve.add_argument(
        "--public-host", action="append", default=[], metavar="HOST",
        help="Host name (or URL) clients use to reach this server; repeatable. Loopback is always allowed.",
    )
    serve.set_defaults(func=cmd_serve)

    token = actions.add_parser("new-token", help="print a fresh random token for an MCP_TOKEN_* variable")
    token.set_defaults(func=cmd_new_token)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def cmd_new_token(args: argparse.Namespace) -> int:
    from mcp_servers.auth import mint_token

    print(mint_token())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.config.settings import load_settings
    from app.observability.logs import configure_logging
    from app.observability.sentry import init_sentry
    from app.redis_conn import EmbeddedRedis, redis_url_or_embedded
    from app.runtime import make_scrubber
    from mcp_servers.asgi import McpConfigError, allowed_hosts_from_env, build_mcp_asgi
    from mcp_servers.auth import TokenRegistry

    settings = load_settings()
    try:
        tokens = TokenRegistry.from_env()
    except ValueError as exc:
        print(f"support-agent mcp serve: {exc}", file=sys.stderr)
        return 2
    # Logging first: the MCP SDK installs its own (unscrubbed) handler if none is configured.
    scrubber = make_scrubber(settings)
    scrubber.add(*tokens.secrets())
    configure_logging(scrubber, settings.log_level)
    init_sentry(settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else None, scrubber,
                settings.sentry_environment)

    hosts = [*args.public_host, *allowed_hosts_from_env()]
    if args.host not in WILDCARD_BINDS:
        hosts.append(args.host)
    embedded: EmbeddedRedis | None = None
    redis_url: str | None = None
    try:
        if args.name == "ticket_history":
            configured = settings.redis_url.get_secret_value() if settings.redis_url else None
            redis_url, embedded = redis_url_or_embedded(configured, settings.redis_data_dir)
            scrubber.add(redis_url)
        app = build_mcp_asgi(args.name, tokens=tokens, docs_dir=args.docs, redis_url=redis_url,
                             allowed_hosts=hosts)
        log.info("mcp server listening", extra={"server": args.name, "url": f"http://{args.host}:{args.port}/mcp",
                                                "environments": tokens.environments})
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, lifespan="on")
    except McpConfigError as exc:
        print(f"support-agent mcp serve: {exc}", file=sys.stderr)
        return 2
    finally:
        if embedded is not None:
            embedded.close()
    return 0
