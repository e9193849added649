"""Seeded agent turns for the harness, in the emulator's scenario language (`app.sandbox.agents.scenario`).

Each ticket's question carries a tag (`chaos-7`) that selects its rule. A turn holds messages long
enough to stream many deltas, tool calls that take a while between use and result (built-in and
MCP), on some tickets a tool call waiting on an approval, and on some a message that streams for
longer than the renderer's rotation time. Words carry a serial number unique in the ticket
(`ka17 bo18`), so any four characters of the agent's text name one place in it (see
`compare.MIN_MATCH`); the tool inputs carry a marker (`CHAOSQ7T2`) that the task titles show.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

SYLLABLES = ("ka", "bo", "mi", "tu", "re", "sa", "no", "li", "pe", "du", "fo", "gi", "ha", "ve", "zo", "ru")


class Words:
    """Agent text: sentences of numbered syllables, paragraphs apart."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.serial = 0

    def word(self) -> str:
        self.serial += 1
        return f"{self.rng.choice(SYLLABLES)}{self.serial}"

    def text(self, chars: int) -> str:
        paragraphs: list[str] = []
        size = 0
        while size < chars:
            sentences = []
            for _ in range(self.rng.randint(2, 4)):
                words = [self.word() for _ in range(self.rng.randint(5, 12))]
                sentences.append(" ".join(words).capitalize() + self.rng.choice((".", ".", ",", "?")))
            paragraph = " ".join(sentences)
            paragraphs.append(paragraph)
            size += len(paragraph) + 2
        return "\n\n".join(paragraphs)


@dataclass
class TicketPlan:
    number: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    approval: bool = False
    rotation: bool = False

    @property
    def tag(self) -> str:
        return f"chaos-{self.number}"

    @property
    def question(self) -> str:
        return f"{self.tag} please look into this"

    def rule(self) -> dict[str, Any]:
        return {"match": rf"\b{re.escape(self.tag)}\b", "steps": self.steps, "max_uses": 1}


def _message(rng: random.Random, words: Words, chars: int, seconds: float) -> dict[str, Any]:
    text = words.text(chars)
    deltas = max(8, len(text) // rng.randint(10, 20))
    return {"message": text, "deltas": deltas, "delta_delay": round(seconds / deltas, 4)}


def _tool(n: int, k: int, rng: random.Random, *, ask: bool = False, mcp: bool = False) -> dict[str, Any]:
    marker = f"CHAOSQ{n}T{k}"
    delay = round(rng.uniform(0.6, 1.6), 2)
    if mcp:
        return {
            "mcp_tool": "search_docs", "server": "knowledge_base", "input": {"query": marker},
            "result": f"RESULT {marker} found", "permission": "allow", "result_delay": delay,
        }
    step: dict[str, Any] = {
        "tool": "web_search", "input": {"query": marker}, "result": f"RESULT {marker} found",
        "permission": "ask" if ask else "allow", "result_delay": delay,
    }
    return step


def plan_ticket(number: int, rng: random.Random, *, rotate_after: float, approval: bool, rotation: bool,
                scale: float = 1.0) -> TicketPlan:
    """One ticket's turn: message, tool, message, [approval tool, message], [long message], MCP
    tool, last message. `scale` stretches every duration (a loaded machine wants slower turns)."""
    words = Words(rng)
    plan = TicketPlan(number, approval=approval, rotation=rotation)
    steps = plan.steps
    steps.append(_message(rng, words, rng.randint(300, 600), rng.uniform(1.5, 2.5) * scale))
    steps.append(_tool(number, 1, rng))
    steps.append(_message(rng, words, rng.randint(200, 500), rng.uniform(1.0, 2.0) * scale))
    if approval:
        steps.append(_tool(number, 2, rng, ask=True))
        steps.append(_message(rng, words, rng.randint(200, 400), rng.uniform(1.0, 2.0) * scale))
    if rotation:
        seconds = rotate_after * 1.6 + 1.0
        steps.append(_message(rng, words, int(seconds * 120), seconds))
    steps.append(_tool(number, 3, rng, mcp=True))
    steps.append(_message(rng, words, rng.randint(200, 500), rng.uniform(1.0, 2.0) * scale))
    return plan


def scenario(plans: list[TicketPlan]) -> dict[str, Any]:
    return {"rules": [p.rule() for p in plans]}
