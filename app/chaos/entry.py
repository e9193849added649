"""`python -m app.chaos.entry ROLE [ARGS]`: the app's own `support-agent ROLE`, for the harness.

The one difference: with `CHAOS_ROTATE_AFTER` set, the renderer's stream rotation (default
270 s, before Slack ends a stream at about 5 minutes) defaults to that many seconds, so a turn of
a few seconds rotates its stream and a fault can land during a rotation. Nothing of the app is
changed on disk; the role runs exactly as `support-agent ROLE` otherwise.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
from typing import Any


def shorten_rotation(seconds: float) -> bool:
    """Make `rotate_after` default to `seconds` in the renderer. False if it has no such option."""
    try:
        from app.render import stream
    except ImportError:
        return False
    cls = getattr(stream, "StreamRenderer", None)
    if cls is None or "rotate_after" not in inspect.signature(cls.__init__).parameters:
        return False
    original = cls.__init__

    @functools.wraps(original)
    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rotate_after", seconds)
        original(self, *args, **kwargs)

    cls.__init__ = init
    return True


def main(argv: list[str] | None = None) -> int:
    rotate = os.environ.get("CHAOS_ROTATE_AFTER")
    if rotate and not shorten_rotation(float(rotate)):
        print("chaos: the renderer has no rotate_after option; streams rotate at its default", file=sys.stderr)
    from app.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
