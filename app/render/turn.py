"""The state one rendered turn shares between its layout and its delivery."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from app.render.layout import Layout, Part
from app.tickets.model import Ticket

STREAM, UPDATE = "stream", "update"


@dataclass
class RenderStats:
    calls: Counter[str] = field(default_factory=Counter)
    rate_limited: int = 0
    streams: int = 0
    rotations: int = 0
    expired: int = 0
    fallbacks: int = 0
    adopted: int = 0
    congested: int = 0
    fixups: int = 0
    diverged: int = 0
    dropped_chars: int = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


@dataclass
class SlackMessage:
    """One of the turn's Slack messages and what it shows (as far as we know)."""

    ts: str
    mode: str
    started: float
    parts: list[Part] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    closed: bool = False
    full: bool = False
    has_plan: bool = False
    final_blocks: list[dict[str, Any]] | None = None
    streamed: bool = False  # started as a stream (its content is chunks, not blocks)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts)


class Turn:
    def __init__(self, ticket: Ticket, recipient: str, streaming: bool, layout: Layout) -> None:
        self.ticket = ticket
        self.recipient = recipient
        self.streaming = streaming
        self.layout = layout
        self.messages: list[SlackMessage] = []
        # Messages (ts) to rewrite in place: adopted ones, or closed ones whose tasks moved on.
        self.stale: set[str] = set()
        self.events: set[str] = set()  # ids of the events this turn folded in
        self.wake = asyncio.Event()
        self.ending = asyncio.Event()
        self.done = asyncio.Event()
        self.stop_reason: str | None = None
        self.status_wanted = False
        self.status_retry_at = 0.0
        self.status_set_at: float | None = None
        self.status_dirty = False
        self.last_flush = 0.0
        self.last_event = time.monotonic()
        self.failures = 0
        self.dead = False
        self.started = time.monotonic()
        self.controls_ts: str | None = None  # the message with Stop while the turn works
        self.plain = False  # Slack refused our blocks or chunks: text-only messages from now on
        self.lost = False  # our lease lapsed: another worker has the ticket
        self.finished = False
        self.runner: asyncio.Task[None] | None = None

    @property
    def current(self) -> SlackMessage | None:
        if self.messages and not self.messages[-1].closed:
            return self.messages[-1]
        return None

    def go_plain(self) -> None:
        """Slack refused our blocks or chunks: text-only, unstreamed messages from now on."""
        self.plain = True
        self.streaming = False

    @property
    def outbox(self) -> list[Any]:
        return self.layout.outbox
