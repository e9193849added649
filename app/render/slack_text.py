"""Text that is safe to post: no mass mentions, split within Slack's limits."""

from __future__ import annotations

import re

# chat.postMessage truncates text past 40,000 characters; Markdown payloads stop at 12,000.
MAX_TEXT = 12_000

_MASS_MENTION = re.compile(r"<!(channel|here|everyone)(\|[^>]*)?>|(?<![\w<])@(channel|here|everyone)\b")
_SUBTEAM = re.compile(r"<!subteam\^[A-Z0-9]+(\|[^>]*)?>")
# How far back an unclosed `<` may hold text back while it streams (`<!subteam^..|label>`).
_MAX_HELD_ANGLE = 200


def escape(text: str) -> str:
    """mrkdwn's control characters, so text shows as written (no links, mentions or markup)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def neutralise_mentions(text: str) -> str:
    """Keep agent output from pinging a whole channel or user group."""

    def plain(match: re.Match[str]) -> str:
        word = match.group(1) or match.group(3)
        return f"@\u200b{word}"

    text = _MASS_MENTION.sub(plain, text)
    return _SUBTEAM.sub("@\u200bgroup", text)


def release_point(text: str) -> int:
    """How much of a still-growing text can be shown now without splitting a mention.

    `neutralise_mentions(text[:n])` is then a prefix of `neutralise_mentions` of any longer
    text: a trailing word holding `@` or `<`, or an unclosed `<!...`, waits for what follows.
    """
    end = len(text)
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    if "@" in text[start:end] or "<" in text[start:end]:
        end = start
    angle = text.rfind("<", 0, end)
    if angle != -1 and text.find(">", angle, end) == -1 and end - angle <= _MAX_HELD_ANGLE:
        end = angle
    return end


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Split at paragraph, then line, then space boundaries; never inside a code fence if avoidable.

    Joining the parts gives back the original text exactly.
    """
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        cut = cut_point(rest, limit)
        parts.append(rest[:cut])
        rest = rest[cut:]
    if rest or not parts:
        parts.append(rest)
    return parts


def cut_point(text: str, limit: int, floor: int | None = None) -> int:
    """Where to end a message holding the start of `text`, at most `limit` characters long.

    Candidates lie after `floor` (default: half the limit): the last paragraph break outside a
    code fence, then the last line break outside a fence, then any line break, then a space;
    else the hard limit. Returns `len(text)` when it fits, and `floor` when nothing past it fits.
    """
    if len(text) <= limit:
        return len(text)
    if floor is None:
        floor = limit // 2
    if floor >= limit:
        return floor
    window = text[:limit]
    fences = _fence_parity(window)
    for sep, outside_only in (("\n\n", True), ("\n", True), ("\n", False), (" ", False)):
        idx = len(window)
        while True:
            idx = window.rfind(sep, 0, idx)
            if idx < 0:
                break
            cut = idx + len(sep)
            if cut <= floor:
                break
            if outside_only and fences(cut):
                continue
            return cut
    return limit


def paragraph_break(text: str, lo: int, hi: int) -> int | None:
    """The last paragraph break outside code fences whose cut lies in `(lo, hi]`, or None."""
    window = text[:hi]
    inside = _fence_parity(window)
    idx = len(window)
    while True:
        idx = window.rfind("\n\n", 0, idx)
        if idx < 0 or idx + 2 <= lo:
            return None
        if not inside(idx + 2):
            return idx + 2


def _fence_parity(window: str) -> _Parity:
    return _Parity([m.start() for m in re.finditer("```", window)])


class _Parity:
    """Whether a position lies inside a ``` code fence (an odd number of fences before it)."""

    def __init__(self, starts: list[int]) -> None:
        self.starts = starts

    def __call__(self, pos: int) -> bool:
        return sum(1 for s in self.starts if s + 3 <= pos) % 2 == 1


def truncate(text: str, limit: int, ellipsis: str = "…") -> str:
    """At most `limit` characters, on one line of readable text."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ellipsis))].rstrip() + ellipsis
