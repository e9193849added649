"""Extra CLI subcommands contributed by feature modules (provision, costs, trace, ...).

Each feature exposes `register(subparsers)`; list its module in FEATURE_MODULES.

So that `support-agent --help` (and every command) does not import every feature and the SDKs
they use, COMMANDS says which commands each module adds, with their one-line help: the parser
lists those without importing the module, and imports only the modules of the command being
run. A module in FEATURE_MODULES with no COMMANDS entry still works: it is imported whenever
the parser is built, as before (only slower). `tests/test_first_hour_cli.py` checks COMMANDS
against what each module's `register` really adds.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable, Iterable

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

FEATURE_MODULES: tuple[str, ...] = (
    "app.cost.cli",
    "mcp_servers.cli",
    "app.bench.stream",
    "app.bench.intake",
    "app.bench.workers",
    "app.bench.takeover",
    "app.provision",
    "app.trace.cli",
    "app.retention",
    "app.sandbox.page.cli",
    "app.doctor",
    "app.fuzz.cli",
    "app.chaos.cli",
)

# module -> {command: one-line help}. Several modules may add to one command (`bench`).
COMMANDS: dict[str, dict[str, str]] = {
    "app.cost.cli": {
        "costs": "report ticket costs from the ledger",
        "cost": "cost tools (quote)",
    },
    "mcp_servers.cli": {
        "mcp": "our MCP servers (knowledge_base, ticket_history): serve one standalone, mint tokens",
    },
    "app.bench.stream": {"bench": "run a benchmark against the emulators"},
    "app.bench.intake": {"bench": "run a benchmark against the emulators"},
    "app.bench.workers": {"bench": "run a benchmark against the emulators"},
    "app.bench.takeover": {"bench": "run a benchmark against the emulators"},
    "app.provision": {
        "provision": "make Managed Agents match the config: agents, environments, vaults and credentials",
    },
    "app.trace.cli": {"trace": "print a ticket's timeline (messages, tool calls, approvals, errors, costs)"},
    "app.retention": {"retention": "delete sessions of tickets resolved longer ago than their retention period"},
    "app.sandbox.page.cli": {"sandbox": "try the bot locally: emulated Slack in a web page, the app, its MCP servers"},
    "app.doctor": {"doctor": "check settings, config, Redis, Slack (token, scopes, request URLs), Anthropic (key, "
                             "provisioned agents), MCP servers (reachable, token); print what to fix"},
    "app.fuzz.cli": {"fuzz": "fuzz the web role's edges; prints one JSON line of figures"},
    "app.chaos.cli": {"chaos": "kill, drop and restart mid-turn; check every answer in Slack; one JSON line"},
}


def registrars() -> list[Registrar]:
    """Every feature module's `register` (imports them all)."""
    return [importlib.import_module(name).register for name in FEATURE_MODULES]


def modules_for(command: str | None) -> list[str]:
    """The modules to import to build a parser that runs `command` (None: all of them)."""
    if command is None:
        return list(FEATURE_MODULES)
    return [m for m in FEATURE_MODULES if m not in COMMANDS or command in COMMANDS[m]]


def register_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None,
    stub: Callable[[str, str], None],
) -> None:
    """Register the modules `command` needs; every other indexed command is only listed
    (`stub(name, help)`), in FEATURE_MODULES order."""
    wanted = set(modules_for(command))
    listed: set[str] = set()
    for module in FEATURE_MODULES:
        if module in wanted:
            importlib.import_module(module).register(sub)
            listed.update(sub.choices)
            continue
        for name, text in COMMANDS[module].items():
            if name not in listed and name not in sub.choices:
                stub(name, text)
                listed.add(name)


def indexed_commands() -> Iterable[tuple[str, str, str]]:
    """(module, command, help) for every indexed command."""
    for module, commands in COMMANDS.items():
        for name, text in commands.items():
            yield module, name, text
