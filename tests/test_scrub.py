"""Secrets never leave the process: logs and Sentry events are scrubbed."""

from __future__ import annotations

import io
import json
import logging

import sentry_sdk

from app.observability.logs import configure_logging
from app.observability.scrub import REDACTED, Scrubber
from app.observability.sentry import init_sentry

CANARY = "canary-secret-9f8e7d6c5b4a"


def test_known_values_and_token_shapes_are_redacted() -> None:
    scrubber = Scrubber([CANARY])
    text = f"token {CANARY} and xoxb-123-456-abc and sk-ant-api03-xyz and Bearer abcdefghijkl"
    cleaned = scrubber.text(text)
    assert CANARY not in cleaned
    assert "xoxb-" not in cleaned and "sk-ant-" not in cleaned and "abcdefghijkl" not in cleaned


def test_secret_keys_are_redacted_but_token_counts_kept() -> None:
    scrubber = Scrubber()
    data = scrubber.data({"api_key": "plain", "headers": {"Authorization": "x"}, "input_tokens": 12})
    assert data == {"api_key": REDACTED, "headers": {"Authorization": REDACTED}, "input_tokens": 12}


def test_log_lines_are_json_and_scrubbed() -> None:
    stream = io.StringIO()
    handler = configure_logging(Scrubber([CANARY]), "INFO", stream=stream)
    try:
        logging.getLogger("test").info("sending %s", CANARY, extra={"ticket": "T1-1", "session": "s1"})
        try:
            raise RuntimeError(f"boom {CANARY}")
        except RuntimeError:
            logging.getLogger("test").exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["ticket"] == "T1-1" and lines[0]["session"] == "s1"
    assert CANARY not in stream.getvalue()


def test_sentry_events_are_scrubbed() -> None:
    events: list[dict] = []

    class Capture(sentry_sdk.transport.Transport):
        def capture_envelope(self, envelope):  # type: ignore[no-untyped-def]
            for item in envelope.items:
                if item.payload.json:
                    events.append(item.payload.json)

    assert init_sentry("https://public@sentry.example.invalid/1", Scrubber([CANARY]), transport=Capture)
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_extra("note", f"value {CANARY}")
            scope.set_tag("bot_token", CANARY)
            sentry_sdk.add_breadcrumb(message=f"sent {CANARY}")
            try:
                raise ValueError(f"failed with {CANARY}")
            except ValueError as exc:
                sentry_sdk.capture_exception(exc)
        sentry_sdk.flush()
    finally:
        sentry_sdk.init(dsn=None)
    assert events, "the test transport captured nothing"
    assert "failed with" in json.dumps(events)
    assert CANARY not in json.dumps(events)
