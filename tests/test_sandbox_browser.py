"""The sandbox page in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright.

Open the page, mention the bot, watch the answer stream in with its tool timeline and cost
footer, press a feedback button, reply in the thread, press Resolve, then open the app's Home
tab, filter it and open the ticket's trace; the screenshots land in `test-artifacts/`
(`sandbox.png`, `sandbox-home.png`). Skips when /usr/bin/chromium or the `playwright` package is missing
(`.ci/run` installs Chromium when it can); Playwright never downloads a browser here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.config.settings import Settings
from app.sandbox.app_runner import ROOT
from app.sandbox.page.local import LocalSandbox

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = ROOT / "test-artifacts" / "sandbox.png"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 30_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSandbox]:
    for var in ("MCP_TOKEN_INTERNAL", "MCP_TOKEN_CUSTOMERS"):
        monkeypatch.setenv(var, "")  # the sandbox mints its own; restored afterwards
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


@pytest.fixture
def page(sandbox: LocalSandbox) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page
            assert errors == [], errors
        finally:
            browser.close()


def test_mention_stream_reply_resolve_and_the_home_tab_in_the_browser(sandbox: LocalSandbox, page: Any) -> None:
    expect = sync_api.expect
    page.goto(sandbox.url)
    page.wait_for_selector("body[data-ready='1']")
    expect(page.locator("#banner")).to_contain_text("demo agent")
    expect(page.locator("#banner")).to_contain_text("No ANTHROPIC_API_KEY")
    expect(page.locator("#channel-title")).to_have_text("# support")

    # Mention the bot: the thread opens and the answer streams in.
    page.fill("#channel-input", "@support-agent how do refunds work?")
    page.press("#channel-input", "Enter")
    thread = page.locator("#thread-pane")
    expect(thread).to_be_visible()
    expect(thread.locator(".msg.from-user").first).to_contain_text("@support-agent how do refunds work?")
    thread.locator(".stream-text[data-state='streaming']").first.wait_for()
    answer = thread.locator(".stream-text[data-state='stopped']").first
    expect(answer).to_contain_text("30 days", timeout=TIMEOUT_MS)
    # The tool timeline: a real MCP call to the knowledge base, complete.
    task = thread.locator(".task[data-status='complete']").first
    expect(task).to_contain_text("knowledge_base")
    # Feedback, the cost footer, and Resolve under the answer.
    expect(thread.locator(".block.context").last).to_contain_text("$")
    thread.locator("button[data-action-id='feedback']").first.click()
    expect(thread.locator(".msg.ephemeral")).to_contain_text("Thanks for the feedback")
    # The channel shows the thread's replies.
    expect(page.locator("#channel-messages .replies a")).to_contain_text("repl")

    # Reply in the thread: the same ticket continues.
    page.fill("#thread-input", "and where do I find my invoices?")
    page.press("#thread-input", "Enter")
    second = thread.locator(".stream-text[data-state='stopped']").nth(1)
    expect(second).to_contain_text("Invoices", timeout=TIMEOUT_MS)

    # Resolve: the bot posts the summary with Reopen.
    thread.locator("button[data-action-id='ticket_resolve']").last.click()
    reopen = thread.locator("button[data-action-id='ticket_reopen']")
    expect(reopen.first).to_be_visible(timeout=TIMEOUT_MS)
    expect(thread.locator(".msg.from-bot").last).to_contain_text("resolved")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    shutil.copy(SCREENSHOT, sandbox.data_dir / "sandbox.png")  # next to the run's log, for debugging

    # The app's Home tab: alice (staff) sees the ticket, filters the list, opens the ticket's trace.
    page.click("#home-entry")
    home = page.locator("#home-pane")
    expect(home).to_be_visible()
    expect(page.locator("#channel-pane")).to_be_hidden()
    expect(thread).to_be_hidden()
    row = home.locator(".block[data-block-id^='ticket:']")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("#1 how do refunds work?")
    expect(row).to_contain_text("Resolved · internal · @alice · #support")
    status = home.locator("select[data-action-id='home_filter_status']")
    expect(status).to_have_value("all")
    status.select_option("open_any")
    expect(home).to_contain_text("All open (0)")
    expect(row).to_have_count(0)
    status.select_option("resolved")
    expect(home).to_contain_text("Resolved (1)")
    expect(row).to_have_count(1)
    channel = home.locator("select[data-action-id='home_filter_channel']")
    expect(channel.locator("option")).to_have_text(["Any channel", "# support", "# general", "# help"])
    channel.select_option("C0002")
    expect(home).to_contain_text("Resolved in #general")
    expect(row).to_have_count(0)
    home.locator("button[data-action-id='home_filter_all_channels']").click()
    expect(channel).to_have_value("")
    expect(row).to_have_count(1)
    row.locator("button[data-action-id='ticket_trace']").click()
    modal = page.locator("#modal .modal")
    expect(modal.locator("h2")).to_have_text("Trace #1")
    expect(modal).to_contain_text("Ticket #1 · resolved")  # filled in by views.update after "Reading ticket…"
    page.screenshot(path=str(SCREENSHOT.with_name("sandbox-home.png")))
    modal.locator("button.cancel").click()
    expect(page.locator("#modal")).to_be_hidden()
    page.click("#channel-entry")
    expect(page.locator("#channel-pane")).to_be_visible()
    expect(home).to_be_hidden()
    expect(thread.locator("button[data-action-id='ticket_reopen']").first).to_be_visible()


def test_deny_a_tool_call_with_a_reason_in_the_modal(sandbox: LocalSandbox, page: Any) -> None:
    expect = sync_api.expect
    page.goto(sandbox.url)
    page.wait_for_selector("body[data-ready='1']")
    page.fill("#channel-input", "@support-agent please check past tickets about SSO")
    page.press("#channel-input", "Enter")
    thread = page.locator("#thread-pane")
    expect(thread).to_contain_text("Approval needed", timeout=TIMEOUT_MS)
    expect(thread.locator("button[data-action-id='tool_approve']")).to_be_visible()
    thread.locator("button[data-action-id='tool_deny']").click()
    modal = page.locator("#modal .modal")
    expect(modal).to_contain_text("Deny tool call")
    modal.locator("textarea").fill("no customer data today")
    modal.locator("button.submit").click()
    expect(page.locator("#modal")).to_be_hidden()
    expect(thread).to_contain_text("no customer data today", timeout=TIMEOUT_MS)
    expect(thread.locator(".stream-text[data-state='stopped']").last).to_contain_text(
        "I won't search past tickets", timeout=TIMEOUT_MS)
    expect(thread.locator("button[data-action-id='tool_approve']")).to_have_count(0)


@pytest.fixture
def quick_stop_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalSandbox]:
    """The sandbox with the Stop button shown after 1 s of work instead of 15."""
    for var in ("MCP_TOKEN_INTERNAL", "MCP_TOKEN_CUSTOMERS"):
        monkeypatch.setenv(var, "")
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, config_path=ROOT / "support-agent.yml", stop_button_after_seconds=1.0)
    running = LocalSandbox(settings, data_dir=tmp_path / "sandbox", real_agent=False)
    try:
        yield running.start()
    finally:
        running.stop()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_stop_while_the_answer_streams(quick_stop_sandbox: LocalSandbox) -> None:
    sandbox = quick_stop_sandbox
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(sandbox.url)
            page.wait_for_selector("body[data-ready='1']")
            # The demo's slow answer streams a few words at a time for about half a minute.
            page.fill("#channel-input", "@support-agent give me the long answer")
            page.press("#channel-input", "Enter")
            thread = page.locator("#thread-pane")
            streaming = thread.locator(".stream-text[data-state='streaming']").first
            expect(streaming).to_contain_text("deliberately slow", timeout=TIMEOUT_MS)
            # Stop shows while the agent works, and pressing it stops the answer mid-stream.
            stop = thread.locator("button[data-action-id='ticket_stop']")
            expect(stop).to_be_visible(timeout=TIMEOUT_MS)
            stop.click()
            expect(thread).to_contain_text("stopped the agent", timeout=TIMEOUT_MS)
            # The Stop button goes with the turn; the answer stops short of its end.
            expect(stop).to_have_count(0, timeout=TIMEOUT_MS)
            answer = thread.locator(".stream-text").first
            expect(answer).not_to_have_attribute("data-state", "streaming", timeout=TIMEOUT_MS)
            text = answer.inner_text()
            assert "deliberately slow" in text
            assert text.count("same session.") < 3, "the whole answer streamed: Stop did not stop it"
            # No "nothing to stop" note: the press found the turn it was meant for.
            expect(thread).not_to_contain_text("Nothing to stop")
            assert errors == [], errors
        finally:
            browser.close()
