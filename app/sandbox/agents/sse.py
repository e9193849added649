"""The emulator's Server-Sent Events: one frame per event, pings while idle, and the pump that
turns a subscriber's queue into a response body (the session stream and each thread's stream)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from app.sandbox.agents.session import StreamAborted, Subscriber

PING_FRAME = b'event: ping\ndata: {"type":"ping"}\n\n'


def sse_frame(event: dict[str, Any]) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()


async def sse_body(sub: Subscriber, ping_interval: float, release: Callable[[], None]) -> AsyncIterator[bytes]:
    """Frames from `sub` until it is closed ("abort" drops the connection, as a fault), a ping
    whenever nothing came for `ping_interval`; `release` unsubscribes however it ends."""
    try:
        while True:
            try:
                kind, payload = await asyncio.wait_for(sub.queue.get(), ping_interval)
            except TimeoutError:
                yield PING_FRAME
                continue
            if kind == "close":
                if payload == "abort":
                    raise StreamAborted("stream dropped by the emulator")
                return
            yield sse_frame(payload)
    finally:
        release()
