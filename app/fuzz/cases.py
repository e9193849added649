"""Fuzz cases for the web role's public edges, drawn by Hypothesis from one seed.

A case is what a hostile or broken client could send: to `/slack/events` (events,
block_actions, view submissions, shortcuts, slash commands; unsigned, badly signed, signed but
malformed, huge), to `/webhooks/anthropic` and to `/mcp/<server>`. Each says whether the app
must refuse it (`expect="reject"`: 4xx, one log line, no state) or may accept it (well-formed
and correctly signed: any non-5xx). Signatures are computed at send time, with the clock then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

Auth = Literal["valid", "none", "bad", "stale", "garbage_ts"]
Target = Literal["slack", "webhook", "mcp"]

CANARY = "fz-canary-51ab"  # every fuzzed body carries it; a log line quoting a body shows it
ACTION_IDS = (
    "ticket_stop", "ticket_resolve", "ticket_reopen", "ticket_trace", "ticket_trace_page",
    "ticket_trace_console", "home_filter_status", "home_filter_channel", "home_filter_all_channels",
    "home_refresh", "feedback", "tool_approve", "tool_deny", "budget_raise", "unknown_action",
)
VIEW_CALLBACKS = ("tool_deny_reason", "ticket_trace_view", "unknown_view")
EVENT_TYPES = (
    "app_mention", "message", "reaction_added", "app_home_opened", "member_left_channel",
    "channel_archive", "channel_shared", "channel_unshared", "app_uninstalled", "tokens_revoked",
    "user_change", "file_shared",
)
WEBHOOK_TYPES = (
    "session.status_idled", "session.requires_action", "session.budget_reached",
    "session.status_terminated", "session.created", "unknown",
)


@dataclass
class Case:
    target: Target
    path: str
    body: bytes = b""
    content_type: str = "application/json"
    auth: Auth = "valid"
    expect: Literal["reject", "accept"] = "accept"
    huge: int = 0  # bytes of filler sent instead of `body` (made at send time, never kept)
    declared_length: int | None = None  # a Content-Length that lies (announces more)
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""


# -- building blocks ------------------------------------------------------------------------

ids = st.sampled_from(["C0SUPPORT", "C0HELP", "CSHARED01", "D0DM00001", "U0ALICE", "U0BOB", "T0TEAM", ""])
nonempty_ids = st.sampled_from(["C0SUPPORT", "C0HELP", "CSHARED01", "D0DM00001", "U0ALICE", "U0BOB"])
short = st.text(max_size=20)
scalars: st.SearchStrategy[Any] = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | short
junk: st.SearchStrategy[Any] = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(short, inner, max_size=4), max_leaves=6
)
# A value of a field: usually the right type, sometimes anything at all.
def maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(good, good, good, junk)


def ts() -> st.SearchStrategy[str]:
    return st.integers(1_700_000_000, 1_800_000_000).map(lambda n: f"{n}.{n % 999999:06d}")


def event_body(etype: str, event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {"token": "x", "team_id": "T0TEAM", "api_app_id": "A0APP", "type": "event_callback",
            "event": event, "event_id": event_id, "event_time": 1_700_000_000,
            "authorizations": [{"team_id": "T0TEAM", "user_id": "U0BOT", "is_bot": True}]}


@st.composite
def slack_event(draw: st.DrawFn, strict: bool) -> dict[str, Any]:
    v = (lambda s: s) if strict else maybe
    etype = draw(st.sampled_from(EVENT_TYPES))
    event: dict[str, Any] = {
        "type": etype,
        "channel": draw(v(ids)),
        "user": draw(v(ids)),
        "text": draw(v(st.text(max_size=200).map(lambda t: f"<@U0BOT> {t} {CANARY}"))),
        "ts": draw(v(ts())),
    }
    if draw(st.booleans()):
        event["thread_ts"] = draw(v(ts()))
    if etype == "reaction_added":
        event["reaction"] = draw(v(st.sampled_from(["x", "eyes"])))
        event["item"] = draw(v(st.fixed_dictionaries({"type": st.just("message"), "channel": ids, "ts": ts()})))
    if draw(st.booleans()):
        event["subtype"] = draw(v(st.sampled_from(["bot_message", "message_changed", "thread_broadcast"])))
    return event_body(etype, event, "Ev" + draw(st.text("ABCDEFGH0123456789", min_size=8, max_size=12)))


@st.composite
def interactive(draw: st.DrawFn, strict: bool) -> dict[str, Any]:
    v = (lambda s: s) if strict else maybe
    kind = draw(st.sampled_from(["block_actions", "view_submission", "view_closed", "shortcut", "message_action"]))
    body: dict[str, Any] = {
        "type": kind,
        "team": draw(v(st.fixed_dictionaries({"id": st.just("T0TEAM")}))),
        "user": draw(v(st.fixed_dictionaries({"id": nonempty_ids, "team_id": st.just("T0TEAM")}))),
        "api_app_id": "A0APP",
        "trigger_id": draw(v(st.text("0123456789.abcdef", min_size=5, max_size=20))),
        "response_url": "http://127.0.0.1:9/never",
    }
    if kind == "block_actions":
        action = {"action_id": draw(st.sampled_from(ACTION_IDS)), "block_id": "b",
                  "value": draw(v(st.text(max_size=60) | st.just("T0TEAM-1"))), "type": "button"}
        body["actions"] = draw(v(st.lists(st.just(action), min_size=1, max_size=2)))
        body["channel"] = draw(v(st.fixed_dictionaries({"id": ids})))
        body["container"] = draw(v(st.fixed_dictionaries({"channel_id": ids, "message_ts": ts()})))
        body["message"] = draw(v(st.fixed_dictionaries({"ts": ts(), "text": short})))
    elif kind.startswith("view"):
        body["view"] = draw(v(st.fixed_dictionaries({
            "id": st.just("V0VIEW"), "type": st.just("modal"), "callback_id": st.sampled_from(VIEW_CALLBACKS),
            "private_metadata": maybe(st.text(max_size=80)),
            "state": st.fixed_dictionaries({"values": st.just({"b": {"reason": {"type": "plain_text_input",
                                                                                  "value": CANARY}}})}),
        })))
    else:
        body["callback_id"] = draw(v(st.sampled_from(["open_ticket", "unknown"])))
    return body


@st.composite
def command_form(draw: st.DrawFn, strict: bool) -> bytes:
    from urllib.parse import urlencode

    v = (lambda s: s) if strict else (lambda s: st.one_of(s, s, st.just(None)))
    text = draw(st.sampled_from(["help", "status", "cost", "", "trace #1"]) | st.text(max_size=120))
    fields = {
        "command": draw(v(st.sampled_from(["/support", "/other"]))),
        "text": f"{text} {CANARY}" if text not in ("help", "status", "cost", "") else text,
        "team_id": "T0TEAM",
        "channel_id": draw(v(nonempty_ids)),
        "user_id": draw(v(nonempty_ids)),
        "trigger_id": draw(v(st.text("0123456789.abcdef", min_size=5, max_size=20))),
        "response_url": "http://127.0.0.1:9/never",
    }
    return urlencode({k: val for k, val in fields.items() if val is not None}).encode()


# -- the cases ------------------------------------------------------------------------------

def _form_payload(payload: Any) -> bytes:
    from urllib.parse import urlencode

    return urlencode({"payload": json.dumps(payload)}).encode()


MALFORMED = (
    b'{"type": ', b"[1,2]", b"payload=null", b"payload=%7B", b"payload=[]", b"null", b"{}",
    b'{"type":"event_callback"}', b'{"type":"event_callback","event":{}}',
    b'{"type":"block_actions","user":null,"actions":{}}', b"\xff\xfe\x00garbage", b"a=1&a=2",
    b'{"type":"url_verification"}', b'{"type":"view_submission","view":[]}', b"=&&==",
)


@st.composite
def slack_case(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from(["valid", "valid", "malformed", "junkshape", "unsigned", "badsig", "huge"]))
    path = draw(st.sampled_from(["/slack/events", "/slack/events", "/slack/interactive", "/slack/commands"]))
    kind = draw(st.sampled_from(["event", "interactive", "command"]))
    strict = mode != "junkshape"
    if kind == "event":
        body, ctype = json.dumps(draw(slack_event(strict))).encode(), "application/json"
    elif kind == "interactive":
        body, ctype = _form_payload(draw(interactive(strict))), "application/x-www-form-urlencoded"
    else:
        body, ctype = draw(command_form(strict)), "application/x-www-form-urlencoded"
    if mode == "valid":
        return Case("slack", path, body, ctype, "valid", "accept", label=f"slack:{kind}")
    if mode == "junkshape":  # signed, right envelope, fields of any type: refused or accepted, never 5xx
        return Case("slack", path, body, ctype, "valid", "accept", label=f"slack:{kind}:junk")
    if mode == "malformed":
        raw = draw(st.sampled_from(MALFORMED) | st.binary(max_size=200) | st.builds(_deep, st.integers(40, 3000)))
        return Case("slack", path, raw + CANARY.encode() if raw.startswith(b"payload") else raw,
                    draw(st.sampled_from([ctype, "application/json", "text/plain"])), "valid", "reject",
                    label="slack:malformed")
    if mode == "unsigned":
        auth: Auth = draw(st.sampled_from(["none", "garbage_ts", "stale"]))
        return Case("slack", path, body, ctype, auth, "reject", label=f"slack:{auth}")
    if mode == "badsig":
        return Case("slack", path, body, ctype, "bad", "reject", label="slack:badsig")
    size = draw(st.sampled_from([1_200_000, 3_000_000]))
    lie = draw(st.sampled_from([None, 1_000_000_000]))
    return Case("slack", path, b"", ctype, draw(st.sampled_from(["valid", "none"])), "reject", huge=size,
                declared_length=lie, label="slack:huge")


def _deep(depth: int) -> bytes:
    return (b'{"type":"event_callback","event":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")


@st.composite
def webhook_case(draw: st.DrawFn) -> Case:
    mode = draw(st.sampled_from(["valid", "unsigned", "badsig", "malformed", "huge"]))
    event = {"type": "event", "id": "wevt_" + draw(st.text("abcdef0123", min_size=6, max_size=10)),
             "created_at": "2026-01-01T00:00:00Z",
             "data": {"type": draw(st.sampled_from(WEBHOOK_TYPES)), "id": draw(maybe(st.just("sesn_fuzz")))}}
    body = json.dumps(event).encode()
    if mode == "valid":
        return Case("webhook", "/webhooks/anthropic", body, label="webhook")
    if mode == "malformed":
        raw = draw(st.sampled_from([b"[1,2]", b'{"type": ', b"null", b"{}", b'{"data": 5}']) | st.binary(max_size=80)
                   | st.builds(lambda j: json.dumps(j).encode(), junk))
        return Case("webhook", "/webhooks/anthropic", raw, auth="valid", expect="reject", label="webhook:malformed")
    if mode == "huge":
        return Case("webhook", "/webhooks/anthropic", auth="valid", expect="reject", huge=2_000_000,
                    label="webhook:huge")
    return Case("webhook", "/webhooks/anthropic", body, auth="none" if mode == "unsigned" else "bad",
                expect="reject", label=f"webhook:{mode}")


@st.composite
def mcp_case(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from(["/mcp/knowledge_base", "/mcp/ticket_history"]))
    mode = draw(st.sampled_from(["valid", "valid", "noauth", "badauth", "malformed", "huge"]))
    method = draw(st.sampled_from(["tools/list", "tools/call", "initialize", "resources/list", "bogus"]))
    params: Any = {}
    if method == "tools/call":
        params = {"name": draw(st.sampled_from(["search_docs", "read_doc", "search_tickets", "nope"])),
                  "arguments": draw(maybe(st.fixed_dictionaries({"query": st.text(max_size=80), "id": short})))}
    rpc = {"jsonrpc": "2.0", "id": draw(st.integers(1, 10_000)), "method": method,
           "params": draw(maybe(st.just(params)))}
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}
    body = json.dumps(rpc).encode()
    auth: Auth = "valid"
    expect: Literal["reject", "accept"] = "accept"
    if mode == "noauth":
        auth, expect = "none", "reject"
    elif mode == "badauth":
        auth, expect = "bad", "reject"
    elif mode == "malformed":
        body = draw(st.sampled_from([b"[1,2]", b'{"jsonrpc": ', b"null", b"\xff"]) | st.binary(max_size=80))
    elif mode == "huge":
        return Case("mcp", path, auth="valid", expect="reject", huge=1_500_000, headers=headers, label="mcp:huge")
    return Case("mcp", path, body, "application/json", auth, expect, headers=headers, label=f"mcp:{mode}")


any_case = st.one_of(slack_case(), slack_case(), slack_case(), webhook_case(), mcp_case())


def generate(count: int, seed_value: int) -> list[Case]:
    """`count` cases, the same ones for the same seed (no example database, generation only)."""
    out: list[Case] = []

    @seed(seed_value)
    @settings(max_examples=count, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(any_case)
    def collect(case: Case) -> None:
        out.append(case)

    collect()
    round_ = 1
    while len(out) < count and round_ < 20:  # Hypothesis may stop short; top up from the next seed
        more = generate(count - len(out), seed_value + round_) if count - len(out) < count else []
        out.extend(more)
        round_ += 1
    return out[:count]
