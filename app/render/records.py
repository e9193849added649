"""What Slack shows of a ticket's current turn, recorded in Redis around every Slack write.

Before a write the delivery records its intent (which message, what it adds); after it, the
outcome (the turn's messages as Slack now shows them). Whoever renders the ticket next (after
a takeover, a hand-off, a reconnect) reads the record back: it learns which messages the turn
has, what text and tasks each shows, and whether a write's outcome is unknown. It then sends
only the difference, into the same messages.

A copy is kept in memory too: after a Redis restart that lost the last writes (an AOF with
`appendfsync everysec`), the process that made them still knows.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError

from app.render.layout import Part, Task
from app.render.turn import SlackMessage, Turn

log = logging.getLogger(__name__)

# Slack ends a stream within minutes and a turn within a day; a record outlives both.
TTL_SECONDS = 2 * 86400
MEMORY_LIMIT = 10_000


class TaskRecord(BaseModel):
    id: str
    title: str
    status: str
    kind: str = "tool"
    details: str | None = None
    output: str | None = None

    def task(self) -> Task:
        return Task(self.id, self.title, self.status, self.kind, self.details, self.output)


class MessageRecord(BaseModel):
    ts: str
    mode: str
    closed: bool = False
    full: bool = False
    has_plan: bool = False
    streamed: bool = False
    final: bool = False  # it carries a turn's end (its blocks are not kept: a rewrite drops them)
    parts: list[tuple[str | None, int, str]] = Field(default_factory=list)
    task_ids: list[str] = Field(default_factory=list)

    def message(self) -> SlackMessage:
        return SlackMessage(
            self.ts, self.mode, time.monotonic(), [Part(*p) for p in self.parts], list(self.task_ids),
            closed=self.closed, full=self.full, has_plan=self.has_plan,
            final_blocks=[] if self.final else None, streamed=self.streamed,
        )


class Intent(BaseModel):
    """A write whose outcome is not recorded yet: `ts` None for a new message."""

    method: str
    ts: str | None = None
    at: float = 0.0  # wall-clock seconds, to find a message it may have created
    parts: list[tuple[str | None, int, str]] = Field(default_factory=list)
    task_ids: list[str] = Field(default_factory=list)


class TurnRecord(BaseModel):
    messages: list[MessageRecord] = Field(default_factory=list)
    tasks: list[TaskRecord] = Field(default_factory=list)
    intent: Intent | None = None
    controls_ts: str | None = None


def snapshot(turn: Turn, intent: Intent | None = None) -> TurnRecord:
    ids = {t for m in turn.messages for t in m.task_ids}
    if intent is not None:
        ids.update(intent.task_ids)
    tasks = [turn.layout.tasks[t] for t in ids if t in turn.layout.tasks]
    return TurnRecord(
        messages=[
            MessageRecord(
                ts=m.ts, mode=m.mode, closed=m.closed, full=m.full, has_plan=m.has_plan,
                streamed=m.streamed, final=m.final_blocks is not None,
                parts=[(p.mid, p.offset, p.text) for p in m.parts], task_ids=list(m.task_ids),
            )
            for m in turn.messages
        ],
        tasks=[
            TaskRecord(id=t.id, title=t.title, status=t.status, kind=t.kind, details=t.details, output=t.output)
            for t in tasks
        ],
        intent=intent,
        controls_ts=turn.controls_ts or None,
    )


def intent_for(method: str, msg: SlackMessage | None, parts: list[Part], task_ids: list[str]) -> Intent:
    return Intent(
        method=method, ts=msg.ts if msg is not None else None, at=time.time(),
        parts=[(p.mid, p.offset, p.text) for p in parts], task_ids=list(task_ids),
    )


class ShownRecords:
    """The records of every ticket this process renders (Redis, with a copy in memory)."""

    def __init__(self, redis: aioredis.Redis | None, key_prefix: str = "render") -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self._memory: dict[str, str] = {}

    def _key(self, ticket_id: str) -> str:
        return f"{self.key_prefix}:shown:{ticket_id}"

    async def load(self, ticket_id: str) -> TurnRecord | None:
        raw: Any = None
        if self.redis is not None:
            try:
                raw = await self.redis.get(self._key(ticket_id))
            except RedisError:
                log.warning("render record unreadable", extra={"ticket": ticket_id})
        if raw is None:
            raw = self._memory.get(ticket_id)
        if raw is None:
            return None
        try:
            return TurnRecord.model_validate_json(raw)
        except ValidationError:
            log.warning("render record malformed; ignored", extra={"ticket": ticket_id})
            return None

    async def save(self, ticket_id: str, record: TurnRecord) -> None:
        data = record.model_dump_json()
        self._memory.pop(ticket_id, None)
        self._memory[ticket_id] = data
        while len(self._memory) > MEMORY_LIMIT:
            self._memory.pop(next(iter(self._memory)))
        if self.redis is None:
            return
        try:
            await self.redis.set(self._key(ticket_id), data, ex=TTL_SECONDS)
        except RedisError:
            log.warning("render record not saved", extra={"ticket": ticket_id})

    def forget(self, ticket_id: str) -> None:
        """Drop the memory copy only (the ticket went to another worker: its record is theirs)."""
        self._memory.pop(ticket_id, None)

    async def clear(self, ticket_id: str) -> None:
        self._memory.pop(ticket_id, None)
        if self.redis is None:
            return
        try:
            await self.redis.delete(self._key(ticket_id))
        except RedisError:
            log.warning("render record not cleared", extra={"ticket": ticket_id})
