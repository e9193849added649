"""Text rules: mentions neutralised (also while streaming), splits that lose nothing."""

from __future__ import annotations

import random

import pytest

from app.bench.synthetic import event, prose
from app.render.blocks import parse_approval_value, parse_feedback_value
from app.render.describe import error_title, tool_title
from app.render.slack_text import (
    cut_point,
    neutralise_mentions,
    paragraph_break,
    release_point,
    split_text,
)


@pytest.mark.parametrize(
    "raw",
    ["hey @channel look", "<!channel> now", "<!here|here> and @here", "@everyone!", "<!subteam^S01|@ops>"],
)
def test_mass_mentions_are_neutralised(raw: str) -> None:
    out = neutralise_mentions(raw)
    for bad in ("@channel", "@here", "@everyone", "<!channel", "<!here", "<!subteam"):
        assert bad not in out
    assert "@\u200b" in out


def test_ordinary_text_and_user_mentions_are_kept() -> None:
    text = "mail me at ops@here.example or ping <@U123>; the channel is fine"
    assert neutralise_mentions(text) == text


def test_release_point_holds_back_a_mention_being_typed() -> None:
    assert release_point("ping @chan") == len("ping ")
    assert release_point("ping <!chan") == len("ping ")
    assert release_point("see <!subteam^S1|@support te") == len("see ")
    assert release_point("all good here ") == len("all good here ")
    assert release_point("all good") == len("all good")


def test_streamed_neutralising_is_a_prefix_of_the_final_text() -> None:
    text = "Heads up @channel: <!here> see <!subteam^S01|@on call> and @everyone, done."
    shown = ""
    for end in range(len(text) + 1):
        part = neutralise_mentions(text[: release_point(text[:end])])
        assert part.startswith(shown)
        shown = part
    final = neutralise_mentions(text)
    assert final.startswith(shown)
    assert "@channel" not in final and "<!here>" not in final


@pytest.mark.parametrize("limit", [500, 1_000, 12_000])
def test_split_text_round_trips_and_respects_the_limit(limit: int) -> None:
    text = prose(30_000, random.Random(limit))
    parts = split_text(text, limit)
    assert "".join(parts) == text
    assert all(len(p) <= limit for p in parts)
    assert len(parts) > 1


def test_split_prefers_paragraphs_and_avoids_code_fences() -> None:
    para = "word " * 50
    code = "```\n" + "\n\n".join(f"line {i}" for i in range(60)) + "\n```"
    text = f"{para}\n\n{code}\n\n{para}"
    cut = cut_point(text, len(para) + 200)
    # the only paragraph breaks inside the window are inside the fence: cut before it
    assert text[:cut].endswith("\n\n") and text[:cut].count("```") % 2 == 0


def test_cut_point_never_goes_below_the_floor() -> None:
    text = "a" * 50 + "\n\n" + "b" * 100
    assert cut_point(text, 120, floor=60) > 60
    assert cut_point(text, 120, floor=130) == 130
    assert paragraph_break(text, 0, len(text)) == 52
    assert paragraph_break(text, 52, len(text)) is None


def test_titles_are_plain_words_with_the_key_argument() -> None:
    mcp = event("agent.mcp_tool_use", id="e1", name="search_issues", mcp_server_name="github",
                input={"query": "vpn down", "limit": 5})
    assert tool_title(mcp) == "github · search issues: “vpn down”"
    bash = event("agent.tool_use", id="e2", name="bash", input={"command": "ls -la /var/log"})
    assert tool_title(bash) == "Run `ls -la /var/log`"
    custom = event("agent.custom_tool_use", id="e3", name="lookup_customer", input={"id": "C-42"})
    assert tool_title(custom) == "lookup customer: “C-42”"
    loud = event("agent.tool_use", id="e4", name="web_search", input={"query": "@channel " + "x" * 200})
    title = tool_title(loud)
    assert "@channel" not in title and len(title) <= 120


def test_error_wording_follows_retry_status() -> None:
    retrying = event("session.error", id="e", error={
        "type": "model_overloaded_error", "message": "m", "retry_status": {"type": "retrying"}})
    assert error_title(retrying.error) == ("The model is overloaded: retrying", "in_progress")
    gone = event("session.error", id="e", error={
        "type": "mcp_connection_failed_error", "message": "m", "mcp_server_name": "tickets",
        "retry_status": {"type": "exhausted"}})
    title, status = error_title(gone.error)
    assert status == "error" and "tickets" in title and "stopped" in title


def test_button_values_parse_back() -> None:
    assert parse_feedback_value("good:T1-4") == ("good", "T1-4")
    assert parse_feedback_value("meh") is None
    assert parse_approval_value('{"ticket_id":"T1-4","tool_use_id":"sevt_1"}') == ("T1-4", "sevt_1")
    assert parse_approval_value("nope") is None
