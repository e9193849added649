"""`support-agent sandbox [--port P]`: try the bot with no Slack workspace (see `local_sandbox`)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

DEFAULT_PORT = 8765


def cmd_sandbox(args: argparse.Namespace) -> int:
    from app.config.settings import load_settings
    from app.sandbox.page.local import LocalSandbox

    settings = load_settings()
    real = not args.demo_agent and settings.anthropic_api_key is not None
    if args.public_url and not real:
        print("support-agent sandbox: --public-url only matters with the real agent (ANTHROPIC_API_KEY)",
              file=sys.stderr)
    sandbox = LocalSandbox(
        settings,
        port=args.port,
        data_dir=Path(args.data_dir),
        real_agent=real,
        public_url=args.public_url if real else None,
        app_port=args.app_port,
        log_level=args.log_level,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    from app.config.yaml_lines import ConfigError
    from app.sandbox.page.local import SandboxBusy

    try:
        sandbox.start()
    except ConfigError as exc:
        print(f"support-agent sandbox: {exc}", file=sys.stderr)
        return 2
    except SandboxBusy as exc:
        print(f"support-agent sandbox: cannot start: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"support-agent sandbox: cannot start: {exc} (is port {args.port} in use? try --port)",
              file=sys.stderr)
        return 1
    info = sandbox.info
    assert info is not None
    print("support-agent sandbox: Slack is emulated on this machine.", flush=True)
    print(f"  Agent: {info.agent_note}", flush=True)
    print(f"  {info.mcp_note}", flush=True)
    print(f"  Open {sandbox.url} in your browser.", flush=True)
    print(f"  Logs: {sandbox.log_path} · Ctrl-C to stop.", flush=True)
    print(f"  From another terminal: {_reads_it(Path(args.data_dir))} read this sandbox "
          f"(connection settings in {sandbox.connection_path}).", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        print("support-agent sandbox: stopping.", flush=True)
        sandbox.stop()
    return 0


def _reads_it(data_dir: Path) -> str:
    """The commands that read this sandbox, as the user would type them here."""
    from app.cli import SANDBOX_DIR

    flag = "" if data_dir.resolve() == SANDBOX_DIR.resolve() else f" --sandbox {data_dir}"
    return f"`support-agent costs{flag}` and `support-agent trace{flag} '#1'`"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "try the bot locally: emulated Slack in a web page, the app, its MCP servers"
    p = sub.add_parser("sandbox", help=text, description=(
        f"{text}. Without ANTHROPIC_API_KEY a scripted demo agent answers; with it, the real "
        "Managed Agents API (only Slack is emulated)."))
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port of the sandbox page (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", default="var/sandbox", help="embedded Redis and logs (default var/sandbox; wiped)")
    p.add_argument("--demo-agent", action="store_true", help="use the scripted demo agent even with ANTHROPIC_API_KEY")
    p.add_argument("--public-url", help="real agent only: a public URL (tunnel) to the app, so the cloud reaches "
                   "our MCP servers at <url>/mcp/<name>; use with --app-port")
    p.add_argument("--app-port", type=int, default=0, help="port of the app itself (default: any free port)")
    p.add_argument("--log-level", default="INFO", help="level of the app's logs in <data-dir>/sandbox.log")
    p.set_defaults(func=cmd_sandbox)
