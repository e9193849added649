"""Plain words for agent events: task titles, short outputs, errors, stop reasons."""

from __future__ import annotations

import json
from typing import Any

from app.render.slack_text import neutralise_mentions, truncate

TITLE_LIMIT = 120
OUTPUT_LIMIT = 200
ARG_LIMIT = 60

# The argument that says what a call is about, in order of preference.
_KEY_ARGS = (
    "query", "q", "question", "search", "command", "cmd", "url", "path", "file_path",
    "pattern", "title", "subject", "name", "id", "ticket_id", "issue", "key", "text", "message",
)

_BUILTIN: dict[str, str] = {
    "bash": "Run {arg}",
    "read": "Read {arg}",
    "write": "Write {arg}",
    "edit": "Edit {arg}",
    "glob": "Find files matching {arg}",
    "grep": "Search files for {arg}",
    "web_search": "Search the web for {arg}",
    "web_fetch": "Fetch {arg}",
}

_ERRORS: dict[str, str] = {
    "unknown_error": "Something went wrong on the agent's side",
    "model_overloaded_error": "The model is overloaded",
    "model_rate_limited_error": "The model is rate limited",
    "model_request_failed_error": "A request to the model failed",
    "mcp_connection_failed_error": "Could not reach the {server} tools",
    "mcp_authentication_failed_error": "The {server} tools refused the agent's credentials",
    "billing_error": "The agent's billing account has a problem",
    "credential_host_unreachable_error": "A credential's host could not be reached",
    "tool_use_limit_reached_error": "This turn used up its tool calls",
    "compaction_limit_reached_error": "The conversation grew too long to compact",
    "repository_authentication_error": "A repository refused the agent's credentials",
    "repository_forbidden_error": "A repository refused access",
    "repository_not_found_error": "A repository was not found",
    "repository_checkout_error": "A repository could not be checked out",
    "repository_clone_error": "A repository could not be cloned",
}

_RETRY: dict[str, str] = {
    "retrying": "retrying",
    "exhausted": "this turn was stopped; send a new message to try again",
    "terminal": "the session cannot go on",
}

STOP_NOTES: dict[str, str] = {
    "budget_reached": ":money_with_wings: This ticket's budget is used up, so the agent stopped.",
    "refusal": ":no_entry_sign: The agent declined to go on with this request.",
    "retries_exhausted": ":warning: The agent gave up on this turn after repeated errors.",
    "terminated": ":octagonal_sign: The agent session has ended.",
}


# Ends of a turn that need no note: an answer, an approval asked for, our own hand-off or failure.
QUIET_STOPS = frozenset({None, "end_turn", "requires_action", "shutdown", "failed"})


def stop_note(reason: str | None) -> str | None:
    """The note a turn's last message carries for its stop reason (one newer than this SDK too)."""
    if reason in QUIET_STOPS:
        return None
    return STOP_NOTES.get(reason or "") or f":pause_button: The agent stopped ({humanise(reason or '')})."


def humanise(name: str) -> str:
    return name.replace("__", " ").replace("_", " ").replace("-", " ").strip() or name


def key_argument(args: Any) -> str | None:
    if not isinstance(args, dict) or not args:
        return None
    for key in _KEY_ARGS:
        value = args.get(key)
        if isinstance(value, str | int | float) and not isinstance(value, bool) and str(value).strip():
            return str(value)
    for value in args.values():
        if isinstance(value, str) and value.strip():
            return value
    return None


def _quoted(arg: str | None, code: bool = False) -> str:
    if not arg:
        return ""
    arg = truncate(arg, ARG_LIMIT)
    if code:
        return "`" + arg.replace("`", "'") + "`"
    return f"“{arg}”"


def tool_title(event: Any) -> str:
    """`github · search issues: “vpn outage”`, `Run `ls -la``, `lookup ticket: “42”`."""
    etype = getattr(event, "type", "")
    name = str(getattr(event, "name", "") or "tool")
    arg = key_argument(getattr(event, "input", None))
    if etype == "agent.mcp_tool_use":
        server = str(getattr(event, "mcp_server_name", "") or "tools")
        title = f"{server} · {humanise(name)}"
        if arg:
            title += f": {_quoted(arg)}"
    elif etype == "agent.tool_use" and name in _BUILTIN:
        code = name in ("bash", "glob")
        shown = _quoted(arg, code=code) if arg else "a command" if name == "bash" else ""
        title = _BUILTIN[name].format(arg=shown).strip()
    else:
        title = humanise(name)
        if arg:
            title += f": {_quoted(arg)}"
    if getattr(event, "session_thread_id", None):
        title += " (subagent)"
    return neutralise_mentions(truncate(title, TITLE_LIMIT))


def result_output(event: Any) -> str:
    """A one-line summary of a tool result's content."""
    blocks = list(getattr(event, "content", None) or [])
    texts = [str(getattr(b, "text", "") or "") for b in blocks if getattr(b, "type", None) == "text"]
    summary = json_summary(texts) if texts and len(texts) == len(blocks) else None
    if summary:
        return neutralise_mentions(truncate(summary, OUTPUT_LIMIT))
    for block in blocks:
        btype = getattr(block, "type", None)
        if btype == "text":
            text = str(getattr(block, "text", "") or "")
            line = next((ln for ln in text.splitlines() if ln.strip()), "")
            if line:
                return neutralise_mentions(truncate(line, OUTPUT_LIMIT))
        elif btype in ("image", "document", "search_result"):
            return f"[{btype.replace('_', ' ')}]"
    return "failed" if getattr(event, "is_error", False) else "done"


def json_summary(texts: list[str]) -> str | None:
    """Structured results (MCP tools answer JSON: one object per text block, or several in one) in words:
    "2 results: <title>; <title>", or the one object on a line. None when any text is not JSON."""
    items: list[Any] = []
    decoder = json.JSONDecoder()
    for text in texts:
        rest = text.strip()
        if not rest.startswith(("{", "[")):
            return None
        while rest:  # one value, or several one after another (one per line, say)
            try:
                value, end = decoder.raw_decode(rest)
            except ValueError:
                return None
            items.extend(value if isinstance(value, list) else [value])
            rest = rest[end:].lstrip()
    if not items:
        return "no results"
    labels = [
        str(label)
        for item in items
        if isinstance(item, dict) and (label := item.get("title") or item.get("name") or item.get("ticket_ref"))
    ]
    if len(items) == 1 and not labels:
        return json.dumps(items[0], ensure_ascii=False, separators=(", ", ": "))
    count = f"{len(items)} result{'s' if len(items) != 1 else ''}"
    return f"{count}: {'; '.join(labels)}" if labels else count


def input_preview(args: Any, limit: int = 600) -> str:
    """The call's arguments as compact JSON, for an approval prompt."""
    try:
        text = json.dumps(args, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = str(args)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return neutralise_mentions(text.replace("```", "'''"))


def error_title(error: Any) -> tuple[str, str]:
    """(`title`, `task status`) for a `session.error` event's `error`."""
    etype = str(getattr(error, "type", "") or "unknown_error")
    server = str(getattr(error, "mcp_server_name", "") or "MCP")
    words = _ERRORS.get(etype, _ERRORS["unknown_error"]).format(server=server)
    retry = getattr(getattr(error, "retry_status", None), "type", None) or "terminal"
    status = "in_progress" if retry == "retrying" else "error"
    return neutralise_mentions(truncate(f"{words}: {_RETRY.get(retry, retry)}", TITLE_LIMIT)), status
