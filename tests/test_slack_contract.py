"""The Slack contract file (issue 15): sourced, and enforced by the emulator."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError

from app.sandbox.slack import SlackEmulator
from app.sandbox.slack.content import ApiError
from app.sandbox.slack.contract import check_call, contract, documented_errors, methods
from app.sandbox.slack.methods import METHODS


def test_every_emulated_method_has_a_sourced_contract() -> None:
    source = contract()["source"]
    assert source["repository"].endswith("slack-ruby/slack-api-ref") and len(source["commit"]) == 40
    assert set(METHODS) == set(methods())
    for name, spec in methods().items():
        assert spec["rate_limits"], name
        assert spec["errors"], name


def test_documented_facts_the_issue_relies_on() -> None:
    assert "channel_type_not_supported" in documented_errors("chat.startStream")
    assert {"stopped_by_user", "message_not_owned_by_app"} <= documented_errors("chat.appendStream")
    assert "streaming_state_conflict" in documented_errors("chat.update")
    assert "msg_too_long" not in documented_errors("chat.appendStream")


def test_required_arguments_and_limits_are_enforced() -> None:
    with pytest.raises(ApiError) as missing:
        check_call("chat.update", {"channel": "C1"})
    assert missing.value.error == "invalid_arguments"
    with pytest.raises(ApiError) as empty:
        check_call("chat.appendStream", {"channel": "C1", "ts": "1.2"})
    assert empty.value.error == "no_text"
    check_call("chat.appendStream", {"channel": "C1", "ts": "1.2", "chunks": [{"type": "markdown_text"}]})
    with pytest.raises(ApiError) as many:
        check_call("assistant.threads.setStatus", {"channel_id": "C", "thread_ts": "1", "status": "s",
                                                   "loading_messages": ["x"] * 11})
    assert many.value.error == "invalid_arguments"
    check_call("assistant.threads.setStatus", {"channel_id": "C", "thread_ts": "1", "status": ""})


async def test_injection_accepts_only_documented_errors() -> None:
    with SlackEmulator() as emu:
        with pytest.raises(ValueError):
            emu.state.inject("chat.appendStream", "msg_too_long")
        emu.state.inject("chat.postMessage", "restricted_action_thread_locked")
        with pytest.raises(SlackApiError) as err:
            await emu.client().chat_postMessage(channel="C0001", text="x")
        assert err.value.response["error"] == "restricted_action_thread_locked"
