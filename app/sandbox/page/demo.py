"""The scripted demo agent of `support-agent sandbox` (used when there is no ANTHROPIC_API_KEY).

A scenario for the Managed Agents emulator: every turn thinks, searches our real knowledge
base over MCP (so the tool timeline shows a real call and its result), then streams a canned
answer and reports usage, so the cost footer has something to show. A few phrases pick other
turns: past tickets (a tool call that waits for Approve / Deny) and a slow answer (to try Stop).

Outcomes (issue 18): the demo workspace has a #help channel, served by the customer-facing
`customers` environment, where the demo config turns outcomes on. A ticket there starts with a
`user.define_outcome`; the answer is held back from the requester until the grader's one check
("Checking the answer against the customer answer rubric", `evaluate` below) says satisfied. In
#support no outcome is defined, so the same `evaluate` step grades nothing (the emulator emits no
evaluation without an outcome being worked on).
"""

from __future__ import annotations

from typing import Any

import yaml

USAGE: dict[str, Any] = {
    "input_tokens": 3200,
    "output_tokens": 420,
    "cache_read_input_tokens": 1800,
    "active_seconds": 7.5,
}

# The grader's one check of an answer (a no-op where no outcome was defined, e.g. in #support).
CHECK: dict[str, Any] = {
    "evaluate": "satisfied",
    "explanation": "The answer states the policy, says what to do next and cites the knowledge base.",
    "grader_usage": {"input_tokens": 2400, "output_tokens": 180},
}
HELP_CHANNEL = ("C0004", "help")  # served by the `customers` environment (support-agent.yml)
DEMO_RUBRIC: dict[str, Any] = {
    "name": "customer answer",
    "description": "A reply a customer can act on without a follow-up question.",
    "rubric": "States the policy that applies, says what the customer should do next, cites the "
              "knowledge-base document it relied on, and asks for no passwords or card numbers.",
    "max_iterations": 3,
}

KB_SEARCH: dict[str, Any] = {
    "mcp_tool": "search_docs",
    "server": "knowledge_base",
    "input": {"query": "{user_text}"},
    "result": None,  # a real MCP call to the app's knowledge_base server
}

HELP = (
    "I'm the sandbox's **scripted demo agent**, so my answers are canned. Try asking about "
    "**refunds**, **password reset or SSO**, **data export**, **API rate limits** or **invoices**; "
    "ask me to **check past tickets** to see a tool call wait for *Approve* / *Deny*; or ask for a "
    "**slow** answer and stop it with ❌. In **#help**, tell me to **remember** something about your "
    "setup, then ask **what do you remember?** in a new ticket. Set `ANTHROPIC_API_KEY` and restart "
    "the sandbox to talk to the real agent."
)

ANSWERS: list[tuple[str, str]] = [
    (
        r"(?i)refund|cancel",
        "Annual plans are refunded in full within **30 days** of the first payment or the latest "
        "renewal; after that we refund the unused whole months, minus a 10% early-termination fee. "
        "Monthly plans can be cancelled at any time, but partial months are not refunded.\n\n"
        "Refunds go back to the original payment method: cards within 5 to 10 business days, bank "
        "transfers within 10.\n\nSource: [Refunds and cancellations](https://help.example.com/billing/refunds)",
    ),
    (
        r"(?i)password|sso|saml|2fa|two-factor|sign.?in|log.?in",
        "Use **Forgot password?** on the sign-in page: the reset link is valid for 60 minutes and "
        "works once. Lost your two-factor device? Sign in with a recovery code, or ask a workspace "
        "owner to reset your 2FA from **Members → ⋯ → Reset two-factor**.\n\n"
        "Source: [Password reset, two-factor authentication and SSO](https://help.example.com/account/sign-in)",
    ),
    (
        r"(?i)export|csv|parquet|gdpr",
        "Any dashboard or table exports to CSV or Parquet from **⋯ → Export**; exports over 100,000 "
        "rows run in the background and email you a link valid for 7 days. A full workspace export "
        "(**Settings → Data → Full export**) usually finishes within an hour.\n\n"
        "Source: [Exporting your data](https://docs.example.com/data/export)",
    ),
    (
        r"(?i)rate.?limit|429|api",
        "The API allows **600 requests per minute per key** on Team plans and 3,000 on Business and "
        "Enterprise. Over the limit you get `429 Too Many Requests` with a `Retry-After` header: wait "
        "that many seconds before retrying.\n\n"
        "Source: [API rate limits and error codes](https://docs.example.com/api/rate-limits)",
    ),
    (
        r"(?i)invoice|vat|receipt|billing|payment",
        "Workspace owners and billing admins download invoices as PDF from **Settings → Billing → "
        "Invoices**; the invoice is also the receipt. An issued invoice cannot be edited: we issue "
        "a credit note and a corrected one.\n\n"
        "Source: [Invoices, receipts and payment methods](https://help.example.com/billing/invoices)",
    ),
]


# The knowledge-base query the agent makes for each canned answer's topic when all it has is the
# thread (after a Reopen): never the text of our reopen prompt.
TOPIC_QUERIES: dict[str, str] = {
    ANSWERS[0][0]: "refunds and cancellations",
    ANSWERS[1][0]: "password reset, two-factor and SSO",
    ANSWERS[2][0]: "exporting data",
    ANSWERS[3][0]: "API rate limits",
    ANSWERS[4][0]: "invoices and receipts",
}

# The prompts the app sends on Reopen (app/slack/controls.py, `reopen`): on the same session, or
# on a new one with the thread so far, where the requester's lines read `[<@U123>] text`.
REOPEN_SAME_SESSION = r"\AThe ticket was reopened by <@"
REOPEN_NEW_SESSION = r"\ATicket #\d+ was reopened by <@"
REQUESTER_LINE = r"(?:^|\n)\[<@[UW][A-Z0-9]+>\][^\n]*?"


def _answer_turn(answer: str, query: str = "{user_text}") -> list[dict[str, Any]]:
    """Think, search the knowledge base for `query` (by default the question as typed), answer."""
    return [
        {"thinking": {}},
        {"sleep": 0.8},
        {**KB_SEARCH, "input": {"query": query}},
        {"thinking": {}},
        {"message": answer, "deltas": 14, "delta_delay": 0.15},
        {"usage": USAGE},
        CHECK,
    ]


def reopen_rules() -> list[dict[str, Any]]:
    """After a Reopen the message is our prompt, not a question: the demo never searches for the
    prompt's text. On a new session it finds the requester's question in the thread and searches
    for its topic; on the same session (or with no known topic) it asks what is still needed."""
    still_needed = [
        {"thinking": {}},
        {"message": "Picking this up again. Is the problem solved? If not, tell me what is still needed "
                    "and I'll carry on from here.", "deltas": 4, "delta_delay": 0.1},
        {"usage": USAGE},
        CHECK,
    ]
    rules: list[dict[str, Any]] = [{"match": REOPEN_SAME_SESSION, "steps": still_needed}]
    for pattern, answer in ANSWERS:
        topic = pattern.removeprefix("(?i)")
        rules.append({
            "match": f"(?i){REOPEN_NEW_SESSION}.*?{REQUESTER_LINE}(?:{topic})",
            "steps": _answer_turn(answer, TOPIC_QUERIES[pattern]),
        })
    rules.append({"match": REOPEN_NEW_SESSION, "steps": still_needed})
    return rules


# Memory (issue 19): in #help a ticket told to "remember ..." writes it to the demo customer's
# memory store; a later ticket asked "what do you remember?" reads it back (staff see which ticket
# taught it with `/support memory #N`, and correct or forget it on App Home). In #support, the
# internal environment has only its read-only product store: the write is refused, and says so.
MEMORY_CUSTOMERS: dict[str, Any] = {"demo-customer": {"name": "Demo Customer", "channels": [HELP_CHANNEL[0]]}}
MEMORY_RULES: list[dict[str, Any]] = [
    {"match": r"(?i)^\W*(please\s+)?remember\b", "steps": [
        {"thinking": {}},
        {"memory": "write", "path": "/setup.md", "content": "{user_text}"},
        {"message": "Memory: {last_tool_result}\n\nThe next ticket from this channel's customer starts with "
                    "it: ask me *what do you remember?* in a new ticket.", "deltas": 6, "delta_delay": 0.1},
        {"usage": USAGE},
        CHECK,
    ]},
    {"match": r"(?i)\b(what|do) you remember\b", "steps": [
        {"thinking": {}},
        {"memory": "read", "path": "/setup.md"},
        {"message": "From this customer's memory (written by an earlier ticket):\n\n> {last_tool_result}",
         "deltas": 6, "delta_delay": 0.1},
        {"usage": USAGE},
        CHECK,
    ]},
]


def demo_memory(data: dict[str, Any]) -> None:
    """Memory on in the demo config: a store per customer in #help, a product store each."""
    data["customers"] = {**(data.get("customers") or {}), **MEMORY_CUSTOMERS}
    for name, env in (data.get("environments") or {}).items():
        memory: dict[str, Any] = {"enabled": True, "product": {}}
        if name == "customers":
            memory |= {"customers": {"access": "read_write"}, "forget_with_retention": True}
        env["memory"] = memory


def demo_scenario() -> dict[str, Any]:
    """The scenario posted to the Managed Agents emulator (plain JSON)."""
    rules: list[dict[str, Any]] = [*MEMORY_RULES, *reopen_rules(),
        {
            "match": r"(?i)past tickets?|ticket history|similar tickets?|approv",
            "steps": [
                {"thinking": {}},
                {"sleep": 0.5},
                {
                    "mcp_tool": "search_tickets",
                    "server": "ticket_history",
                    "input": {"query": "{user_text}"},
                    "result": None,
                    "permission": "ask",
                    "on_deny": [
                        {"message": "Understood: I won't search past tickets. Ask me anything else.", "deltas": 4},
                        {"usage": USAGE},
                        CHECK,
                    ],
                },
                {
                    "message": "I searched the resolved-ticket history (a tool a human had to approve, since "
                    "past tickets can hold customer data). What `ticket_history.search_tickets` returned:"
                    "\n\n```\n{last_tool_result}\n```\n\n(An empty result means no ticket was resolved yet: "
                    "resolve one with the **Resolve** button and ask again.)",
                    "deltas": 8,
                    "delta_delay": 0.15,
                },
                {"usage": USAGE},
                CHECK,
            ],
        },
        {
            "match": r"(?i)\bslow\b|\blong\b",
            "steps": [
                {"thinking": {}},
                KB_SEARCH,
                {"sleep": 2.0},
                {
                    "message": "This is a deliberately slow answer, streamed a few words at a time so there "
                    "is time to stop it: react with ❌ on your question (or press *Stop*) and the agent is "
                    "interrupted at once; the thread says who stopped it, and a reply continues the "
                    "same session. " * 3,
                    "deltas": 60,
                    "delta_delay": 0.4,
                },
                {"usage": USAGE},
                CHECK,
            ],
        },
    ]
    rules += [{"match": pattern, "steps": _answer_turn(answer)} for pattern, answer in ANSWERS]
    rules.append({
        "match": None,
        "steps": _answer_turn("I searched the knowledge base for “{user_text}”, the results are in the "
                              "timeline above.\n\n" + HELP),
    })
    return {"rules": rules}


def demo_config(text: str) -> str:
    """The sandbox's config for the demo agent: outcomes on in the customer-facing environment."""
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("# Written by"))
    data = yaml.safe_load(text) or {}
    customers = (data.get("environments") or {}).get("customers")
    if customers is not None:
        customers["outcomes"] = {"enabled": True, "default": dict(DEMO_RUBRIC)}
    demo_memory(data)
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def demo_workspace(state: Any) -> None:
    """#help in the emulated workspace (alice and bob in it, the bot too): outcomes show there."""
    channel_id, name = HELP_CHANNEL
    if state.find_channel(channel_id) is None:
        state.add_channel(channel_id, name, members=["U0001", "U0002"], bot_member=True)
