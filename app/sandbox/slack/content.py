"""Shared pieces of the Slack emulator's Web API: errors, call context, Slack's content limits.

Limits enforced: message `text` <= 40,000 chars (`msg_too_long`); `markdown_text` <= 12,000
per call, counting `markdown_text` chunks of stream calls (`msg_too_long`); `markdown_text`
together with `text`/`blocks` (`markdown_text_conflict`); <= 50 blocks (100 in views), section
text <= 3,000, header <= 150, fields <= 10 x 2,000, actions <= 25 / context <= 10 /
context_actions <= 5 elements, ids <= 255 (`invalid_blocks`); `markdown` blocks <= 12,000
in total (`msg_blocks_too_long`); chunk shapes (`invalid_chunks`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from app.sandbox.slack.state import SlackState

TEXT_LIMIT = 40_000
MARKDOWN_LIMIT = 12_000
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
SECTION_TEXT_LIMIT = 3_000
TRIGGER_LIFETIME = 3.0
TASK_STATUSES = {"pending", "in_progress", "complete", "error"}
JSON_FIELDS = (
    "blocks", "attachments", "chunks", "metadata", "view", "loading_messages", "prompts",
)


class ApiError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class Ctx:
    state: SlackState
    caller: str
    params: dict[str, Any]
    posted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def get(self, key: str, default: Any = None) -> Any:
        value = self.params.get(key, default)
        return default if value is None else value

    def require(self, key: str, error: str | None = None) -> Any:
        value = self.params.get(key)
        if value in (None, ""):
            # Slack: a missing required argument is the generic invalid_arguments (contract.py GENERIC_ERRORS).
            why = f"[ERROR] missing required field: {key}"
            raise ApiError(error or "invalid_arguments", response_metadata={"messages": [why]})
        return value

    def flag(self, key: str) -> bool:
        value = self.params.get(key)
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        return bool(value)


def decode_json_fields(params: dict[str, Any]) -> dict[str, Any]:
    """Form bodies carry structured arguments as JSON strings; decode them in place."""
    for key in JSON_FIELDS:
        value = params.get(key)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = _Invalid(value)
    return params


class _Invalid(str):
    """A structured argument that was not valid JSON."""


# ---- content checks -------------------------------------------------------------------


def text_len(obj: Any) -> int:
    if isinstance(obj, dict):
        return len(str(obj.get("text", "")))
    return len(str(obj or ""))


def _invalid_blocks(why: str) -> ApiError:
    meta = {"messages": [f"[ERROR] {why}"]}
    return ApiError("invalid_blocks", errors=[why], response_metadata=meta)


def _check_select(menu: dict[str, Any], where: str) -> None:
    """Slack's static_select limits: 1-100 options, text up to 75 and value up to 150
    characters, and an initial option that is one of the options.

    SDK: slack_sdk models/blocks/block_elements.py StaticSelectElement (options_max_length 100;
    initial_option "exactly matches one of the options"), basic_components.py Option (label 75,
    value 150). The minimum of 1 option is unsourced (kept; docs/emulator-rules.md)."""
    options = menu.get("options") or []
    if not 1 <= len(options) <= 100:
        raise _invalid_blocks(f"must have 1 to 100 options {where}/options")
    for option in options:
        if text_len(option.get("text")) > 75 or len(str(option.get("value", ""))) > 150:
            raise _invalid_blocks(f"option too long {where}/options")
    initial = menu.get("initial_option")
    if initial is not None and initial not in options:
        raise _invalid_blocks(f"initial_option must match one of the options {where}/initial_option")


def check_blocks(blocks: Any, *, max_blocks: int = MAX_BLOCKS) -> list[dict[str, Any]]:
    # Slack: invalid_blocks_format "is not a valid JSON object or doesn't match the Block Kit syntax",
    # invalid_blocks, msg_blocks_too_long (chat.postMessage catalog). Limits: 50 blocks a message
    # (slack-platform.md section 0 item 14 [docs]), 100 in a view (slack_sdk View.blocks_max_length); per block
    # slack_sdk models/blocks/blocks.py: block_id 255, SectionBlock text 3000 / fields 10 x 2000,
    # HeaderBlock 150, Actions 25 / Context 10 / ContextActions 5 elements, action_id 255
    # (block_elements.py); markdown blocks 12,000 in total (slack-platform.md section 6 [docs, issue]).
    if isinstance(blocks, _Invalid) or not isinstance(blocks, list):
        raise ApiError("invalid_blocks_format")
    if len(blocks) > max_blocks:
        raise _invalid_blocks(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    markdown_total = 0
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}]"
        if not isinstance(block, dict) or not block.get("type"):
            raise _invalid_blocks(f"missing required field: type {where}")
        kind = block["type"]
        if len(str(block.get("block_id", ""))) > 255:
            raise _invalid_blocks(f"must be less than 256 characters {where}/block_id")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                raise _invalid_blocks(f"must provide text or fields {where}")
            if text_len(block.get("text")) > SECTION_TEXT_LIMIT:
                raise _invalid_blocks(f"must be less than 3001 characters {where}/text")
            fields = block.get("fields") or []
            if len(fields) > 10 or any(text_len(f) > 2000 for f in fields):
                raise _invalid_blocks(f"invalid fields {where}/fields")
        elif kind == "header" and text_len(block.get("text")) > 150:
            raise _invalid_blocks(f"must be less than 151 characters {where}/text")
        elif kind == "markdown":
            markdown_total += len(str(block.get("text", "")))
        else:
            limit = {"actions": 25, "context": 10, "context_actions": 5}.get(kind)
            elements = block.get("elements")
            if limit is not None and (not elements or len(elements) > limit):
                raise _invalid_blocks(f"must have 1 to {limit} elements {where}/elements")
            for el in elements or []:
                if isinstance(el, dict) and len(str(el.get("action_id", ""))) > 255:
                    raise _invalid_blocks(f"action_id too long {where}/elements")
                if isinstance(el, dict) and el.get("type") == "static_select":
                    _check_select(el, where)
        if isinstance(block.get("accessory"), dict) and block["accessory"].get("type") == "static_select":
            _check_select(block["accessory"], where)
    if markdown_total > MARKDOWN_LIMIT:
        raise ApiError("msg_blocks_too_long")
    return blocks


def check_chunks(chunks: Any) -> list[dict[str, Any]]:
    # Slack: the stream methods document invalid_chunks; shapes from slack_sdk models/messages/chunk.py
    # (MarkdownTextChunk text, TaskUpdateChunk id/title/status in pending|in_progress|complete|error,
    # PlanUpdateChunk title, BlocksChunk blocks).
    if not isinstance(chunks, list):
        raise ApiError("invalid_chunks")
    for chunk in chunks:
        if not isinstance(chunk, dict):
            raise ApiError("invalid_chunks")
        kind = chunk.get("type")
        if kind == "markdown_text":
            ok = isinstance(chunk.get("text"), str)
        elif kind == "task_update":
            ok = bool(chunk.get("id")) and bool(chunk.get("title")) and (
                chunk.get("status") in TASK_STATUSES
            )
        elif kind == "plan_update":
            ok = bool(chunk.get("title"))
        elif kind == "blocks":
            check_blocks(chunk.get("blocks"))
            ok = True
        else:
            ok = False
        if not ok:
            raise ApiError("invalid_chunks", errors=[f"invalid chunk: {kind}"])
    return chunks


def check_content(ctx: Ctx, *, need_content: bool = True) -> None:
    """Slack's content rules for chat.postMessage / chat.update / chat.postEphemeral."""
    text, md = ctx.params.get("text"), ctx.params.get("markdown_text")
    blocks = ctx.params.get("blocks")
    # Slack: markdown_text_conflict ("cannot be used in conjunction with `blocks` or `text`") and
    # no_text are documented by chat.postMessage/update/postEphemeral; msg_too_long by update/postEphemeral.
    if md is not None and (text or blocks):
        raise ApiError("markdown_text_conflict")
    if need_content and not (text or md or blocks or ctx.params.get("attachments")):
        raise ApiError("no_text")
    if text is not None and len(str(text)) > TEXT_LIMIT:
        # Not refused: Slack truncates text past 40,000 characters (api.slack.com changelog
        # 2018-04 "truncating really long messages"; chat.postMessage documents no error for it).
        ctx.params["text"] = str(text)[:TEXT_LIMIT]
    if md is not None and len(str(md)) > MARKDOWN_LIMIT:
        raise ApiError("msg_too_long")
    if blocks is not None:
        check_blocks(blocks)
