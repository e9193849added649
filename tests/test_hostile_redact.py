"""Issue 16, finding 5: nothing credential-shaped reaches Slack, ticket titles or cost records."""

from __future__ import annotations

import json

import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.cost.ledger import _meta
from app.observability.scrub import REDACTED
from app.redact import redact
from app.runtime import make_slack_client
from app.sandbox.stack import Stack
from app.tickets.store import TicketStore

TOKENS = [
    "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
    "xoxp-1234-5678-abcdefABCDEF",
    "xapp-1-A0123-456-abcdef0123456789",
    "sk-ant-api03-AbCdEf_gh-IJKLmnop0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "gho_abcdefghijklmnopqrstuvwxyz0123",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
    "Bearer abcdef0123456789.xyz",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
]


@pytest.mark.parametrize("token", TOKENS)
def test_each_credential_shape_is_redacted_visibly(token: str) -> None:
    out = redact(f"my key is {token} thanks")
    assert token not in out and REDACTED in out
    assert out.startswith("my key is ") and out.endswith(" thanks")


def test_ordinary_text_is_left_alone() -> None:
    for text in ("the bearer of news", "AKIA is a word", "ghp_ short", "sk-ant", "use xoxb tokens carefully"):
        assert redact(text) == text


async def test_everything_posted_to_slack_is_redacted(stack: Stack) -> None:
    client = make_slack_client(stack.settings())
    leak = " ".join(TOKENS[:5])
    await client.chat_postMessage(
        channel="C0001", text=f"answer: {leak}",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": f"tool said {leak}"}}],
    )
    started = await client.chat_startStream(channel="C0001", thread_ts=(await client.chat_postMessage(
        channel="C0001", text="root"))["ts"], recipient_user_id="U0001", recipient_team_id="T0001")
    await client.chat_appendStream(channel="C0001", ts=started["ts"], markdown_text=f"streamed {TOKENS[3]}")
    sent = json.dumps([c.params for c in stack.slack.state.calls()])
    for token in TOKENS[:5]:
        assert token not in sent
    assert sent.count(REDACTED) >= 11
    assert stack.settings().slack_bot_token == SecretStr("xoxb-emulated-bot-token")  # auth still works


async def test_titles_and_cost_records_are_redacted(redis: aioredis.Redis) -> None:
    store = TicketStore(redis)
    ticket, _ = await store.open_ticket(team_id="T1", channel_id="C1", thread_ts="1.0", requester_id="U1",
                                        environment="internal", title=f"why does {TOKENS[0]} fail")
    stored = await store.get(ticket.id)
    assert stored is not None and TOKENS[0] not in stored.title and REDACTED in stored.title
    stored.title = f"agent set {TOKENS[3]}"  # update_ticket assigns the title
    assert REDACTED in stored.title
    assert TOKENS[3] not in _meta(stored, "m")["title"]
