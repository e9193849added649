"""What a person reading the thread sees of one emulated Slack message.

A streamed message shows its streamed text and task cards; once the message is edited with
`chat.update` and blocks, it shows those blocks instead (an edit replaces the message's
content). The renderer's task timeline in blocks is one mrkdwn section, a line per task:
"<status emoji> <title>[ — _<output>_]" (app/render/blocks.py `tasks_section`).
"""

from __future__ import annotations

import re
from typing import Any

EMOJI_STATUS = {
    ":hourglass_flowing_sand:": "pending",
    ":arrows_counterclockwise:": "in_progress",
    ":white_check_mark:": "complete",
    ":x:": "error",
}
_LINE = re.compile(r"^(:[a-z_]+:) (.*?)(?: — _.*_)?$")


def _edited_with_blocks(msg: dict[str, Any]) -> bool:
    return (bool(msg.get("edited")) and bool(msg.get("blocks"))) or not msg.get("stream")


def visible_text(msg: dict[str, Any]) -> str:
    """The answer text the message shows."""
    if msg.get("stream") and not _edited_with_blocks(msg):
        return str(msg.get("text") or "")
    blocks = msg.get("blocks") or []
    if not blocks:
        return str(msg.get("text") or "")
    return "".join(str(b.get("text") or "") for b in blocks if b.get("type") == "markdown")


def visible_tasks(msg: dict[str, Any]) -> dict[str, str]:
    """Task title -> status, as the message shows them."""
    if msg.get("stream") and not _edited_with_blocks(msg):
        return {str(t.get("title")): str(t.get("status")) for t in (msg["stream"].get("tasks") or {}).values()}
    out: dict[str, str] = {}
    for block in msg.get("blocks") or []:
        if block.get("type") != "section":
            continue
        text = str((block.get("text") or {}).get("text") or "")
        for line in text.splitlines():
            match = _LINE.match(line)
            if match and match.group(1) in EMOJI_STATUS:
                out[_unescape(match.group(2))] = EMOJI_STATUS[match.group(1)]
    return out


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
