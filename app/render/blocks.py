"""Block Kit pieces the renderer puts on its messages, and the values their buttons carry.

Action ids and values are a contract with whoever handles the clicks:
- feedback: a `context_actions` block with a `feedback_buttons` element, action id `feedback`,
  values `good:<ticket id>` / `bad:<ticket id>` (`parse_feedback_value`);
- tool approvals: buttons `tool_approve` / `tool_deny`, value JSON
  `{"ticket_id": ..., "tool_use_id": <the tool-use event id>}` (`parse_approval_value`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from app.render.slack_text import escape, truncate

FEEDBACK_ACTION_ID = "feedback"
APPROVE_ACTION_ID = "tool_approve"
DENY_ACTION_ID = "tool_deny"

MAX_BLOCKS = 50
SECTION_LIMIT = 3_000
CONTEXT_LIMIT = 2_000
MAX_APPROVALS = 15

STATUS_EMOJI = {
    "pending": ":hourglass_flowing_sand:",
    "in_progress": ":arrows_counterclockwise:",
    "complete": ":white_check_mark:",
    "error": ":x:",
}


def feedback_block(ticket_id: str) -> dict[str, Any]:
    def button(text: str, verdict: str, label: str) -> dict[str, Any]:
        return {
            "text": {"type": "plain_text", "text": text},
            "value": f"{verdict}:{ticket_id}",
            "accessibility_label": label,
        }

    return {
        "type": "context_actions",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": FEEDBACK_ACTION_ID,
                "positive_button": button("Helpful", "good", "This answer was helpful"),
                "negative_button": button("Not helpful", "bad", "This answer was not helpful"),
            }
        ],
    }


def parse_feedback_value(value: str) -> tuple[str, str] | None:
    """`("good" | "bad", ticket_id)` from a feedback button's value."""
    verdict, _, ticket_id = (value or "").partition(":")
    if verdict in ("good", "bad") and ticket_id:
        return verdict, ticket_id
    return None


def approval_value(ticket_id: str, tool_use_id: str) -> str:
    return json.dumps({"ticket_id": ticket_id, "tool_use_id": tool_use_id}, separators=(",", ":"))


def parse_approval_value(value: str) -> tuple[str, str] | None:
    """`(ticket_id, tool_use_id)` from an Approve/Deny button's value."""
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict) and data.get("ticket_id") and data.get("tool_use_id"):
        return str(data["ticket_id"]), str(data["tool_use_id"])
    return None


def approval_blocks(ticket_id: str, tool_use_id: str, title: str, preview: str) -> list[dict[str, Any]]:
    text = f":raised_hand: *Approval needed:* {escape(title)}"
    if preview:
        text += f"\n```{preview}```"
    value = approval_value(ticket_id, tool_use_id)
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:SECTION_LIMIT]}},
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "action_id": APPROVE_ACTION_ID,
                    "text": {"type": "plain_text", "text": "Approve"},
                    "style": "primary",
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": DENY_ACTION_ID,
                    "text": {"type": "plain_text", "text": "Deny"},
                    "style": "danger",
                    "value": value,
                },
            ],
        },
    ]


def context_block(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate(text, CONTEXT_LIMIT)}]}


@dataclass
class TaskView:
    id: str
    title: str
    status: str
    output: str | None = None


def tasks_section(tasks: list[TaskView]) -> dict[str, Any] | None:
    """The tool timeline as one mrkdwn section (for messages that are not streams)."""
    if not tasks:
        return None
    lines: list[str] = []
    used = 0
    for i, task in enumerate(tasks):
        line = f"{STATUS_EMOJI.get(task.status, '')} {escape(task.title)}"
        if task.output and task.status in ("complete", "error"):
            line += f" — _{escape(truncate(task.output, 120))}_"
        more = f"…and {len(tasks) - i} more"
        if used + len(line) + 1 > SECTION_LIMIT - len(more) - 1:
            lines.append(more)
            break
        lines.append(line)
        used += len(line) + 1
    return {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}


def message_blocks(
    text: str, tasks: list[TaskView], extra: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """A whole message as blocks: tool timeline, the answer as a `markdown` block, extras."""
    blocks: list[dict[str, Any]] = []
    section = tasks_section(tasks)
    if section is not None:
        blocks.append(section)
    if text.strip():
        blocks.append({"type": "markdown", "text": text})
    blocks.extend(extra or [])
    return blocks[:MAX_BLOCKS]
