"""The sandbox page shows a slash command's immediate response, as Slack does (issue 15 item 10).

Slack shows the message payload of a slash command's acknowledgement to the person who ran it
(ephemeral unless `response_type` is `in_channel`); the page dropped it, so `/support help`,
an empty `/support`, an unknown subcommand and a too-long question showed nothing. The API
check is fast; the browser check needs Chromium and Playwright (as tests/test_sandbox_browser.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config.settings import Settings
from app.sandbox.app_runner import ROOT
from app.sandbox.page.local import LocalSandbox
from app.sandbox.page.web import WebUi
from app.sandbox.stack import Stack

SUPPORT = "C0001"
CHROMIUM = Path("/usr/bin/chromium")


async def test_the_page_api_records_a_slash_commands_immediate_response(stack: Stack) -> None:
    stack.start_app(worker=False)  # the acknowledgement is the web role's
    ui = WebUi(stack.slack, info=_Info())  # type: ignore[arg-type]
    answers = {}
    for text in ("/support help", "/support", "/support trace"):
        result = await ui.post(SUPPORT, text, "U0001", None)
        assert result["status"] == 200
        answers[text] = result["response"]
    assert answers["/support help"]["response_type"] == "ephemeral"
    assert "/support status" in answers["/support help"]["text"]
    assert "Tell me what you need help with" in answers["/support"]["text"]
    assert "Unknown subcommand" in answers["/support trace"]["text"]
    snap = ui.snapshot(SUPPORT, None, "U0001")
    texts = [e["text"] for e in snap["ephemerals"]]
    assert any("/support status" in t for t in texts) and any("Unknown subcommand" in t for t in texts)
    assert ui.snapshot(SUPPORT, None, "U0002")["ephemerals"] == []  # only the one who ran it


class _Info:
    staff: frozenset[str] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSandbox]:
    for var in ("MCP_TOKEN_INTERNAL", "MCP_TOKEN_CUSTOMERS"):
        monkeypatch.setenv(var, "")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    settings = Settings(_env_file=None, config_path=ROOT / "support-agent.yml")  # type: ignore[call-arg]
    running = LocalSandbox(settings, data_dir=tmp_path / "sandbox", real_agent=False)
    try:
        yield running.start()
    finally:
        running.stop()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_support_help_shows_in_the_browser(sandbox: LocalSandbox) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(sandbox.url)
            page.wait_for_selector("body[data-ready='1']")
            page.fill("#channel-input", "/support help")
            page.press("#channel-input", "Enter")
            shown = page.locator("#channel-messages .msg.ephemeral")
            sync_api.expect(shown).to_contain_text("/support status")
            sync_api.expect(shown).to_contain_text("Only visible to you")
            assert errors == []
        finally:
            browser.close()
