"""Outcomes across a takeover (issue 18, guarantee 5): a worker killed while an answer is held
back from the requester leaves it to the worker that takes the ticket over, with real processes
(web and two workers) against the emulators."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.redis_conn import EmbeddedRedis
from app.sandbox.stack import Stack
from tests.support import eventually
from tests.test_outcomes_e2e import (
    DRAFT,
    GRADER,
    REVISED,
    SUPPORT,
    _flush,
    check_tasks,
    finished,
    shown_text,
    write_config,
)


@pytest.fixture
def facing_stack(redis_server: EmbeddedRedis, tmp_path: Path) -> Iterator[Stack]:
    _flush(redis_server.url)
    with Stack(redis_server.url, data_dir=tmp_path, config_path=write_config(tmp_path, customer_facing=True)) as s:
        yield s


async def test_a_worker_killed_while_a_draft_is_held_leaves_the_answer_to_its_successor(
    facing_stack: Stack, tmp_path: Path
) -> None:
    """Takeover (guarantee 5 with outcomes): the held draft was never shown, so the new holder
    replays it, holds it again, and shows only the accepted answer, once."""
    import redis as sync_redis

    stack = facing_stack
    stack.agents.set_scenario({"rules": [{"match": None, "steps": [
        {"message": DRAFT, "deltas": 2},
        {"evaluate": "needs_revision", "explanation": "no refund window given", "grader_usage": GRADER},
        {"message": REVISED, "deltas": 2},
        {"sleep": 2.0},  # the worker holding the ticket dies in here, the revised answer held back
        {"evaluate": "satisfied", "explanation": "all there", "grader_usage": GRADER},
    ]}]})
    stack.start_process("web", log_path=tmp_path / "web.log")
    workers = {name: stack.start_process("worker", log_path=tmp_path / f"{name}.log", WORKER_ID=name)
               for name in ("worker-1", "worker-2")}
    ts = await stack.slack.user_posts(SUPPORT, "Can I get a refund on my annual plan?")
    redis = sync_redis.Redis.from_url(stack.redis_url, decode_responses=True)

    def session_events() -> list[dict[str, Any]]:
        return [e for s in stack.agents.state.sessions_snapshot() for e in stack.agents.state.events(s["id"])]

    def holder() -> str | None:
        keys = list(redis.scan_iter("sa:lease:*"))
        value = redis.get(keys[0]) if keys else None
        return value.split(":")[0] if value else None

    await eventually(lambda: any(e["type"] == "agent.message" and REVISED in str(e.get("content"))
                                 for e in session_events()), timeout=40)
    dying = await eventually(holder, timeout=10)
    workers[dying].kill()
    killed_at = datetime.now(UTC)
    survivor = next(name for name in workers if name != dying)
    await eventually(lambda: REVISED in shown_text(stack, ts) and finished(stack, ts), timeout=40)
    # The accepting verdict came after the holder died: the takeover happened while it was held.
    verdicts = [e for e in session_events() if e["type"] == "span.outcome_evaluation_end"]
    assert [v["result"] for v in verdicts] == ["needs_revision", "satisfied"]
    assert datetime.fromisoformat(verdicts[1]["processed_at"].replace("Z", "+00:00")) > killed_at
    text = shown_text(stack, ts)
    assert text.count(REVISED) == 1 and DRAFT not in text
    assert [t.get("output") for t in check_tasks(stack, ts)] == ["needs revision", "satisfied"]
    assert "taking over orphaned ticket" in (tmp_path / f"{survivor}.log").read_text()
