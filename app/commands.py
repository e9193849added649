"""Extra CLI subcommands contributed by feature modules (provision, costs, trace, ...).

Each feature exposes `register(subparsers)`; list its module here. Imports happen only when
the CLI builds its parser, so the service roles do not pay for them.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]

FEATURE_MODULES: tuple[str, ...] = (
    "app.cost.cli",
    "mcp_servers.cli",
    "app.bench.stream",
    "app.provision",
    "app.trace.cli",
    "app.retention",
    "app.sandbox.cli",
    "app.doctor",
    "app.fuzz.cli",
    "app.chaos.cli",
)


def registrars() -> list[Registrar]:
    return [importlib.import_module(name).register for name in FEATURE_MODULES]
