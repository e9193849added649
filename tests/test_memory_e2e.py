"""Issue 19, memory: a fact one ticket writes is read by the next ticket of the same customer,
and by no other customer's ticket nor an internal one; the trace shows what each ticket read
and wrote, with the ticket that taught it. Slack and Managed Agents are the emulators, driven
through the real clients; Redis is real."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

from app.sandbox.stack import Stack
from app.sessions.memory import attached
from app.sessions.memory_history import ticket_memory
from app.tickets.model import TicketState
from app.trace.build import build_trace
from tests.conftest import ROOT
from tests.support import eventually

ACME, GLOBEX, INTERNAL = "C0ACME", "C0GLOBEX", "C0001"
FACT = "Acme signs in with Okta SSO"

SCENARIO = {"rules": [
    {"match": "(?i)remember", "steps": [
        {"memory": "write", "path": "/setup.md", "content": FACT},
        {"message": "Noted."},
    ]},
    {"match": "(?i)moved", "steps": [
        {"memory": "write", "path": "/setup.md", "content": "Acme moved to Azure AD"},
        {"message": "Updated."},
    ]},
    {"match": "(?i)recall", "steps": [
        {"memory": "read", "path": "/setup.md"},
        {"message": "From memory: {last_tool_result}"},
    ]},
]}


def memory_config(tmp_path: Path, **extra: Any) -> Path:
    data = yaml.safe_load((ROOT / "support-agent.yml").read_text())
    data["slack"]["staff"] = {"users": ["U0001"], "usergroups": []}
    data["customers"] = {"acme": {"name": "Acme Corp", "channels": [ACME]}}
    data["environments"]["customers"]["memory"] = {"product": {}, "customers": {}}
    data["environments"]["internal"]["memory"] = {"product": {}}
    for env, settings in extra.items():
        data["environments"][env]["memory"].update(settings)
    path = tmp_path / "support-agent.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def world(stack: Stack) -> None:
    st = stack.slack.state
    st.add_user("UACME", "ann", home_team="TACME")  # Slack Connect members of other organisations
    st.add_user("UGLOB", "gus", home_team="TGLOBEX")
    st.add_channel(ACME, "acme-help", members=["UACME", "U0001"], ext_shared=True)
    st.add_channel(GLOBEX, "globex-help", members=["UGLOB", "U0001"], ext_shared=True)
    stack.agents.set_scenario(SCENARIO)


def answer(stack: Stack, channel: str, ts: str) -> str | None:
    thread = [m for m in stack.slack.state.thread(channel, ts) if m.get("bot_id") and m.get("ts") != ts]
    if not thread or any((m.get("stream") or {}).get("state") == "streaming" for m in thread):
        return None
    return str(thread[-1].get("text", ""))


async def ask(stack: Stack, channel: str, user: str, text: str, expect: str) -> str:
    ts = await stack.slack.user_posts(channel, text, user=user)
    await eventually(lambda: (answer(stack, channel, ts) or "").startswith(expect), timeout=30)
    return ts


def session_stores(stack: Stack, session_id: str) -> dict[str, str]:
    snapshot = next(s for s in stack.agents.state.sessions_snapshot() if s["id"] == session_id)
    return {r["memory_store_id"]: r["access"] for r in snapshot["resources"] if r["type"] == "memory_store"}


async def test_a_customers_fact_reaches_only_that_customers_next_ticket(fresh_redis_url: str, tmp_path: Path) -> None:
    with Stack(fresh_redis_url, config_path=memory_config(tmp_path), data_dir=tmp_path) as stack:
        world(stack)
        app = stack.start_app()
        store = app.services.store

        def ticket(channel: str, ts: str) -> Any:
            return app.run_coroutine(store.by_thread("T0001", channel, ts))

        taught = await ask(stack, ACME, "UACME", "please remember our setup", "Noted.")
        recalled = await ask(stack, ACME, "UACME", "recall our setup", "From memory:")
        assert answer(stack, ACME, recalled) == f"From memory: {FACT}"
        other = await ask(stack, GLOBEX, "UGLOB", "recall our setup", "From memory:")
        internal = await ask(stack, INTERNAL, "U0001", "recall our setup", "From memory:")
        for channel, ts in ((GLOBEX, other), (INTERNAL, internal)):
            assert FACT not in (answer(stack, channel, ts) or "")
            assert answer(stack, channel, ts) == "From memory: File does not exist."

        t1, t2, g1, i1 = (ticket(ACME, taught), ticket(ACME, recalled), ticket(GLOBEX, other),
                          ticket(INTERNAL, internal))
        a1 = app.run_coroutine(attached(store.redis, t1.id))
        customer = next(a for a in a1 if a.kind == "customer")
        assert customer.key == "acme" and customer.access == "read_write"
        product = next(a for a in a1 if a.kind == "product")
        assert session_stores(stack, t1.session_id) == {customer.store_id: "read_write", product.store_id: "read_only"}
        assert session_stores(stack, t2.session_id) == session_stores(stack, t1.session_id)
        g_stores = app.run_coroutine(attached(store.redis, g1.id))
        assert [a.key for a in g_stores if a.kind == "customer"] == ["team-TGLOBEX"]  # its Slack Connect team
        assert customer.store_id not in session_stores(stack, g1.session_id)
        i_stores = session_stores(stack, i1.session_id)
        assert customer.store_id not in i_stores and list(i_stores.values()) == ["read_only"]  # product only
        assert product.store_id not in i_stores  # each environment has its own product store
        emulated = stack.agents.state
        names = {s["id"]: s["name"] for s in emulated.call(lambda: list(emulated.memory.stores.values()))}
        assert names[customer.store_id] == "customer Acme Corp"

        # What each ticket read and wrote, and who taught it.
        client = app.services.anthropic
        wrote = app.run_coroutine(ticket_memory(client, store, t1))
        assert [(w.path, w.operation, w.taught_by_ticket, w.current) for w in wrote.writes] == [
            ("/setup.md", "created", t1.ref, True)
        ]
        read = app.run_coroutine(ticket_memory(client, store, t2))
        assert [(r.path, r.taught_by_ticket, r.content) for r in read.reads] == [("/setup.md", t1.ref, FACT)]
        assert read.writes == []
        missed = app.run_coroutine(ticket_memory(client, store, g1))
        assert [(r.path, r.version_id) for r in missed.reads] == [("/setup.md", None)]

        trace = app.run_coroutine(build_trace(client, store, t2, app.services.scrubber))
        memory_entries = [e for e in trace.entries if e.kind == "memory"]
        assert [e.summary for e in memory_entries] == [
            f"memory read /setup.md in Acme Corp · taught by {t1.ref}"
        ]
        assert memory_entries[0].detail["taught_by_ticket_id"] == t1.id
        trace1 = app.run_coroutine(build_trace(client, store, t1, app.services.scrubber))
        assert [e.summary for e in trace1.entries if e.kind == "memory"] == [
            f"memory wrote (new) /setup.md in Acme Corp · taught by {t1.ref}"
        ]


async def test_retention_removes_what_an_expired_ticket_taught(fresh_redis_url: str, tmp_path: Path) -> None:
    path = memory_config(tmp_path, customers={"forget_with_retention": True})
    with Stack(fresh_redis_url, config_path=path, data_dir=tmp_path) as stack:
        world(stack)
        stack.agents.set_scenario({"rules": [
            {"match": "(?i)globex", "steps": [
                {"memory": "write", "path": "/setup.md", "content": "Globex uses SAML"}, {"message": "Noted."},
            ]},
            *SCENARIO["rules"],
        ]})
        app = stack.start_app()
        store = app.services.store
        taught = await ask(stack, ACME, "UACME", "please remember our setup", "Noted.")
        await ask(stack, GLOBEX, "UGLOB", "remember globex setup", "Noted.")
        ticket = app.run_coroutine(store.by_thread("T0001", ACME, taught))
        app.run_coroutine(store.transition(ticket, TicketState.RESOLVED, "test"))

        from app.retention import delete_expired

        outcomes = app.run_coroutine(delete_expired(app.services.anthropic, store, app.services.config,
                                                    now=time.time() + 31 * 86400))
        assert [(o.expired.ticket_id, o.result, o.detail) for o in outcomes] == [
            (ticket.id, "deleted", "1 memory versions redacted")
        ]
        emulated = stack.agents.state
        versions = emulated.call(lambda: {sid: [dict(v) for v in vs] for sid, vs in emulated.memory.versions.items()})
        texts = json.dumps(versions)
        assert FACT not in texts and "Globex uses SAML" in texts  # another customer's memory stays
        recalled = await ask(stack, ACME, "UACME", "recall our setup", "From memory:")
        assert answer(stack, ACME, recalled) == "From memory: File does not exist."
        # A second run finds nothing more to do.
        again = app.run_coroutine(delete_expired(app.services.anthropic, store, app.services.config,
                                                 now=time.time() + 31 * 86400))
        assert again == []


async def test_a_store_the_api_refuses_leaves_the_ticket_answered_without_memory(
    fresh_redis_url: str, tmp_path: Path
) -> None:
    with Stack(fresh_redis_url, config_path=memory_config(tmp_path), data_dir=tmp_path) as stack:
        world(stack)
        stack.agents.set_scenario({"rules": [{"match": None, "steps": [{"message": "Answered."}]}]})
        stack.agents.fail_next("POST", r"^/v1/memory_stores$", 400, count=1)
        app = stack.start_app()
        ts = await ask(stack, ACME, "UACME", "hello", "Answered.")
        ticket = app.run_coroutine(app.services.store.by_thread("T0001", ACME, ts))
        assert session_stores(stack, ticket.session_id) == {}
        assert app.run_coroutine(attached(app.services.redis, ticket.id)) == []
        # The next ticket gets its stores (nothing was remembered wrongly in between).
        ts = await ask(stack, ACME, "UACME", "hello again", "Answered.")
        ticket = app.run_coroutine(app.services.store.by_thread("T0001", ACME, ts))
        assert sorted(session_stores(stack, ticket.session_id).values()) == ["read_only", "read_write"]


async def test_internal_tickets_see_a_customers_memory_only_when_configured(
    fresh_redis_url: str, tmp_path: Path
) -> None:
    data = yaml.safe_load(memory_config(tmp_path).read_text())
    data["customers"]["acme"]["channels"].append("C0ACMEINT")  # staff's own channel about Acme
    data["environments"]["internal"]["memory"]["customers"] = {"access": "read_only"}
    path = tmp_path / "support-agent.yml"
    path.write_text(yaml.safe_dump(data))
    with Stack(fresh_redis_url, config_path=path, data_dir=tmp_path) as stack:
        world(stack)
        stack.slack.state.add_channel("C0ACMEINT", "acme-internal", members=["U0001"])
        app = stack.start_app()
        await ask(stack, ACME, "UACME", "please remember our setup", "Noted.")
        staff = await ask(stack, "C0ACMEINT", "U0001", "recall acme's setup", "From memory:")
        assert answer(stack, "C0ACMEINT", staff) == f"From memory: {FACT}"
        ticket = app.run_coroutine(app.services.store.by_thread("T0001", "C0ACMEINT", staff))
        assert ticket.environment == "internal"
        assert sorted(session_stores(stack, ticket.session_id).values()) == ["read_only", "read_only"]
        # Read-only for internal tickets: a write there is refused and the customer's memory stays.
        stack.agents.set_scenario([{"match": None, "steps": [
            {"memory": "write", "path": "/setup.md", "content": "overwritten by staff", "store": "customer Acme Corp"},
            {"message": "Tried: {last_tool_result}"},
        ]}])
        tried = await ask(stack, "C0ACMEINT", "U0001", "overwrite it", "Tried:")
        assert "read-only file system" in (answer(stack, "C0ACMEINT", tried) or "")
        stack.agents.set_scenario(SCENARIO)
        again = await ask(stack, ACME, "UACME", "recall our setup", "From memory:")
        assert answer(stack, ACME, again) == f"From memory: {FACT}"
        # An internal channel nobody mapped still gets no customer's memory.
        unmapped = await ask(stack, INTERNAL, "U0001", "recall acme's setup", "From memory:")
        assert answer(stack, INTERNAL, unmapped) == "From memory: File does not exist."
