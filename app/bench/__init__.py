"""Benchmarks: `support-agent bench <name>`. Each module adds its subcommand under `bench`."""

from __future__ import annotations

import argparse


def bench_subparsers(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The `bench` command's own subcommands, creating `bench` if no module did yet."""
    parser = subparsers.choices.get("bench")
    if parser is None:
        parser = subparsers.add_parser(
            "bench", help="run a benchmark against the emulators", description="Benchmarks."
        )
        parser.set_defaults(func=lambda _args, p=parser: (p.print_help(), 2)[1])
        return parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return parser.add_subparsers(dest="bench", metavar="BENCHMARK")
