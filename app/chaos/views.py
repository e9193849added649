"""What each side finally holds, read from the emulators' own records.

- The agent: the session's processed events (`agent.message` texts, tool uses) as the Managed
  Agents emulator recorded them.
- Slack: every bot message of the thread, as a person would see it at the end. A streamed
  message shows its streamed text and `task_update` tasks, then the blocks its stop added; once
  it was edited (`chat.update`, the renderer finishing a stream that died) it shows what the
  edit set. Any other message shows its blocks, or its text when it has none (Slack shows the
  blocks and keeps `text` as the notification fallback).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.chaos.compare import ShownTask, ToolCall

TOOL_USES = ("agent.tool_use", "agent.mcp_tool_use", "agent.custom_tool_use")
STATUS_BY_EMOJI = {
    ":hourglass_flowing_sand:": "pending",
    ":arrows_counterclockwise:": "in_progress",
    ":white_check_mark:": "complete",
    ":x:": "error",
}
MARKER_KEY = "query"


@dataclass
class AgentRecord:
    text: str
    messages: int
    calls: list[ToolCall]


def agent_record(events: list[dict[str, Any]]) -> AgentRecord:
    """The session's `agent.message` texts (joined by blank lines) and tool calls, in order."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for event in events:
        kind = event.get("type")
        if kind == "agent.message":
            texts.append("".join(b.get("text", "") for b in event.get("content") or [] if b.get("type") == "text"))
        elif kind in TOOL_USES:
            tool_input = event.get("input") or {}
            marker = tool_input.get(MARKER_KEY) if isinstance(tool_input, dict) else None
            calls.append(ToolCall(str(event["id"]), str(marker or "")))
    return AgentRecord("\n\n".join(texts), len(texts), calls)


@dataclass
class ShownMessage:
    ts: str
    text: str
    tasks: list[ShownTask] = field(default_factory=list)
    streaming: bool = False


def _texts(node: Any, out: list[str]) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("text"), str):
            out.append(node["text"])
        for value in node.values():
            if isinstance(value, dict | list):
                _texts(value, out)
    elif isinstance(node, list):
        for item in node:
            _texts(item, out)


def blocks_text(blocks: list[dict[str, Any]]) -> str:
    """Every text a person reads in `blocks` (sections, markdown, context, buttons), in order."""
    out: list[str] = []
    _texts(blocks, out)
    return "\n".join(out)


def blocks_tasks(index: int, blocks: list[dict[str, Any]]) -> list[ShownTask]:
    """Task lines of a timeline shown in blocks: a line of a section that starts with a status
    emoji (a context line such as "Approved by" is not a task)."""
    tasks: list[ShownTask] = []
    sections = [b for b in blocks if b.get("type") == "section"]
    for text in blocks_text(sections).splitlines():
        line = text.strip()
        for emoji, status in STATUS_BY_EMOJI.items():
            if line.startswith(emoji):
                tasks.append(ShownTask(index, None, line[len(emoji):].strip(), status))
                break
    return tasks


def shown_message(index: int, msg: dict[str, Any]) -> ShownMessage:
    stream = msg.get("stream")
    blocks = msg.get("blocks") or []
    ts = str(msg.get("ts"))
    if stream is not None and "edited" not in msg:
        tasks = [
            ShownTask(index, str(tid), str(t.get("title", "")), str(t.get("status", "")))
            for tid, t in (stream.get("tasks") or {}).items()
        ]
        text = str(stream.get("text") or "")
        if blocks:
            text += "\n" + blocks_text(blocks)
            tasks += blocks_tasks(index, blocks)
        return ShownMessage(ts, text, tasks, streaming=stream.get("state") == "streaming")
    if blocks:
        return ShownMessage(ts, blocks_text(blocks), blocks_tasks(index, blocks))
    return ShownMessage(ts, str(msg.get("text") or ""))


def slack_record(thread: list[dict[str, Any]], root_ts: str) -> list[ShownMessage]:
    """The bot's messages in a thread (`SlackState.thread`), oldest first."""
    bot = [m for m in thread if m.get("bot_id") and m.get("ts") != root_ts]
    return [shown_message(i, m) for i, m in enumerate(bot)]
