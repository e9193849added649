"""`support-agent chaos takeover|drop|redis`: faults mid-turn, then every answer checked in Slack.

Runs on 127.0.0.1 only: one Redis server, the Slack and Managed Agents emulators, the web role and
two worker roles as separate processes, all in a temporary folder. Seeded agent turns stream long
messages, run tools, wait on approvals and rotate their streams (rotation shortened to
`--rotate-after` seconds); at seeded random moments mid-turn the harness

  takeover  SIGKILLs the worker holding the ticket's lease (and starts a new worker),
  drop      cuts the session's event stream (some drops followed by a slow history listing),
  redis     stops or crashes the Redis server and starts it again,

then lets every turn end and compares, character by character, what the agent said (the
emulator's record) with what the Slack emulator finally shows in each thread. Prints one JSON
line of figures; exit status 1 when a guarantee is broken (characters lost or shown twice, a tool
task shown twice, missing or left in progress, order violated, a turn that never ended).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

MODES = {
    "takeover": ("--kills", "kill points: SIGKILLs of the lease holder"),
    "drop": ("--drops", "stream drops"),
    "redis": ("--restarts", "Redis restarts"),
}


def cmd_chaos(args: argparse.Namespace) -> int:
    from app.chaos.figures import broken
    from app.chaos.runner import RunOptions, chaos_run

    options = RunOptions(
        mode=args.mode, faults=[args.mode] * args.count, seed=args.seed, concurrency=args.tickets,
        rotate_after=args.rotate_after, keep=Path(args.keep) if args.keep else None,
    )
    figures = asyncio.run(chaos_run(options))
    print(json.dumps(figures, separators=(",", ":")))
    failed = broken(figures)
    if failed:
        print(f"chaos: guarantees broken: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("chaos", help="kill, drop and restart mid-turn; check every answer in Slack; one JSON line",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = p.add_subparsers(dest="mode", metavar="MODE", required=True)
    for mode, (flag, what) in MODES.items():
        m = modes.add_parser(mode, help=f"{what} mid-turn")
        m.add_argument(flag, dest="count", type=int, default=20, help=f"how many {what} (default 20)")
        m.add_argument("--seed", type=int, default=0, help="the seed of the turns and the fault moments (default 0)")
        m.add_argument("--tickets", type=int, default=3, help="tickets in progress at once (default 3)")
        m.add_argument("--rotate-after", type=float, default=3.0,
                       help="the renderer's stream rotation in seconds for the run (default 3)")
        m.add_argument("--keep", metavar="DIR", help="keep the run's folder (process logs, Redis data) in DIR")
        m.set_defaults(func=cmd_chaos)
