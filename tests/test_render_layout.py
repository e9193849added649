"""The layout, as a spec: a turn's session events in, the Slack content it wants out. No Slack, no I/O."""

from __future__ import annotations

from typing import Any

from app.bench.synthetic import delta, event, message, start
from app.render.layout import Layout, Part, Task


def tool_use(tid: str, permission: str | None = None, name: str = "lookup") -> Any:
    fields: dict[str, Any] = {"id": tid, "name": name, "input": {"q": "vpn"}}
    if permission:
        fields["evaluated_permission"] = permission
    return event("agent.tool_use", **fields)


def tool_result(tid: str, rid: str, *, error: bool = False, text: str = "ok") -> Any:
    return event(
        "agent.tool_result", id=rid, tool_use_id=tid, is_error=error, content=[{"type": "text", "text": text}]
    )


def wanted_text(layout: Layout) -> str:
    """The answer text waiting to be shown, as the next messages would show it."""
    return "".join(p.text for p in layout.outbox if p.kind == "text")


def statuses(layout: Layout) -> dict[str, str]:
    return {t.id: t.status for t in layout.tasks.values()}


def fold(events: list[Any], layout: Layout | None = None) -> Layout:
    layout = layout or Layout(12_000)
    for ev in events:
        if ev.type == "event_start":
            layout.preview_started(ev.event.id)
        elif ev.type == "event_delta":
            layout.apply_delta(ev)
        else:
            layout.apply(ev)
    return layout


def test_an_answer_streamed_in_deltas_then_buffered_is_wanted_once() -> None:
    layout = fold([start("m1"), delta("m1", "The gateway "), delta("m1", "certificate expired. "),
                   message("m1", "The gateway certificate expired. Renewing it.")])
    assert wanted_text(layout) == "The gateway certificate expired. Renewing it."


def test_two_answers_in_one_turn_are_a_paragraph_apart() -> None:
    layout = fold([message("m1", "Checking."), tool_use("t1"), message("m2", "Found it.")])
    assert wanted_text(layout) == "Checking.\n\nFound it."


def test_a_tool_call_is_one_task_that_ends_complete_with_its_output() -> None:
    layout = fold([tool_use("t1"), tool_result("t1", "r1", text="3 open incidents")])
    assert statuses(layout) == {"t1": "complete"}
    assert layout.tasks["t1"].output and "3 open incidents" in layout.tasks["t1"].output
    # the task is queued twice (started, then finished): the delivery shows its latest state
    assert [p.task_id for p in layout.outbox] == ["t1", "t1"]


def test_a_replayed_result_the_task_already_shows_changes_nothing() -> None:
    layout = fold([tool_use("t1"), tool_result("t1", "r1")])
    layout.outbox.clear()  # shown
    assert layout.apply(tool_result("t1", "r1"), track=True) != []  # reported shown, not queued
    assert layout.outbox == []


def test_a_call_waiting_for_approval_is_pending_and_the_stop_offers_approve_and_deny() -> None:
    idle = event("session.status_idle", id="i1", stop_reason={"type": "requires_action", "event_ids": ["t1"]})
    layout = fold([tool_use("t1", permission="ask"), idle])
    assert statuses(layout) == {"t1": "pending"} and layout.tasks["t1"].details == "Waiting for approval"
    carry = layout.settle("requires_action")
    assert set(carry) == {"t1"}  # it goes on in the next turn
    blocks = layout.final_blocks("T1-1", "requires_action", feedback=True, controls=[], footer="$0.02")
    actions = [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert actions == ["tool_approve", "tool_deny"]
    assert "$0.02" not in str(blocks)  # no cost footer on a turn that is not over


def test_a_denied_call_is_an_error_at_once() -> None:
    layout = fold([tool_use("t1", permission="deny")])
    assert statuses(layout) == {"t1": "error"}
    assert layout.tasks["t1"].output == "Blocked by the permission policy"


def test_a_turn_that_ends_closes_what_is_still_open() -> None:
    custom = event("agent.custom_tool_use", id="c1", name="create_ticket", input={})
    layout = fold([tool_use("t1"), custom])
    layout.settle("end_turn")
    assert statuses(layout) == {"t1": "error", "c1": "complete"}
    assert layout.tasks["t1"].output == "Stopped before it finished"


def test_the_end_of_an_answered_turn_has_feedback_controls_and_the_cost() -> None:
    layout = fold([message("m1", "Done.")])
    controls = [{"type": "actions", "elements": []}]
    blocks = layout.final_blocks("T1-1", "end_turn", feedback=True, controls=controls, footer="$0.02 so far")
    assert [b["type"] for b in blocks] == ["context_actions", "actions", "context"]
    # a hand-off at shutdown: only a note, the turn goes on elsewhere
    assert all(b["type"] == "context" for b in layout.final_blocks(
        "T1-1", "shutdown", feedback=True, controls=controls, footer="$0.02"))


def test_mentions_in_agent_text_are_neutralised_even_across_deltas() -> None:
    layout = fold([start("m1"), delta("m1", "ping <!here"), delta("m1", "> now"), message("m1", "ping <!here> now")])
    assert "<!here>" not in wanted_text(layout)


def test_a_failed_model_request_takes_its_preview_back() -> None:
    """The API sends no buffered message for a failed attempt; its request's end says so."""
    layout = fold([start("m1"), delta("m1", "The certificate is fine and "), delta("m1", "nothing ")])
    shown = [Part("m1", 0, wanted_text(layout))]
    layout.apply(event(
        "span.model_request_end", id="s1", model_request_start_id="s0", is_error=True,
        model_usage={"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 0},
    ))
    layout.apply(message("m2", "The certificate expired."))
    assert layout.corrected(shown) == []
    retried = Part("m2", 0, "The certificate expired.")
    after = [Part("m1", 0, "The certificate is fine and "), Part(None, 0, "\n\n"), retried]
    assert layout.corrected(after) == [retried]  # no separator left before it
    assert wanted_text(layout).endswith("The certificate expired.")


def test_after_a_takeover_only_what_slack_lacks_is_wanted() -> None:
    """Seeded with what Slack shows (the records), a replay adds only the rest."""
    layout = Layout(12_000)
    layout.seed({"m1": "Looking at the VPN "}, [Task("t1", "Lookup", "in_progress", "tool")])
    layout.apply_delta(delta("m1", "garbage from a mid-message reconnect"))  # ignored while held
    layout.apply(message("m1", "Looking at the VPN logs now."))
    layout.apply(tool_use("t1"))  # the replayed use: already a task
    layout.apply(tool_result("t1", "r1"))
    assert wanted_text(layout) == "logs now."
    assert statuses(layout) == {"t1": "complete"}
    assert [p.offset for p in layout.outbox if p.kind == "text"] == [len("Looking at the VPN ")]


def test_a_long_answer_is_cut_between_paragraphs_near_the_limit() -> None:
    small = Layout(1_000)
    fold([message("m1", ("word " * 150 + "\n\n") * 4)], small)
    cut = small.take("", set())
    assert cut.full and len(cut.text) <= 1_000 and cut.text.endswith("\n\n")
    assert cut.remainder is not None  # the rest goes on in the next message


def test_a_task_shown_in_an_earlier_message_is_not_repeated_in_the_next() -> None:
    layout = fold([tool_use("t1"), tool_result("t1", "r1")])
    batch = layout.take("", set(), elsewhere=frozenset({"t1"}))
    assert batch.chunks == [] and batch.moved == ["t1"]  # updated where it is instead


def test_a_stop_reason_newer_than_the_sdk_still_gets_a_note() -> None:
    layout = fold([message("m1", "Partial.")])
    blocks = layout.final_blocks("T1-1", "paused_for_maintenance", feedback=False, controls=[], footer=None)
    assert "The agent stopped (paused for maintenance)" in str(blocks)
    assert layout.final_blocks("T1-1", "end_turn", feedback=False, controls=[], footer=None) == []
