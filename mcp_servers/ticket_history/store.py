"""Resolved tickets kept for search, in Redis under `sa:history:`.

The bot calls `record_resolved_ticket(...)` when a ticket resolves (again on a re-resolve: the
record and its index entries are replaced). Layout:

    sa:history:ticket:<ticket_id>   JSON record (HistoryRecord)
    sa:history:word:<term>          SET of ticket ids whose question/summary/tags contain term
    sa:history:ref:<ref>            SET of ticket ids with that ref ("#42" is per workspace)
    sa:history:resolved             ZSET ticket id -> resolved_at (epoch seconds)
    sa:history:notes:<ticket_id>    LIST of JSON notes (newest last)

Search ranks tickets by the matched terms weighted by rarity (sum of log(1 + N/df)), newest
first on ties. This module needs only `redis`; the MCP server lives in `server.py`.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel, Field

PREFIX = "sa:history:"
RESOLVED_KEY = PREFIX + "resolved"
MAX_TEXT_CHARS = 20_000
MAX_NOTE_CHARS = 2_000
MAX_NOTES = 50
MAX_QUERY_TERMS = 24

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    """a an and are as at be but by can could do does did for from had has have how i if in into
    is it its me my no not of on or our so that the their them then there these they this to
    us was we were what when where which who why will with would you your""".split()
)


def ticket_key(ticket_id: str) -> str:
    return f"{PREFIX}ticket:{ticket_id}"


def word_key(term: str) -> str:
    return f"{PREFIX}word:{term}"


def ref_key(ref: str) -> str:
    return f"{PREFIX}ref:{normalize_ref(ref)}"


def notes_key(ticket_id: str) -> str:
    return f"{PREFIX}notes:{ticket_id}"


def normalize_ref(ref: str) -> str:
    return ref.strip().lstrip("#").strip().lower()


def _fold(word: str) -> str:
    """A very light plural folding, applied the same way to records and queries."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    """Distinct searchable terms of a text, in order of first appearance."""
    seen: dict[str, None] = {}
    for raw in _WORD.findall(text.lower()):
        if raw in STOPWORDS or (len(raw) < 2 and not raw.isdigit()):
            continue
        seen.setdefault(_fold(raw), None)
    return list(seen)


def _epoch(value: float | int | datetime | str) -> float:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return _epoch(parsed)
    return float(value)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class HistoryRecord(BaseModel):
    ticket_id: str
    ref: str
    question: str
    summary: str
    tags: list[str] = Field(default_factory=list)
    channel_id: str
    environment: str
    resolved_at: float = Field(description="Epoch seconds")

    @property
    def resolved_at_iso(self) -> str:
        return datetime.fromtimestamp(self.resolved_at, UTC).isoformat(timespec="seconds")

    def index_terms(self) -> list[str]:
        return list(dict.fromkeys([*terms(self.question), *terms(self.summary), *terms(" ".join(self.tags))]))


class HistoryNote(BaseModel):
    text: str
    at: float
    environment: str

    @property
    def at_iso(self) -> str:
        return datetime.fromtimestamp(self.at, UTC).isoformat(timespec="seconds")


class HistoryHit(BaseModel):
    record: HistoryRecord
    score: float
    matched: list[str]


class AmbiguousRef(Exception):
    def __init__(self, ref: str, ticket_ids: Sequence[str]) -> None:
        super().__init__(ref)
        self.ref = ref
        self.ticket_ids = list(ticket_ids)


class TicketHistory:
    """Reads and writes the history records; works with or without `decode_responses`."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def record(self, record: HistoryRecord) -> HistoryRecord:
        old_raw = await self.redis.get(ticket_key(record.ticket_id))
        old = HistoryRecord.model_validate_json(_text(old_raw)) if old_raw else None
        new_terms = record.index_terms()
        async with self.redis.pipeline(transaction=True) as pipe:
            if old is not None:
                for term in set(old.index_terms()) - set(new_terms):
                    pipe.srem(word_key(term), old.ticket_id)
                if normalize_ref(old.ref) != normalize_ref(record.ref):
                    pipe.srem(ref_key(old.ref), old.ticket_id)
            pipe.set(ticket_key(record.ticket_id), record.model_dump_json())
            for term in new_terms:
                pipe.sadd(word_key(term), record.ticket_id)
            pipe.sadd(ref_key(record.ref), record.ticket_id)
            pipe.zadd(RESOLVED_KEY, {record.ticket_id: record.resolved_at})
            await pipe.execute()
        return record

    async def _records(self, ticket_ids: Sequence[str]) -> dict[str, HistoryRecord]:
        if not ticket_ids:
            return {}
        raws = await self.redis.mget([ticket_key(t) for t in ticket_ids])
        return {
            tid: HistoryRecord.model_validate_json(_text(raw))
            for tid, raw in zip(ticket_ids, raws, strict=True)
            if raw
        }

    async def search(self, query: str, limit: int = 5) -> list[HistoryHit]:
        wanted = terms(query)[:MAX_QUERY_TERMS]
        if not wanted:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(RESOLVED_KEY)
            for term in wanted:
                pipe.smembers(word_key(term))
            results = await pipe.execute()
        total = max(1, int(results[0]))
        scores: dict[str, float] = {}
        matched: dict[str, list[str]] = {}
        for term, members in zip(wanted, results[1:], strict=True):
            ids = [_text(m) for m in members]
            if not ids:
                continue
            weight = math.log(1 + total / len(ids))
            for tid in ids:
                scores[tid] = scores.get(tid, 0.0) + weight
                matched.setdefault(tid, []).append(term)
        if not scores:
            return []
        # Rank on score, then recency; fetch a few extra in case some records have expired.
        candidates = sorted(scores, key=lambda t: -scores[t])[: max(limit * 4, limit + 10)]
        records = await self._records(candidates)
        hits = [HistoryHit(record=records[t], score=round(scores[t], 4), matched=matched[t])
                for t in candidates if t in records]
        hits.sort(key=lambda h: (-h.score, -h.record.resolved_at))
        return hits[:limit]

    async def get(self, ref_or_id: str) -> HistoryRecord | None:
        """By ticket id, or by ref (`#42` or `42`). Raises AmbiguousRef if a ref is shared."""
        ref_or_id = ref_or_id.strip()
        if not ref_or_id:
            return None
        by_id = await self._records([ref_or_id])
        if by_id:
            return by_id[ref_or_id]
        ids = sorted(_text(m) for m in await self.redis.smembers(ref_key(ref_or_id)))
        records = await self._records(ids)
        if len(records) > 1:
            raise AmbiguousRef(ref_or_id, sorted(records))
        return next(iter(records.values()), None)

    async def notes(self, ticket_id: str) -> list[HistoryNote]:
        raws = await self.redis.lrange(notes_key(ticket_id), 0, -1)
        return [HistoryNote.model_validate_json(_text(r)) for r in raws]

    async def add_note(self, ticket_id: str, text: str, environment: str) -> HistoryNote:
        note = HistoryNote(text=text[:MAX_NOTE_CHARS], at=time.time(), environment=environment)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(notes_key(ticket_id), note.model_dump_json())
            pipe.ltrim(notes_key(ticket_id), -MAX_NOTES, -1)
            await pipe.execute()
        return note


async def record_resolved_ticket(
    redis: aioredis.Redis,
    *,
    ticket_id: str,
    ref: str,
    question: str,
    summary: str,
    tags: Iterable[str],
    channel_id: str,
    environment: str,
    resolved_at: float | int | datetime | str,
) -> HistoryRecord:
    """Make a resolved ticket searchable by `ticket_history` (replaces an earlier record)."""
    record = HistoryRecord(
        ticket_id=ticket_id,
        ref=ref,
        question=question.strip()[:MAX_TEXT_CHARS],
        summary=summary.strip()[:MAX_TEXT_CHARS],
        tags=list(dict.fromkeys(t.strip().lower() for t in tags if t and t.strip())),
        channel_id=channel_id,
        environment=environment,
        resolved_at=_epoch(resolved_at),
    )
    return await TicketHistory(redis).record(record)

