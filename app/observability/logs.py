"""Structured JSON logs, one object per line, scrubbed of secrets before they are written."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

from app.observability.scrub import Scrubber

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line: time, level, logger, event/message and context."""

    def __init__(self, scrubber: Scrubber) -> None:
        super().__init__()
        self.scrubber = scrubber

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(self.scrubber.data(entry), default=str, ensure_ascii=False)


def configure_logging(
    scrubber: Scrubber, level: str = "INFO", stream: TextIO | None = None
) -> logging.Handler:
    """Send all logs through one scrubbing JSON handler on the root logger."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(scrubber))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Client libraries log request bodies at DEBUG: at most INFO for them whatever the app level,
    # and never below the app's level (a one-shot command at WARNING prints no request lines).
    floor = max(logging.INFO, root.level)
    for noisy in ("anthropic", "httpx2", "httpcore2", "slack_sdk", "slack_bolt", "mcp", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(floor)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    return handler
