"""The sandbox demo shows a specialist: `support-agent sandbox` (its own process) with the
scripted agent hands a "specialist" question to its billing specialist, whose task and knowledge
base search show in the thread's timeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_sandbox import ALICE, SUPPORT, SandboxProcess, bot_turns, eventually, start_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    running = start_sandbox(tmp_path / "sandbox")
    yield running
    if running.proc.poll() is None:
        running.proc.kill()
        running.proc.wait(10)


def test_the_demo_agent_asks_its_billing_specialist(sandbox: SandboxProcess, tmp_path: Path) -> None:
    ts = sandbox.post("/api/post", {"channel": SUPPORT, "text": "<@UBOT> ask the billing specialist about invoices",
                                    "user": ALICE})["ts"]
    [turn] = eventually(lambda: bot_turns(sandbox.thread(ts)), timeout=40)
    stream = turn["stream"]
    assert "Our billing specialist" in stream["text"] and "Settings → Billing → Invoices" in stream["text"]
    [specialist] = [t for tid, t in stream["tasks"].items() if tid.startswith("thread-")]
    assert specialist["title"].startswith("Asked billing: ask the billing specialist about invoices")
    assert specialist["status"] == "complete"
    [search] = [t for tid, t in stream["tasks"].items() if t["title"].startswith("billing: knowledge_base")]
    assert search["status"] == "complete"
    # The sandbox's config holds the specialist it provisioned (its own copy, not the user's file).
    written = (tmp_path / "sandbox" / "support-agent.yml").read_text()
    assert "specialists:" in written and "billing:" in written
