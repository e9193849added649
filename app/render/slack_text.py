"""Text that is safe to post: no mass mentions, split within Slack's limits."""

from __future__ import annotations

import re

# chat.postMessage truncates text past 40,000 characters; Markdown payloads stop at 12,000.
MAX_TEXT = 12_000

_MASS_MENTION = re.compile(r"<!(channel|here|everyone)(\|[^>]*)?>|(?<![\w<])@(channel|here|everyone)\b")
_SUBTEAM = re.compile(r"<!subteam\^[A-Z0-9]+(\|[^>]*)?>")


def neutralise_mentions(text: str) -> str:
    """Keep agent output from pinging a whole channel or user group."""

    def plain(match: re.Match[str]) -> str:
        word = match.group(1) or match.group(3)
        return f"@\u200b{word}"

    text = _MASS_MENTION.sub(plain, text)
    return _SUBTEAM.sub("@\u200bgroup", text)


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split at paragraph, then line, then space boundaries; never inside a code fence if avoidable.

    Joining the parts gives back the original text exactly.
    """
    if len(text) <= limit:
        return [text]
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = _best_cut(window)
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        parts.append(rest)
    return parts


def _best_cut(window: str) -> int:
    floor = len(window) // 2
    # Prefer cutting outside code fences: count fences before each candidate.
    for sep in ("\n\n", "\n", " "):
        idx = len(window)
        while True:
            idx = window.rfind(sep, 0, idx)
            if idx <= floor:
                break
            cut = idx + len(sep)
            if sep != " " and window[:cut].count("```") % 2 == 1:
                continue
            return cut
    return len(window)
