"""`support-agent fuzz --cases N --seed S`: fuzz the web role, print one JSON line of figures.

Runs the real web role on 127.0.0.1 against the Slack and Managed Agents emulators and an
embedded Redis in a temporary folder; touches nothing outside this machine. Needs the dev
extras (Hypothesis). Exit status 1 when any figure that must be 0 is not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

MUST_BE_ZERO = (
    "status_5xx", "rejected_not_4xx", "crashes", "hung_connections", "sentry_events_rejected", "error_logs_rejected",
    "tracebacks_rejected", "bodies_in_logs", "redis_keys_from_rejected", "memory_unbounded",
)


async def fuzz(cases: int, seed: int, redis_url: str | None = None) -> dict[str, object]:
    from app.fuzz.cases import generate
    from app.fuzz.runner import Fuzzer

    drawn = await asyncio.to_thread(generate, cases, seed)
    with tempfile.TemporaryDirectory(prefix="support-agent-fuzz-") as tmp:
        embedded = None
        if redis_url is None:
            from app.redis_conn import EmbeddedRedis

            embedded = EmbeddedRedis(Path(tmp) / "redis")
            redis_url = embedded.url
        try:
            figures = await Fuzzer(redis_url, Path(tmp)).run(drawn)
        finally:
            if embedded is not None:
                embedded.close()
    return {"seed": seed, **figures.as_dict()}


def cmd_fuzz(args: argparse.Namespace) -> int:
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        print("support-agent fuzz needs the dev extras: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    result = asyncio.run(fuzz(args.cases, args.seed))
    print(json.dumps(result, sort_keys=False))
    return 1 if any(result.get(name) for name in MUST_BE_ZERO) else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fuzz", help="fuzz the web role's edges; prints one JSON line of figures",
                       description=__doc__)
    p.add_argument("--cases", type=int, default=2000, help="how many requests (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="the seed the cases are drawn from (default 0)")
    p.set_defaults(func=cmd_fuzz)
