"""Where a session's event following got to: survives restarts and takeovers.

`processed_at` of the last handled event says where to list from after a reconnect; the set of
rendered event ids says what not to show again (listing is inclusive, and a takeover replays
everything since the cursor). Writes are fenced: a worker that lost its lease cannot move the
cursor of the worker that took over.

Per-event Redis work is batched (issue 14):

- `seen` answers from memory: the rendered set is read once per cursor (it is one holder's
  cursor: every mark made before its lease was granted is already in Redis, and nobody else can
  mark while it holds the lease), and every id this cursor marked is remembered. Only a set too
  large to read at once falls back to one SISMEMBER per unknown id.
- `mark` still returns only once its id is durable (and raises `StaleLease` when the fence moved),
  but the marks waiting while a write is in flight go together in the next one: per cursor one
  script call (all ids added, then the cursor moved, atomically), for all cursors of the process
  one pipelined round trip. Batches are written one after another, in the order the marks were
  made, so a mark is in Redis before the listing cursor moves past it.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

RENDERED_TTL_SECONDS = 60 * 24 * 3600
# Up to this many rendered ids are read at once to answer `seen` from memory.
SNAPSHOT_LIMIT = 5_000
# At most this many ids in one script call (Lua's `unpack` has a stack limit).
MAX_IDS_PER_CALL = 1_000

# KEYS: cursor hash, rendered set, fence. ARGV: fence, ttl, processed_at ('' keeps the cursor),
# the event id it belongs to, then the ids to add. 0: the fence moved past ours, nothing written.
_ADVANCE = """
local fence = tonumber(redis.call('GET', KEYS[3]) or '0')
if fence > tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[2], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then
  local current = redis.call('HGET', KEYS[1], 'processed_at')
  if (not current) or ARGV[3] > current then
    redis.call('HSET', KEYS[1], 'processed_at', ARGV[3], 'event_id', ARGV[4])
  end
end
return 1
"""

# The rendered ids, unless there are more than ARGV[1] (then false: ask per id).
_SNAPSHOT = """
if redis.call('SCARD', KEYS[1]) > tonumber(ARGV[1]) then return false end
return redis.call('SMEMBERS', KEYS[1])
"""


class StaleLease(Exception):
    """Another worker holds a newer lease on this ticket; stop following."""


@dataclass
class _Mark:
    cursor: Cursor
    event_id: str
    processed_at: str
    done: asyncio.Future[None]


@dataclass
class _Batcher:
    """One per Redis client and event loop: writes the marks of all its cursors, a batch at a time."""

    redis: aioredis.Redis
    queue: list[_Mark] = field(default_factory=list)
    flusher: asyncio.Task[None] | None = None
    sha: str | None = None
    round_trips: int = 0  # for tests and benchmarks
    script_calls: int = 0

    def submit(self, mark: _Mark) -> None:
        self.queue.append(mark)
        if self.flusher is None or self.flusher.done():
            self.flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self.queue:
            batch, self.queue = self.queue, []
            try:
                await self._write(batch)
            except BaseException as exc:
                for mark in batch:
                    if not mark.done.done():
                        mark.done.set_exception(exc if isinstance(exc, Exception) else ConnectionError(repr(exc)))
                if not isinstance(exc, Exception):
                    raise

    async def _write(self, batch: list[_Mark]) -> None:
        calls = _group(batch)
        results = await self._run(calls)
        for (cursor, marks, _args), ok in zip(calls, results, strict=True):
            if isinstance(ok, Exception):
                for mark in marks:
                    if not mark.done.done():
                        mark.done.set_exception(ok)
                continue
            if not ok:
                cursor.stale = True
            for mark in marks:
                if mark.done.done():
                    continue
                if ok:
                    mark.done.set_result(None)
                else:
                    mark.done.set_exception(StaleLease(cursor.ticket_id))

    async def _run(self, calls: list[tuple[Cursor, list[_Mark], list[str]]]) -> list[object]:
        if self.sha is None:
            self.sha = str(await self.redis.script_load(_ADVANCE))
        for _attempt in range(2):
            pipe = self.redis.pipeline(transaction=False)
            for cursor, _marks, args in calls:
                pipe.evalsha(self.sha, 3, *cursor.keys, *args)
            self.round_trips += 1
            self.script_calls += len(calls)
            results: list[object] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(r, NoScriptError) for r in results):
                return results
            self.sha = str(await self.redis.script_load(_ADVANCE))  # Redis restarted empty
        return results


def _group(batch: list[_Mark]) -> list[tuple[Cursor, list[_Mark], list[str]]]:
    """Per cursor, in order: its marks in script calls of at most MAX_IDS_PER_CALL ids, each
    moving the cursor to the latest `processed_at` among its own marks."""
    by_cursor: dict[int, tuple[Cursor, list[_Mark]]] = {}
    for mark in batch:
        by_cursor.setdefault(id(mark.cursor), (mark.cursor, []))[1].append(mark)
    calls = []
    for cursor, marks in by_cursor.values():
        for start in range(0, len(marks), MAX_IDS_PER_CALL):
            chunk = marks[start : start + MAX_IDS_PER_CALL]
            latest = max(chunk, key=lambda m: m.processed_at)
            args = [str(cursor.fence), str(RENDERED_TTL_SECONDS), latest.processed_at,
                    latest.event_id if latest.processed_at else "", *(m.event_id for m in chunk)]
            calls.append((cursor, chunk, args))
    return calls


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


_batchers: weakref.WeakKeyDictionary[aioredis.Redis, tuple[asyncio.AbstractEventLoop, _Batcher]] = (
    weakref.WeakKeyDictionary()
)


def batcher_for(redis: aioredis.Redis) -> _Batcher:
    loop = asyncio.get_running_loop()
    found = _batchers.get(redis)
    if found is None or found[0] is not loop:
        found = (loop, _Batcher(redis))
        _batchers[redis] = found
    return found[1]


class Cursor:
    def __init__(self, redis: aioredis.Redis, ticket_id: str, session_id: str, fence: int) -> None:
        self.redis = redis
        self.ticket_id = ticket_id
        self.session_id = session_id
        self.fence = fence
        self._key = f"sa:cursor:{session_id}"
        self._rendered = f"sa:rendered:{session_id}"
        self.keys = (self._key, self._rendered, f"sa:fence:{ticket_id}")
        # Ids known to be rendered: the snapshot read once, plus every id this cursor marked.
        self._known: set[str] = set()
        self._complete: bool | None = None  # None: not read yet; False: too large, ask per id
        self.stale = False  # the fence moved past ours: every later mark is refused too

    async def processed_at(self) -> str | None:
        if self._complete is None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hget(self._key, "processed_at")
                pipe.eval(_SNAPSHOT, 1, self._rendered, SNAPSHOT_LIMIT)
                value, members = await pipe.execute()
            self._take_snapshot(members)
        else:
            value = await self.redis.hget(self._key, "processed_at")
        return str(value) if value else None

    async def seen(self, event_id: str) -> bool:
        if event_id in self._known:
            return True
        if self._complete is None:
            self._take_snapshot(await self.redis.eval(_SNAPSHOT, 1, self._rendered, SNAPSHOT_LIMIT))
            if event_id in self._known:
                return True
        if self._complete:
            return False
        found = bool(await self.redis.sismember(self._rendered, event_id))
        if found:
            self._known.add(event_id)
        return found

    async def mark(self, event_id: str, processed_at: str | None) -> None:
        """Record `event_id` as rendered (and move the listing cursor to `processed_at`, when
        given); returns once that is in Redis. Raises StaleLease if another worker has the ticket."""
        if self.stale:
            raise StaleLease(self.ticket_id)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_retrieve)  # a caller cancelled meanwhile leaves no unread error
        batcher_for(self.redis).submit(_Mark(self, event_id, processed_at or "", done))
        await done
        self._known.add(event_id)

    def _take_snapshot(self, members: object) -> None:
        if isinstance(members, list):
            self._known.update(str(m) for m in members)
            self._complete = True
        else:
            self._complete = False
